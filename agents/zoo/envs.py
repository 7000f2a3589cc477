"""Vectorised Esper envs for SB3: Monitor-wrapped, seeded, in subprocesses when there are several.

With `telemetry_dir` in the env kwargs, env `i` writes its own event file,
`events.<i>.jsonl` (`esper_env.telemetry.read_events` merges them).

Autoreset: SB3's VecEnvs reset an env as soon as it finishes; the step's `infos[i]`
is the finished episode's final info (with `final_test_accuracy`, the counters and
`reward_terms`) and its last observation is `infos[i]["terminal_observation"]`.
"""

from __future__ import annotations

import importlib
import os
import re
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from esper_env.contracts import TELEMETRY_NAME_PATTERN

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


VecEnvKind = Literal["dummy", "subproc"]

Wrapper = Callable[[gym.Env], gym.Env]


def _factory(
    env_id: str,
    env_kwargs: dict[str, Any],
    monitor_file: Path | None,
    resume: bool,
    worker_threads: int | None,
    wrappers: tuple[Wrapper, ...],
    gym_packages: tuple[str, ...],
) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        for module in gym_packages:  # a spawned worker registers the user's ids too
            importlib.import_module(module)
        if worker_threads is not None:
            # Runs in the worker process: its host training gets its share of the cores,
            # and Ctrl-C reaches only the trainer, which saves the model and closes the workers.
            torch.set_num_threads(worker_threads)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        env = make_esper_env(env_id, env_kwargs)
        filename = None if monitor_file is None else str(monitor_file)
        env = Monitor(env, filename, info_keywords=MONITOR_KEYS, override_existing=not resume)
        for wrapper in wrappers:
            env = wrapper(env)
        return env

    return make


def make_vec_env(
    env_id: str,
    env_kwargs: dict[str, Any],
    *,
    n_envs: int,
    seed: int,
    monitor_dir: Path | None,
    resume: bool = False,
    vec_env: VecEnvKind | None = None,
    wrappers: Sequence[Wrapper] = (),
    telemetry_prefix: str = "events",
    gym_packages: Sequence[str] = (),
) -> VecEnv:
    """Builds `n_envs` Monitor-wrapped envs in a DummyVecEnv or a SubprocVecEnv.

    Env `i` is wrapped as SB3's and rl-zoo's `make_vec_env` wrap it: the Esper env,
    then `Monitor` (writing `{monitor_dir}/{i}.monitor.csv`), then each of `wrappers`
    in order, outermost last; so the monitor records the Esper env's own rewards and
    episodes, whatever the wrappers change (an episode a wrapper such as `TimeLimit`
    cuts short is not a monitor row, as in SB3).

    Args:
        env_id: Registered Esper id.
        env_kwargs: `gym.make` keyword arguments.
        n_envs: Number of envs.
        seed: Env `i` is reset with `seed + i` first.
        monitor_dir: Folder of the `{i}.monitor.csv` files (None: no files).
        resume: Append to existing monitor files instead of overwriting them.
        vec_env: rl-zoo's `--vec-env`: "dummy" (every env in this process), "subproc"
            (one worker process per env, even for one), or None: "subproc" when
            `n_envs > 1` (each Esper env trains a CNN and needs its own cores), else
            "dummy". A worker's torch gets `cpu_count // n_envs` threads (at least 1).
        wrappers: Gymnasium wrappers (callables from env to env) applied in order
            after `Monitor`; for "subproc" they travel to the workers, so use
            importable classes or `functools.partial` of them.
        telemetry_prefix: When `env_kwargs` set `telemetry_dir`, env `i` gets the
            `telemetry_name` "{telemetry_prefix}.{i}" and so its own file,
            `{telemetry_dir}/{telemetry_prefix}.{i}.jsonl`; give another prefix to
            another vec env sharing the directory (e.g. "events.eval").
        gym_packages: Modules each env's process imports first (rl-zoo's
            `--gym-packages`), so that the ids they register exist in workers too.

    Raises:
        ValueError: `n_envs < 1`, an unknown `vec_env`, a `telemetry_prefix` that is not
            a telemetry name, or `env_kwargs` that set `telemetry_name` beside
            `telemetry_dir` (each env's name comes from `telemetry_prefix`).
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if vec_env not in (None, "dummy", "subproc"):
        raise ValueError(f"vec_env must be 'dummy', 'subproc' or None, got {vec_env!r}")
    kind = vec_env or ("subproc" if n_envs > 1 else "dummy")
    per_env = [dict(env_kwargs) for _ in range(n_envs)]
    if env_kwargs.get("telemetry_dir") is not None:
        if "telemetry_name" in env_kwargs:
            raise ValueError(
                f"env_kwargs set telemetry_name {env_kwargs['telemetry_name']!r}, but make_vec_env "
                f"names env i '{telemetry_prefix}.<i>' itself: pass telemetry_prefix instead"
            )
        if re.fullmatch(TELEMETRY_NAME_PATTERN, telemetry_prefix) is None:
            raise ValueError(
                f"telemetry_prefix {telemetry_prefix!r} does not match {TELEMETRY_NAME_PATTERN}"
            )
        for rank, kwargs in enumerate(per_env):
            kwargs["telemetry_name"] = f"{telemetry_prefix}.{rank}"
    if monitor_dir is not None:
        monitor_dir.mkdir(parents=True, exist_ok=True)
    worker_threads = max(1, (os.cpu_count() or 1) // n_envs) if kind == "subproc" else None
    fns = [
        _factory(
            env_id,
            kwargs,
            None if monitor_dir is None else monitor_dir / str(rank),
            resume,
            worker_threads,
            tuple(wrappers),
            tuple(gym_packages),
        )
        for rank, kwargs in enumerate(per_env)
    ]
    # "fork" would copy torch's thread pool mid-use and can deadlock the workers.
    vec: VecEnv = (
        SubprocVecEnv(fns, start_method="forkserver") if kind == "subproc" else DummyVecEnv(fns)
    )
    vec.seed(seed)
    return vec
