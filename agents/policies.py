"""Baselines and the heuristic Tamiyo: policies behind one small interface, `act(obs, info)`.

Every policy returns an action of the single-agent env's `MultiDiscrete([op, slot,
blueprint, blend_speed])` space. They read the observation through its documented
layout (`esper_env.observation.ObservationLayout`) and the exact legal (op, slot)
pairs from `info["op_slot_mask"]`, the same signals an RL agent gets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from esper_env.contracts import Op, SeedStage
from esper_env.observation import ObservationLayout


class Policy(Protocol):
    """A Tamiyo policy: one action per step, given the observation and the step's info."""

    def reset(self, seed: int | None = None) -> None:
        """Forgets per-episode state; `seed` fixes any randomness."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Returns `[op, slot, blueprint, blend_speed]`."""
        ...


def _action(op: Op, slot: int = 0, blueprint: int = 0, speed: int = 0) -> np.ndarray:
    return np.array([int(op), slot, blueprint, speed], dtype=np.int64)


class NoOp:
    """The baseline: the host alone, never a seed."""

    def reset(self, seed: int | None = None) -> None:
        """Nothing to forget."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Always WAIT."""
        return _action(Op.WAIT)


class RandomMasked:
    """Uniform over the legal (op, slot) pairs, with a uniform blueprint and blend speed.

    Args:
        n_blueprints: Size of the blueprint dimension.
        n_speeds: Size of the blend-speed dimension.
        seed: Seed of the policy's own generator.
    """

    def __init__(self, n_blueprints: int, n_speeds: int, seed: int | None = None) -> None:
        self.n_blueprints = n_blueprints
        self.n_speeds = n_speeds
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        """Reseeds the generator when `seed` is given."""
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Draws one legal pair, then a blueprint and a speed."""
        pairs = np.argwhere(info["op_slot_mask"])
        op, slot = pairs[self.rng.integers(len(pairs))]
        return _action(
            Op(int(op)),
            int(slot),
            int(self.rng.integers(self.n_blueprints)),
            int(self.rng.integers(self.n_speeds)),
        )


@dataclass
class FixedSchedule:
    """A scripted curriculum: germinate at set epochs, then advance every live seed on a timetable.

    Attributes:
        layout: Observation layout of the env.
        germinate_epochs: Epochs at which a seed is germinated in the first dormant slot.
        blueprint: Blueprint index germinated.
        speed: Blend-speed index.
    """

    layout: ObservationLayout
    germinate_epochs: tuple[int, ...] = (1,)
    blueprint: int = 0
    speed: int = 0

    def reset(self, seed: int | None = None) -> None:
        """The schedule has no state."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Germinates on schedule, else advances the first live seed, else waits."""
        stages = self.layout.slot_stages(obs)
        if info["epoch"] in self.germinate_epochs and SeedStage.DORMANT in stages:
            return _action(
                Op.GERMINATE, stages.index(SeedStage.DORMANT), self.blueprint, self.speed
            )
        for index, stage in enumerate(stages):
            if stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING):
                return _action(Op.ADVANCE, index)
            if stage is SeedStage.HOLDING:
                return _action(Op.FOSSILIZE, index)
        return _action(Op.WAIT)


@dataclass
class HeuristicTamiyo:
    """Germinate on a plateau, advance when the measurements say the seed helps, prune losers.

    Attributes:
        layout: Observation layout of the env.
        plateau_epochs: Epochs without a new best validation accuracy that count as a plateau.
        first_epoch: Earliest epoch at which to germinate even without a plateau.
        patience: Consecutive steps of harmful measurements before a seed is pruned.
        blueprint: Blueprint index to germinate.
        speed: Blend-speed index.
    """

    layout: ObservationLayout
    plateau_epochs: int = 2
    first_epoch: int = 1
    patience: int = 2
    blueprint: int = 0
    speed: int = 0
    _strikes: dict[int, int] = field(default_factory=dict)

    def reset(self, seed: int | None = None) -> None:
        """Forgets the strike counts."""
        self._strikes.clear()

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """One decision, in priority order: prune, fossilize, advance, germinate, wait."""
        legal = info["op_slot_mask"]
        stages = self.layout.slot_stages(obs)
        for index, stage in enumerate(stages):
            harmful = self._harmful(obs, index, stage)
            self._strikes[index] = self._strikes.get(index, 0) + 1 if harmful else 0
            if self._strikes[index] >= self.patience and legal[Op.PRUNE, index]:
                self._strikes[index] = 0
                return _action(Op.PRUNE, index)
        for index, stage in enumerate(stages):
            contribution = self.layout.slot_feature(obs, index, "contribution")
            if stage is SeedStage.HOLDING and contribution > 0 and legal[Op.FOSSILIZE, index]:
                return _action(Op.FOSSILIZE, index)
            if self._ready_to_advance(obs, index, stage) and legal[Op.ADVANCE, index]:
                return _action(Op.ADVANCE, index)
        live = any(
            s in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING) for s in stages
        )
        plateau = self.layout.global_feature(obs, "plateau") * self.layout.episode_epochs
        wants_seed = info["epoch"] >= self.first_epoch and (
            plateau >= self.plateau_epochs or info["epoch"] == self.first_epoch
        )
        dormant = np.flatnonzero(legal[Op.GERMINATE])
        if wants_seed and not live and dormant.size:
            return _action(Op.GERMINATE, int(dormant[0]), self.blueprint, self.speed)
        return _action(Op.WAIT)

    def _ready_to_advance(self, obs: np.ndarray, index: int, stage: SeedStage) -> bool:
        if stage is SeedStage.GERMINATED:
            return True
        if stage is SeedStage.TRAINING:
            return self.layout.slot_feature(obs, index, "seed_loss_trend") < 0
        if stage is SeedStage.BLENDING:
            return self.layout.slot_feature(obs, index, "alpha") >= 1.0
        return False

    def _harmful(self, obs: np.ndarray, index: int, stage: SeedStage) -> bool:
        if stage is SeedStage.TRAINING:
            return self.layout.slot_feature(obs, index, "seed_loss_trend") > 0
        if stage in (SeedStage.BLENDING, SeedStage.HOLDING):
            return self.layout.slot_feature(obs, index, "contribution") < 0
        return False


POLICY_NAMES = ("noop", "random", "fixed", "heuristic")

#: The blueprint the scripted policies grow when the env offers it.
DEFAULT_BLUEPRINT = "residual_block"


def make_policy(name: str, env: gym.Env, seed: int | None = None) -> Policy:
    """Builds a named baseline for an Esper env.

    Args:
        name: One of `POLICY_NAMES`.
        env: The env (wrapped or not) the policy will act in.
        seed: Seed of the policy's randomness, if it has any.

    Raises:
        ValueError: Unknown name.
    """
    layout: ObservationLayout = env.get_wrapper_attr("layout")
    if name == "noop":
        return NoOp()
    if name == "random":
        _, _, n_blueprints, n_speeds = (int(n) for n in env.action_space.nvec)
        return RandomMasked(n_blueprints, n_speeds, seed=seed)
    blueprint = (
        layout.blueprints.index(DEFAULT_BLUEPRINT) if DEFAULT_BLUEPRINT in layout.blueprints else 0
    )
    if name == "fixed":
        return FixedSchedule(layout, blueprint=blueprint)
    if name == "heuristic":
        return HeuristicTamiyo(layout, blueprint=blueprint)
    raise ValueError(
        f"unknown policy {name!r}; choose from {POLICY_NAMES} (or ppo:PATH in scripts)"
    )
