"""Kasmina's seed lifecycle: the one table of legal transitions and the alpha ramps.

Every stage change of a seed slot is an entry of `TRANSITIONS`, keyed by the
operation and the stage it starts from, and names the gate that guards it. The
gates' measured conditions live on `SeedSlot`, which owns the measured values.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from esper_env.contracts import BlendSchedule, LifecycleConfig, Op, SeedStage

#: The lifecycle settings used when a caller passes none.
DEFAULT_LIFECYCLE = LifecycleConfig()


class Transition(NamedTuple):
    """One legal stage change: where it leads and which gate guards it."""

    to_stage: SeedStage
    gate: str


#: Gate of the transitions that have no measured condition (prune, automatic steps).
UNGATED = "lifecycle"

_LIVE = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING)

#: Every legal transition, keyed by (operation, from stage). Anything else is refused.
#: "embargo", "expire" and "settle" are the automatic steps of `SeedSlot.end_epoch`.
TRANSITIONS: dict[tuple[str, SeedStage], Transition] = {
    ("germinate", SeedStage.DORMANT): Transition(SeedStage.GERMINATED, "G0"),
    ("advance", SeedStage.GERMINATED): Transition(SeedStage.TRAINING, "G1"),
    ("advance", SeedStage.TRAINING): Transition(SeedStage.BLENDING, "G2"),
    ("advance", SeedStage.BLENDING): Transition(SeedStage.HOLDING, "G3"),
    ("advance", SeedStage.HOLDING): Transition(SeedStage.FOSSILIZED, "G4"),
    ("fossilize", SeedStage.HOLDING): Transition(SeedStage.FOSSILIZED, "G4"),
    **{("prune", stage): Transition(SeedStage.PRUNED, UNGATED) for stage in _LIVE},
    ("remove", SeedStage.FOSSILIZED): Transition(SeedStage.PRUNED, "G5"),
    ("embargo", SeedStage.PRUNED): Transition(SeedStage.EMBARGOED, UNGATED),
    ("expire", SeedStage.EMBARGOED): Transition(SeedStage.RESETTING, "embargo"),
    ("settle", SeedStage.RESETTING): Transition(SeedStage.DORMANT, UNGATED),
}

#: Operations a caller may request; the others are automatic.
REQUESTED_OPS = ("germinate", "advance", "fossilize", "prune", "remove")

_OP_OF_NAME = {
    "germinate": Op.GERMINATE,
    "advance": Op.ADVANCE,
    "prune": Op.PRUNE,
    "fossilize": Op.FOSSILIZE,
}

#: Tamiyo's operations that the table allows from each stage (WAIT is always allowed).
ALLOWED_OPS: dict[SeedStage, frozenset[Op]] = {
    stage: frozenset(
        {Op.WAIT} | {op for name, op in _OP_OF_NAME.items() if (name, stage) in TRANSITIONS}
    )
    for stage in SeedStage
}

#: Stages whose seed runs on detached host activations at alpha 0 (gradient isolation).
ISOLATED_STAGES = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING})

#: Stages that hold a seed module (live or fossilized).
SEEDED_STAGES = frozenset(_LIVE) | {SeedStage.FOSSILIZED}


def improves(improvement: float, se: float, config: LifecycleConfig) -> tuple[bool, float]:
    """G2's rule: the upper confidence bound of the val loss change must be below the bar.

    The bound is the change at alpha 1 plus `significance` standard errors; the bar
    is `-min_improvement`.

    Returns:
        Whether the rule holds, and the bound it compared.
    """
    bound = improvement + config.significance * se
    return bound < -config.min_improvement, bound


def contributes(contribution: float, se: float, config: LifecycleConfig) -> tuple[bool, float]:
    """G4's rule (G5 negates it): the contribution's lower confidence bound must clear the bar.

    The bound is the contribution minus `fossilize_significance` standard errors; the
    bar is `min_contribution`.

    Returns:
        Whether the rule holds, and the bound it compared.
    """
    bound = contribution - config.fossilize_significance * se
    return bound > config.min_contribution, bound


# Steepness of the sigmoid ramp; rescaled below so the ramp is exactly 0 and 1 at its ends.
_SIGMOID_STEEPNESS = 10.0


def blend_alpha(schedule: BlendSchedule, progress: float) -> float:
    """Alpha of the BLENDING ramp after `progress` (0..1, clipped) of it.

    Args:
        schedule: The ramp's shape.
        progress: Fraction of the ramp done.

    Returns:
        Alpha in [0, 1], exactly 0 at progress 0 and exactly 1 at progress 1.
    """
    t = min(max(progress, 0.0), 1.0)
    if t >= 1.0:
        return 1.0
    if schedule is BlendSchedule.LINEAR:
        return t
    if schedule is BlendSchedule.COSINE:
        return 0.5 * (1.0 - math.cos(math.pi * t))

    def logistic(u: float) -> float:
        return 1.0 / (1.0 + math.exp(-_SIGMOID_STEEPNESS * (u - 0.5)))

    low, high = logistic(0.0), logistic(1.0)
    return (logistic(t) - low) / (high - low)
