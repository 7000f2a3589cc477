"""A real short run's telemetry, written once per session for the Karn tests."""

from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch

import esper_env  # noqa: F401
from agents.policies import make_policy
from agents.rollout import run_episode


@pytest.fixture(scope="session")
def run_telemetry(board_kwargs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two envs' telemetry directory: `events.0` (two heuristic episodes), `events.1` (one).

    The episodes last 6 epochs (`board_kwargs`), long enough for the heuristic to grow.
    Read-only: copy it to change it.
    """
    folder = tmp_path_factory.mktemp("telemetry")
    # Other tests (the leaderboard's) set torch's threads; the episodes' numbers, and so the
    # lifecycle the tests look for, depend on them.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for name, seeds in (("events.0", (1, 2)), ("events.1", (3,))):
        env = gym.make(
            "Esper-CIFAR-Mini-v0", **board_kwargs, telemetry_dir=str(folder), telemetry_name=name
        )
        env.unwrapped.set_policy_name("heuristic")
        policy = make_policy("heuristic", env, seed=0)
        for seed in seeds:
            run_episode(env, policy, seed=seed, policy_name="heuristic")
        env.close()
    torch.set_num_threads(threads)
    return folder
