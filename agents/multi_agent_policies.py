"""Heuristic Emrakul and Karn, a pool-aware Tamiyo, and whole episodes of the three together.

Every policy has the single-agent `act(obs, info)` interface, where `obs` is the
agent's observation vector (`obs[agent]["observation"]` of the multi-agent env)
and `info` its info; they read features by name
(`EsperMultiAgentEnv.observation_names`) and the exact legal pairs from the info,
the same signals an RL agent gets. Op 0 is WAIT for all three agents.

- `HeuristicEmrakul`: probes each fossilized seed, sedates one whose probed worth
  is near zero, and after watching it sedated lyses it if validation accuracy
  held, else wakes it.
- `HeuristicKarn`: mutates the pool blueprint whose seeds reached the best
  contribution this episode, every few epochs while Karn places are left.
- `PoolTamiyo`: `HeuristicTamiyo` that germinates Karn's newest design once
  there is one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from agents.policies import DEFAULT_BLUEPRINT, HeuristicTamiyo, Policy
from esper_env.contracts import Op, SeedStage, StrictModel
from esper_env.envs.multi_agent import AGENTS, DesignOp, EsperMultiAgentEnv, MaintenanceOp


class WaitPolicy:
    """Always WAIT (op 0) for an action of `size` entries.

    Args:
        size: Number of entries in the agent's action.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def reset(self, seed: int | None = None) -> None:
        """Nothing to forget."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Returns all zeros: WAIT."""
        return np.zeros(self.size, dtype=np.int64)


def _index(names: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(names)}


