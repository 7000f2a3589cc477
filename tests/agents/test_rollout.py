from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
from recording_sink import RecordingSink

import esper_env  # noqa: F401  (registers the envs)
from agents.policies import make_policy
from agents.progress import Progress
from agents.rollout import (
    EpisodeResult,
    describe_transition,
    run_episode,
    run_episodes,
)
from esper_env.contracts import SeedStage
from esper_env.telemetry import EpisodeStarted, StepEnded, read_events


def test_run_episode_reports_each_step_and_names_the_policy_in_the_telemetry(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    env = gym.make("Esper-CIFAR-Mini-v0", **tiny_env_kwargs, telemetry_dir=str(tmp_path))
    sink, records = RecordingSink(), []
    result = run_episode(
        env,
        make_policy("fixed", env),
        seed=3,
        policy_name="fixed",
        progress=sink,
        on_step=records.append,
    )
    env.close()
    steps = tiny_env_kwargs["episode_epochs"]
    assert result.steps == steps
    # One update per step, with that step's validation accuracy.
    assert sink == [
        ("start", "fixed seed 3", steps),
        *(("step", value) for value in result.val_accuracy_curve),
        ("end",),
    ]
    events = read_events(tmp_path)
    (started,) = (e for e in events if isinstance(e, EpisodeStarted))
    assert started.policy == "fixed"
    # The records say what the telemetry says, step by step.
    ended = [e for e in events if isinstance(e, StepEnded)]
    assert [r.step for r in records] == [e.step for e in ended] == list(range(1, steps + 1))
    assert [r.action for r in records] == [e.actions["tamiyo"] for e in ended]
    assert [r.val_accuracy for r in records] == result.val_accuracy_curve
    assert [r.reward for r in records] == pytest.approx([e.reward for e in ended])
    assert records[0].action.startswith("germinate ")
    assert records[0].transition == "DORMANT->GERMINATED"


def test_describe_transition_names_refusals_and_rollbacks() -> None:
    refused = {
        "ok": False,
        "slot": "slot1",
        "op": "advance",
        "from_stage": int(SeedStage.TRAINING),
        "to_stage": int(SeedStage.TRAINING),
        "gate": "G2",
        "reason": "improvement 0.001 < 0.01",
    }
    assert describe_transition(None, rolled_back=False) == "-"
    assert describe_transition(refused, rolled_back=False) == (
        "refused (G2): improvement 0.001 < 0.01"
    )
    assert describe_transition(None, rolled_back=True) == "-; governor rolled back"


def test_run_episodes_prints_lines_and_tables_unless_quiet(
    tiny_env_kwargs: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = gym.make(
        "Esper-CIFAR-Mini-v0",
        **{**tiny_env_kwargs, "episode_epochs": 2},
        telemetry_dir=str(tmp_path),
    )
    policy = make_policy("noop", env)
    out = tmp_path / "episodes.jsonl"
    results = run_episodes(env, policy, seeds=[0, 1], policy_name="noop", out=out, step_tables=True)
    printed = capsys.readouterr().out
    # Each episode's line, then its table: a row per step.
    first, second = printed.index("seed 0: test_acc"), printed.index("seed 1: test_acc")
    assert first < printed.index("noop seed 0") < second < printed.index("noop seed 1")
    assert printed.count(" wait ") == 4
    with Progress(quiet=True) as progress:
        again = run_episodes(
            env,
            policy,
            seeds=[2],
            policy_name="quiet noop",
            out=out,
            progress=progress,
            step_tables=True,
        )
    env.close()
    assert capsys.readouterr() == ("", "")
    lines = out.read_text().splitlines()
    assert [EpisodeResult.model_validate_json(line) for line in lines] == [*results, *again]
    policies = [e.policy for e in read_events(tmp_path) if isinstance(e, EpisodeStarted)]
    assert policies == ["noop", "noop", "quiet noop"]
