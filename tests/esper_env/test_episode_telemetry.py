"""Episodes and steps in the telemetry: what a dashboard reads, equal to what the env returned."""

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from tiny_data import tiny_kwargs

import esper_env  # noqa: F401
from esper_env import multi_agent
from esper_env.telemetry import (
    EpisodeEnded,
    EpisodeStarted,
    EpochEnd,
    Germinated,
    StepEnded,
    read_events,
)


def _kinds(events: list[Any]) -> list[str]:
    return [event.event for event in events]


def test_an_episode_is_started_stepped_and_ended_in_the_telemetry(
    tiny_cifar_dir: str, tmp_path: Path
) -> None:
    env = gym.make(
        "Esper-CIFAR-Mini-v0", **tiny_kwargs(tiny_cifar_dir), telemetry_dir=str(tmp_path)
    )
    env.unwrapped.set_policy_name("scripted")
    _, info = env.reset(seed=3)
    rewards, infos = [], []
    germinate = np.array([1, 0, 0, 0])  # GERMINATE slot0, first blueprint, first speed
    for action in [germinate, np.zeros(4, dtype=int), np.zeros(4, dtype=int), germinate]:
        _, reward, terminated, truncated, step_info = env.step(action)
        rewards.append(reward)
        infos.append(step_info)
    env.close()
    assert truncated and not terminated

    events = read_events(tmp_path)
    kinds = [
        k
        for k in _kinds(events)
        if k in ("episode_started", "epoch_end", "step_ended", "episode_ended")
    ]
    assert kinds == ["episode_started", *["epoch_end", "step_ended"] * 4, "episode_ended"]
    started = next(e for e in events if isinstance(e, EpisodeStarted))
    assert started.policy == "scripted" and started.seed == 3
    assert started.episode_seed == info["episode_seed"] and started.episode_epochs == 4
    assert started.slots == ["slot0", "slot1", "slot2"]
    steps = [e for e in events if isinstance(e, StepEnded)]
    assert [s.step for s in steps] == [1, 2, 3, 4]
    assert steps[0].actions["tamiyo"].startswith("germinate slot0 ")
    assert steps[1].actions == {"tamiyo": "wait"}
    assert [s.reward for s in steps] == pytest.approx(rewards)
    assert [s.reward_terms for s in steps] == [i["reward_terms"] for i in infos]
    assert [s.val_accuracy for s in steps] == [i["val_accuracy"] for i in infos]
    assert steps[0].slots[0].blueprint is not None and steps[0].slots[1].blueprint is None
    assert steps[3].refused == ["tamiyo"]  # slot0 is taken: the gate refuses a second seed
    assert all(s.seconds > 0 for s in steps)
    assert any(isinstance(e, Germinated) for e in events)
    (ended,) = [e for e in events if isinstance(e, EpisodeEnded)]
    assert ended.episode_return == pytest.approx(sum(rewards))
    assert ended.final_test_accuracy == infos[-1]["final_test_accuracy"]
    assert ended.seconds >= sum(s.seconds for s in steps)
    epochs = [e for e in events if isinstance(e, EpochEnd)]
    assert [e.val_accuracy for e in epochs] == [s.val_accuracy for s in steps]


def test_the_multi_agent_env_describes_every_agents_action(
    tiny_cifar_dir: str, tmp_path: Path
) -> None:
    env = multi_agent.parallel_env(
        preset="Esper-CIFAR-Mini-v0", **tiny_kwargs(tiny_cifar_dir), telemetry_dir=str(tmp_path)
    )
    env.reset(seed=0)
    wait = {agent: np.zeros(len(env.action_space(agent).nvec), dtype=int) for agent in env.agents}
    env.step(wait)
    env.close()
    (step,) = [e for e in read_events(tmp_path) if isinstance(e, StepEnded)]
    assert step.actions == {"tamiyo": "wait", "emrakul": "wait", "karn": "wait"}
    assert step.refused == []