@dataclass
class HeuristicEmrakul:
    """Sedate a fossilized seed whose probed worth is near zero; lyse it if accuracy holds.

    One operation per step, in priority order: decide on a seed sedated for
    `watch_epochs` (LYSE when validation accuracy is at least its value at
    sedation minus `accuracy_tolerance`, else WAKE); SEDATE an awake seed whose
    probe is at most `worth_threshold`; PROBE a seed never probed, or probed
    `reprobe_epochs` ago.

    Attributes:
        names: Emrakul's observation names (`env.observation_names("emrakul")`).
        slots: Slot names, in action order.
        episode_epochs: Episode length (the observation's time scale).
        worth_threshold: Probed worth (accuracy, 0..1) at or below which a seed is idle.
        accuracy_tolerance: Drop in validation accuracy tolerated while a seed is sedated.
        watch_epochs: Epochs a seed stays sedated before the decision.
        reprobe_epochs: Epochs after which an awake seed is probed again.
    """

    names: list[str]
    slots: tuple[str, ...]
    episode_epochs: int
    worth_threshold: float = 0.005
    accuracy_tolerance: float = 0.005
    watch_epochs: int = 1
    reprobe_epochs: int = 3
    _sedated_at: dict[int, tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._at = _index(self.names)

    def reset(self, seed: int | None = None) -> None:
        """Forgets the sedation records."""
        self._sedated_at.clear()

    def _feature(self, obs: np.ndarray, slot: int, name: str) -> float:
        return float(obs[self._at[f"{self.slots[slot]}.{name}"]])

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """One maintenance decision: lyse or wake, sedate, probe, or wait."""
        legal = info["op_slot_mask"]
        epoch, accuracy = info["epoch"], info["val_accuracy"]
        fossil = f"stage_{SeedStage.FOSSILIZED.name.lower()}"
        for i in range(len(self.slots)):
            if not self._feature(obs, i, "sedated"):
                self._sedated_at.pop(i, None)
                continue
            since, before = self._sedated_at.setdefault(i, (epoch, accuracy))
            if epoch - since < self.watch_epochs:
                continue
            held = accuracy >= before - self.accuracy_tolerance
            op = MaintenanceOp.LYSE if held else MaintenanceOp.WAKE
            if legal[op, i]:
                return np.array([int(op), i], dtype=np.int64)
        for i in range(len(self.slots)):
            if not self._feature(obs, i, fossil) or self._feature(obs, i, "sedated"):
                continue
            probed = self._feature(obs, i, "probed")
            worth = self._feature(obs, i, "probed_worth")
            if probed and worth <= self.worth_threshold and legal[MaintenanceOp.SEDATE, i]:
                self._sedated_at[i] = (epoch, accuracy)
                return np.array([int(MaintenanceOp.SEDATE), i], dtype=np.int64)
            stale = self._feature(obs, i, "since_probe") * self.episode_epochs
            if (not probed or stale >= self.reprobe_epochs) and legal[MaintenanceOp.PROBE, i]:
                return np.array([int(MaintenanceOp.PROBE), i], dtype=np.int64)
        return np.zeros(2, dtype=np.int64)


@dataclass
class HeuristicKarn:
    """Mutate the blueprint whose seeds reached the best contribution, every few epochs.

    Attributes:
        names: Karn's observation names (`env.observation_names("karn")`).
        places: Pool place names, in action order.
        every: Epochs between proposals.
        first_epoch: Earliest epoch of a proposal.
        seed: Seed of the choice among the parent's valid mutations.
    """

    names: list[str]
    places: tuple[str, ...]
    every: int = 2
    first_epoch: int = 1
    seed: int | None = None
    _last: int | None = None
    _rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def reset(self, seed: int | None = None) -> None:
        """Forgets the last proposal; reseeds the generator."""
        self._last = None
        self._rng = np.random.default_rng(self.seed if seed is None else seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Proposes a mutant of the best-contributing blueprint, or waits."""
        index = _index(self.names)
        epoch = info["epoch"]
        wait = np.zeros(3, dtype=np.int64)
        if not info["action_mask"][DesignOp.PROPOSE] or epoch < self.first_epoch:
            return wait
        if self._last is not None and epoch - self._last < self.every:
            return wait
        pairs = info["parent_mutation_mask"]
        best = np.array([obs[index[f"{p}.best_contribution"]] for p in self.places])
        candidates = np.flatnonzero(pairs.any(axis=1) & (best > 0))
        if candidates.size == 0:
            return wait
        parent = int(candidates[np.argmax(best[candidates])])
        mutation = int(self._rng.choice(np.flatnonzero(pairs[parent])))
        self._last = epoch
        return np.array([int(DesignOp.PROPOSE), parent, mutation], dtype=np.int64)


@dataclass
class PoolTamiyo(HeuristicTamiyo):
    """`HeuristicTamiyo` that grows Karn's newest design, once the pool holds one.

    Attributes:
        n_builtin: Configured blueprints at the head of the pool (Karn's places follow).
    """

    n_builtin: int = 0

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The heuristic's action, with GERMINATE pointed at Karn's newest design if any."""
        action = HeuristicTamiyo.act(self, obs, info)
        if action[0] == Op.GERMINATE:
            start = len(Op) + len(self.layout.slots)
            filled = np.flatnonzero(
                info["action_mask"][start : start + len(self.layout.blueprints)]
            )
            if filled.size and filled[-1] >= self.n_builtin:
                action[2] = int(filled[-1])
        return action


def _default_blueprint(env: EsperMultiAgentEnv) -> int:
    names = env.config.blueprints
    return names.index(DEFAULT_BLUEPRINT) if DEFAULT_BLUEPRINT in names else 0


def heuristic_team(
    env: EsperMultiAgentEnv,
    *,
    seed: int | None = None,
    emrakul: Mapping[str, float] | None = None,
) -> dict[str, Policy]:
    """The three heuristics for `env`: PoolTamiyo, HeuristicEmrakul, HeuristicKarn.

    Args:
        env: The multi-agent env.
        seed: Seed of Karn's choices.
        emrakul: Overrides of `HeuristicEmrakul`'s thresholds, e.g. {"worth_threshold": 0.01}.
    """
    return {
        "tamiyo": PoolTamiyo(
            env.layout, blueprint=_default_blueprint(env), n_builtin=env.n_builtin
        ),
        "emrakul": HeuristicEmrakul(
            env.observation_names("emrakul"),
            env.world.slot_names,
            env.config.episode_epochs,
            **dict(emrakul or {}),
        ),
        "karn": HeuristicKarn(env.observation_names("karn"), env.place_names, seed=seed),
    }


def tamiyo_alone(env: EsperMultiAgentEnv) -> dict[str, Policy]:
    """HeuristicTamiyo with Emrakul and Karn always waiting (the single-agent baseline)."""
    return {
        "tamiyo": HeuristicTamiyo(env.layout, blueprint=_default_blueprint(env)),
        "emrakul": WaitPolicy(len(env.action_space("emrakul").nvec)),
        "karn": WaitPolicy(len(env.action_space("karn").nvec)),
    }


class TeamEpisodeResult(StrictModel):
    """One multi-agent episode.

    Attributes:
        team: Name of the policy set.
        seed: The `reset` seed.
        final_test_accuracy: Test accuracy at episode end.
        final_val_accuracy: Validation accuracy at episode end.
        params: Parameters of the host at the end (bare host, fossilized and live seeds).
        params_added: Parameters added by seeds over the bare host.
        returns: Sum of rewards per agent.
        steps: Environment steps.
        seeds_germinated: Seeds germinated.
        seeds_fossilized: Seeds fossilized.
        seeds_pruned: Seeds pruned or lysed.
        seeds_lysed: Fossilized seeds Emrakul removed.
        designs_accepted: Karn's designs placed in the pool.
        designs_rejected: Karn's designs rejected by evaluation (or duplicates).
        karn_seeds: Seeds germinated from Karn's designs.
        wall_seconds: Wall time of the episode.
        events: Successful operations, as "epoch agent op slot-or-design".
    """

    team: str
    seed: int
    final_test_accuracy: float
    final_val_accuracy: float
    params: int
    params_added: int
    returns: dict[str, float]
    steps: int
    seeds_germinated: int
    seeds_fossilized: int
    seeds_pruned: int
    seeds_lysed: int
    designs_accepted: int
    designs_rejected: int
    karn_seeds: int
    wall_seconds: float
    events: list[str] = Field(default_factory=list)


def run_team_episode(
    env: EsperMultiAgentEnv, policies: Mapping[str, Policy], *, seed: int, team: str
) -> TeamEpisodeResult:
    """Runs one episode with one policy per agent and records it.

    Args:
        env: The multi-agent env.
        policies: A policy for each of `AGENTS`; each is reset with `seed`.
        seed: Seed of `env.reset` and of the policies.
        team: Name recorded in the result.
    """
    start = time.perf_counter()
    for policy in policies.values():
        policy.reset(seed)
    obs, infos = env.reset(seed=seed)
    returns = dict.fromkeys(AGENTS, 0.0)
    events: list[str] = []
    counts = {"lysed": 0, "accepted": 0, "rejected": 0, "karn_seeds": 0}
    steps = 0
    while env.agents:
        actions = {a: policies[a].act(obs[a]["observation"], infos[a]) for a in env.agents}
        obs, rewards, _, _, infos = env.step(actions)
        steps += 1
        for agent in AGENTS:
            returns[agent] += rewards[agent]
            move = infos[agent]["transition"]
            if move is not None and move["ok"]:
                target = move.get("slot") or move.get("parent")
                events.append(f"{infos[agent]['epoch']} {agent} {move['op']} {target}")
                if agent == "emrakul" and move["op"] == "remove":
                    counts["lysed"] += 1
                if agent == "tamiyo" and move["op"] == "germinate":
                    chosen = int(actions["tamiyo"][2])
                    counts["karn_seeds"] += int(chosen >= env.n_builtin)
        design = infos["karn"]["design"]
        if design is not None:
            counts["accepted" if design["accepted"] else "rejected"] += 1
    info = infos["tamiyo"]
    return TeamEpisodeResult(
        team=team,
        seed=seed,
        final_test_accuracy=info["final_test_accuracy"],
        final_val_accuracy=info["final_val_accuracy"],
        params=env.world.base_params + info["params_added"],
        params_added=info["params_added"],
        returns=returns,
        steps=steps,
        seeds_germinated=info["seeds_germinated"],
        seeds_fossilized=info["seeds_fossilized"],
        seeds_pruned=info["seeds_pruned"],
        seeds_lysed=counts["lysed"],
        designs_accepted=counts["accepted"],
        designs_rejected=counts["rejected"],
        karn_seeds=counts["karn_seeds"],
        wall_seconds=time.perf_counter() - start,
        events=events,
    )
