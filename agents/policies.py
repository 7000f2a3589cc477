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

from esper_env.contracts import ACTIVE_STAGES, LifecycleConfig, Op, SeedStage
from esper_env.kasmina.lifecycle import DEFAULT_LIFECYCLE, contributes, improves
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


def _note_budget_refusal(
    layout: ObservationLayout, info: dict[str, Any], no_room: set[int]
) -> None:
    """Adds the slot of a germination the parameter budget just refused to `no_room`."""
    transition = info.get("transition")
    if transition and transition["op"] == "germinate" and transition["gate"] == "budget":
        no_room.add(layout.slots.index(transition["slot"]))


def _live_order(stages: list[SeedStage], turn: int) -> list[int]:
    """Slots holding a live seed, in slot order rotated to start at `turn`."""
    live = [i for i, stage in enumerate(stages) if stage in ACTIVE_STAGES]
    return sorted(live, key=lambda i: (i - turn) % len(stages))


@dataclass
class FixedSchedule:
    """A scripted curriculum: germinate on a timetable, push every seed along, blindly.

    Seeds go into the deepest dormant slot first (skipping, for the episode, a slot
    whose germination the parameter budget refused); each step advances (or
    fossilizes) the next live seed in turn, whatever its measurements say.

    Attributes:
        layout: Observation layout of the env.
        germinate_epochs: Epochs at which a seed is germinated in the deepest dormant slot.
        blueprint: Blueprint index germinated.
        speed: Blend-speed index.
    """

    layout: ObservationLayout
    germinate_epochs: tuple[int, ...] = (0, 1, 2)
    blueprint: int = 0
    speed: int = 0
    _turn: int = 0
    _no_room: set[int] = field(default_factory=set)

    def reset(self, seed: int | None = None) -> None:
        """Restarts the turn order."""
        self._turn = 0
        self._no_room.clear()

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Germinates on schedule, else advances (or fossilizes) the next live seed in turn."""
        _note_budget_refusal(self.layout, info, self._no_room)
        stages = self.layout.slot_stages(obs)
        dormant = [
            i
            for i, stage in enumerate(stages)
            if stage is SeedStage.DORMANT and i not in self._no_room
        ]
        if info["epoch"] in self.germinate_epochs and dormant:
            return _action(Op.GERMINATE, dormant[-1], self.blueprint, self.speed)
        for index in _live_order(stages, self._turn):
            self._turn = index + 1
            op = Op.FOSSILIZE if stages[index] is SeedStage.HOLDING else Op.ADVANCE
            return _action(op, index)
        return _action(Op.WAIT)


@dataclass
class HeuristicTamiyo:
    """Grow early, deepest slot first; advance seeds that pass the gates; prune losers.

    A slot whose germination the parameter budget refused is skipped for the episode.

    It applies the gates' own rules (`improves`, `contributes`) to the signals they use
    (`improvement` and `contribution` with their standard errors), so it asks for a
    transition only when the gate will grant it.

    Attributes:
        layout: Observation layout of the env.
        lifecycle: The env's gate thresholds and significances.
        first_epoch: Earliest epoch at which to germinate.
        patience: Consecutive failing measurements before a seed is pruned.
        blueprint: Blueprint index to germinate.
        speed: Blend-speed index.
    """

    layout: ObservationLayout
    lifecycle: LifecycleConfig = DEFAULT_LIFECYCLE
    first_epoch: int = 0
    patience: int = 3
    blueprint: int = 0
    speed: int = 0
    _strikes: dict[int, int] = field(default_factory=dict)
    _no_room: set[int] = field(default_factory=set)

    def reset(self, seed: int | None = None) -> None:
        """Forgets the strike counts and the slots without room."""
        self._strikes.clear()
        self._no_room.clear()

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """One decision, in priority order: prune, fossilize/advance, germinate, wait."""
        _note_budget_refusal(self.layout, info, self._no_room)
        legal = info["op_slot_mask"]
        stages = self.layout.slot_stages(obs)
        for index, stage in enumerate(stages):
            failing = self._failing(obs, index, stage)
            self._strikes[index] = self._strikes.get(index, 0) + 1 if failing else 0
            if self._strikes[index] >= self.patience and legal[Op.PRUNE, index]:
                self._strikes[index] = 0
                return _action(Op.PRUNE, index)
        for index, stage in enumerate(stages):
            if stage is SeedStage.HOLDING and self._earns(obs, index):
                if legal[Op.FOSSILIZE, index]:
                    return _action(Op.FOSSILIZE, index)
            elif self._ready_to_advance(obs, index, stage) and legal[Op.ADVANCE, index]:
                return _action(Op.ADVANCE, index)
        germinating = SeedStage.GERMINATED in stages
        dormant = [i for i in np.flatnonzero(legal[Op.GERMINATE]) if i not in self._no_room]
        if info["epoch"] >= self.first_epoch and not germinating and dormant:
            return _action(Op.GERMINATE, int(dormant[-1]), self.blueprint, self.speed)
        return _action(Op.WAIT)

    def _feature(self, obs: np.ndarray, index: int, name: str) -> float:
        return self.layout.slot_feature(obs, index, name)

    def _helps(self, obs: np.ndarray, index: int) -> bool:
        """G2's rule on the observed improvement."""
        se = self._feature(obs, index, "improvement_se")
        return improves(self._feature(obs, index, "improvement"), se, self.lifecycle)[0]

    def _earns(self, obs: np.ndarray, index: int) -> bool:
        """G4's rule on the observed contribution."""
        se = self._feature(obs, index, "contribution_se")
        return contributes(self._feature(obs, index, "contribution"), se, self.lifecycle)[0]

    def _ready_to_advance(self, obs: np.ndarray, index: int, stage: SeedStage) -> bool:
        if stage is SeedStage.GERMINATED:
            return True
        if stage is SeedStage.TRAINING:
            return self._helps(obs, index)
        if stage is SeedStage.BLENDING:
            return self._feature(obs, index, "alpha") >= 1.0
        return False

    def _failing(self, obs: np.ndarray, index: int, stage: SeedStage) -> bool:
        if stage is SeedStage.TRAINING:
            trained = self._feature(obs, index, "epochs_in_stage") * self.layout.episode_epochs
            return trained >= 1 and not self._helps(obs, index)
        if stage in (SeedStage.BLENDING, SeedStage.HOLDING):
            se = self._feature(obs, index, "contribution_se")
            return self._feature(obs, index, "contribution") < -self.lifecycle.significance * se
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
        lifecycle = env.get_wrapper_attr("config").lifecycle
        return HeuristicTamiyo(layout, lifecycle=lifecycle, blueprint=blueprint)
    raise ValueError(
        f"unknown policy {name!r}; choose from {POLICY_NAMES} (or ppo:PATH in scripts)"
    )
