"""A saved SB3 agent behind the `Policy` interface, so it runs wherever the baselines do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from agents.zoo.algos import MASKABLE_ALGOS, RECURRENT_ALGOS, algo_class
from agents.zoo.safe_load import load_model
from esper_env.envs.presets import ENV_SEMANTICS_VERSION


def stamp_semantics(model: BaseAlgorithm) -> None:
    """Records the env semantics version on a model; SB3 saves it with the model's data."""
    model.env_semantics_version = ENV_SEMANTICS_VERSION  # type: ignore[attr-defined]


def check_semantics(model: BaseAlgorithm, path: str | Path) -> None:
    """Refuses a saved agent trained on other env semantics than this Esper's.

    Raises:
        ValueError: The model records another version, or none (saved before versions).
    """
    version = getattr(model, "env_semantics_version", None)
    if version != ENV_SEMANTICS_VERSION:
        raise ValueError(
            f"{path} was trained on Esper env semantics version {version or '1 (unrecorded)'}, "
            f"this Esper runs version {ENV_SEMANTICS_VERSION}: what it learnt no longer "
            "applies; retrain it with scripts/train_agent.py"
        )


class SB3Policy:
    """Adapts an SB3 model to `Policy`: `act(obs, info)` and `reset(seed)`.

    A recurrent model carries its LSTM state and `episode_start` across steps and
    forgets them on `reset`; a maskable model is given `info["action_mask"]`.

    Args:
        model: The trained model.
        algo: Its `--algo` name (decides how it is called).
        deterministic: Greedy actions instead of sampled ones.
    """

    def __init__(self, model: BaseAlgorithm, algo: str, *, deterministic: bool = True) -> None:
        algo_class(algo)  # validates the name
        self.model = model
        self.algo = algo
        self.deterministic = deterministic
        self._state: tuple[np.ndarray, ...] | None = None
        self._episode_start = np.ones((1,), dtype=bool)

    def reset(self, seed: int | None = None) -> None:
        """Starts a new episode; `seed` fixes the sampling of a stochastic policy."""
        self._state = None
        self._episode_start = np.ones((1,), dtype=bool)
        if seed is not None and not self.deterministic:
            self.model.set_random_seed(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """Returns the model's `[op, slot, blueprint, blend_speed]` for this observation."""
        if self.algo in RECURRENT_ALGOS:
            action, self._state = self.model.predict(
                obs,
                state=self._state,
                episode_start=self._episode_start,
                deterministic=self.deterministic,
            )
            self._episode_start = np.zeros((1,), dtype=bool)
        elif self.algo in MASKABLE_ALGOS:
            action, _ = self.model.predict(  # type: ignore[call-arg]
                obs, action_masks=info["action_mask"], deterministic=self.deterministic
            )
        else:
            action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(action, dtype=np.int64)


def load_sb3_policy(
    algo: str,
    path: str | Path,
    env: gym.Env | None = None,
    *,
    device: str = "cpu",
    deterministic: bool = True,
    trust: bool = False,
) -> SB3Policy:
    """Loads a saved agent (`.zip`) as a `Policy`, without running code from the file.

    The file is untrusted input: `agents.zoo.safe_load.load_model` rebuilds everything
    SB3 stores as a pickle, and refuses what it cannot rebuild, unless `trust`.

    Args:
        algo: `--algo` name it was trained with.
        path: The saved model.
        env: The env it will act in (its spaces are used and checked against the file's);
            without one, the spaces are rebuilt from the file's description of them.
        device: Torch device of the policy network.
        deterministic: Greedy actions instead of sampled ones.
        trust: Unpickle the file's entries as SB3 does: runs code from the file.

    Raises:
        ValueError: Unknown algo, an agent of other env semantics, or of other spaces
            than `env`'s.
        UntrustedAgentError: The file needs unpickling (the message names the entries)
            and `trust` is off.
        FileNotFoundError: No file at `path`.
    """
    model = load_model(algo, path, env, device=device, trust=trust, attach_env=False)
    check_semantics(model, path)
    return SB3Policy(model, algo, deterministic=deterministic)
