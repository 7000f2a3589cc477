"""SB3 callbacks of the zoo: Esper metrics, and evaluations that survive a resume.

Simic's training is judged on more than return: `EsperMetricsCallback` reads each
finished episode's final info (for a VecEnv, `infos[i]` when `dones[i]`) and records
final accuracies, parameters added, lifecycle counters, mean reward terms and env
steps per second through SB3's logger, so they reach stdout, TensorBoard and W&B alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

from agents.zoo.algos import MASKABLE_ALGOS, RECURRENT_ALGOS
from agents.zoo.maskable_recurrent_ppo import CarriedLstmState
from esper_env.contracts import SeedStage

_T = TypeVar("_T")

#: Final-info counters averaged over the episodes that ended in a rollout.
EPISODE_KEYS = (
    "final_val_accuracy",
    "final_test_accuracy",
    "params_added",
    "added_param_fraction",
    "seeds_germinated",
    "seeds_fossilized",
    "seeds_pruned",
    "governor_rollbacks",
    "refused_actions",
)


class EsperMetricsCallback(BaseCallback):
    """Records Esper's episode metrics under `esper/` and env throughput under `time/`.

    After each rollout it logs the means over the episodes that ended in it:
    `esper/<key>` for every `EPISODE_KEYS` entry, `esper/return`,
    `esper/reward/<term>` (each Simic term summed over an episode), `esper/episodes`,
    and `time/env_steps_per_second` (collection only, without the update).

    Attributes:
        episodes: One record per finished episode: timestep, env index, return, the
            `EPISODE_KEYS` values, reward terms and lifecycle events.
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.episodes: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._running: list[dict[str, Any]] = []
        self._rollout_start = 0.0
        self._rollout_steps = 0

    def _on_training_start(self) -> None:
        self._running = [_fresh_episode() for _ in range(self.training_env.num_envs)]

    def _on_rollout_start(self) -> None:
        self._rollout_start = time.perf_counter()
        self._rollout_steps = self.num_timesteps

    def _on_step(self) -> bool:
        infos: list[dict[str, Any]] = self.locals["infos"]
        rewards = self.locals["rewards"]
        dones = self.locals["dones"]
        for index, info in enumerate(infos):
            running = self._running[index]
            running["return"] += float(rewards[index])
            for term, value in info["reward_terms"].items():
                running["reward_terms"][term] = running["reward_terms"].get(term, 0.0) + value
            transition = info["transition"]
            if transition is not None and transition["ok"]:
                running["lifecycle"].append(
                    {
                        "epoch": info["epoch"],
                        "slot": transition["slot"],
                        "op": transition["op"],
                        "to_stage": SeedStage(transition["to_stage"]).name,
                    }
                )
            if dones[index]:
                record = {
                    "timestep": self.num_timesteps,
                    "env_index": index,
                    **{key: info[key] for key in EPISODE_KEYS},
                    **running,
                }
                self.episodes.append(record)
                self._pending.append(record)
                self._running[index] = _fresh_episode()
        return True

    def _on_rollout_end(self) -> None:
        elapsed = time.perf_counter() - self._rollout_start
        steps = self.num_timesteps - self._rollout_steps
        if elapsed > 0:
            self.logger.record("time/env_steps_per_second", steps / elapsed)
        if not self._pending:
            return
        self.logger.record("esper/episodes", len(self.episodes))
        self.logger.record("esper/return", float(np.mean([e["return"] for e in self._pending])))
        for key in EPISODE_KEYS:
            self.logger.record(f"esper/{key}", float(np.mean([e[key] for e in self._pending])))
        terms = sorted({term for e in self._pending for term in e["reward_terms"]})
        for term in terms:
            values = [e["reward_terms"].get(term, 0.0) for e in self._pending]
            self.logger.record(f"esper/reward/{term}", float(np.mean(values)))
        self._pending = []


def _fresh_episode() -> dict[str, Any]:
    return {"return": 0.0, "reward_terms": {}, "lifecycle": []}


class _ResumableEvaluations:
    """Mixin for EvalCallbacks: a resumed run appends to its `evaluations.npz`, not over it."""

    log_path: str | None
    evaluations_timesteps: list[int]
    evaluations_results: list[list[float]]
    evaluations_length: list[list[int]]
    best_mean_reward: float

    def _init_callback(self) -> None:
        super()._init_callback()  # type: ignore[misc]
        if self.log_path is None:
            return
        path = Path(f"{self.log_path}.npz")
        if not path.exists():
            return
        data = np.load(path)
        self.evaluations_timesteps = [int(t) for t in data["timesteps"]]
        self.evaluations_results = [list(map(float, r)) for r in data["results"]]
        self.evaluations_length = [list(map(int, r)) for r in data["ep_lengths"]]
        if self.evaluations_results:
            self.best_mean_reward = max(float(np.mean(r)) for r in self.evaluations_results)


class ResumableEvalCallback(_ResumableEvaluations, EvalCallback):
    """SB3's EvalCallback that continues an existing `evaluations.npz`."""


class ResumableMaskableEvalCallback(_ResumableEvaluations, MaskableEvalCallback):
    """sb3-contrib's MaskableEvalCallback (evaluates with action masks) that continues one."""


class ResumableMaskableRecurrentEvalCallback(ResumableMaskableEvalCallback):
    """The masked evaluation for `MaskableRecurrentPPO`, with the LSTM state carried.

    sb3-contrib's masked `evaluate_policy` drops a recurrent model's state (see
    `CarriedLstmState`); during each evaluation the callback's model is that proxy.
    """

    def _on_step(self) -> bool:
        if self.eval_freq <= 0 or self.n_calls % self.eval_freq != 0:
            return super()._on_step()
        model = self.model
        self.model = CarriedLstmState(model)  # type: ignore[assignment]
        try:
            return super()._on_step()
        finally:
            self.model = model


def for_evaluation_of(algo: str, plain: _T, maskable: _T, maskable_recurrent: _T) -> _T:
    """Which of three evaluation classes evaluates `algo` as it acts (masks, LSTM state).

    SB3's own evaluation already carries a recurrent policy's state; masks need
    sb3-contrib's, and masks with a recurrent policy need Esper's.
    """
    if algo in MASKABLE_ALGOS and algo in RECURRENT_ALGOS:
        return maskable_recurrent
    if algo in MASKABLE_ALGOS:
        return maskable
    return plain


def eval_callback_class(algo: str) -> type[EvalCallback]:
    """The resumable evaluation callback that evaluates `algo` as it acts (masks, LSTM state)."""
    return for_evaluation_of(
        algo,
        ResumableEvalCallback,
        ResumableMaskableEvalCallback,
        ResumableMaskableRecurrentEvalCallback,
    )
