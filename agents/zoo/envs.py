"""Vectorised Esper envs for SB3: Monitor-wrapped, seeded, in subprocesses when there are several.

Autoreset: SB3's VecEnvs reset an env as soon as it finishes; the step's `infos[i]`
is the finished episode's final info (with `final_test_accuracy`, the counters and
`reward_terms`) and its last observation is `infos[i]["terminal_observation"]`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

#: Final-info keys that `Monitor` writes per episode beside return and length.
MONITOR_KEYS = (
    "final_val_accuracy",
    "final_test_accuracy",
    "params_added",
    "seeds_germinated",
    "seeds_fossilized",
    "seeds_pruned",
    "governor_rollbacks",
    "refused_actions",
)


def make_esper_env(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    """Makes a registered Esper env.

    The `esper_env:` prefix makes Gymnasium import (and so register) the package,
    which a freshly spawned worker process has not done yet.
    """
    return gym.make(f"esper_env:{env_id}", **env_kwargs)


def _factory(
    env_id: str,
    env_kwargs: dict[str, Any],
    monitor_file: Path | None,
    resume: bool,
    n_envs: int,
) -> Callable[[], gym.Env]:
    in_subprocess = n_envs > 1

    def make() -> gym.Env:
        if in_subprocess:
            # Runs in the worker process: its host training gets its share of the cores,
            # and Ctrl-C reaches only the trainer, which saves the model and closes the workers.
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_envs))
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        env = make_esper_env(env_id, env_kwargs)
        filename = None if monitor_file is None else str(monitor_file)
        return Monitor(env, filename, info_keywords=MONITOR_KEYS, override_existing=not resume)

    return make


def make_vec_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    *,
    n_envs: int,
    seed: int,
    monitor_dir: Path | None,
    resume: bool = False,
) -> VecEnv:
    """Builds `n_envs` Monitor-wrapped envs: a SubprocVecEnv when `n_envs > 1`, else a DummyVecEnv.

    Args:
        env_id: Registered Esper id.
        env_kwargs: `gym.make` keyword arguments.
        n_envs: Number of envs.
        seed: Env `i` is reset with `seed + i` first.
        monitor_dir: Folder of the `{i}.monitor.csv` files (None: no files).
        resume: Append to existing monitor files instead of overwriting them.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if monitor_dir is not None:
        monitor_dir.mkdir(parents=True, exist_ok=True)
    fns = [
        _factory(
            env_id,
            env_kwargs,
            None if monitor_dir is None else monitor_dir / str(rank),
            resume,
            n_envs,
        )
        for rank in range(n_envs)
    ]
    # "fork" would copy torch's thread pool mid-use and can deadlock the workers.
    vec_env: VecEnv = (
        SubprocVecEnv(fns, start_method="forkserver") if n_envs > 1 else DummyVecEnv(fns)
    )
    vec_env.seed(seed)
    return vec_env
