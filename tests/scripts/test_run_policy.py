import json
from pathlib import Path
from typing import Any

import pytest
from zoo_helpers import as_key_values, hostile_agent

from agents.rollout import EpisodeResult
from agents.run import main as run_policy
from agents.zoo.safe_load import UntrustedAgentError
from esper_env.telemetry import EpisodeStarted, StepEnded, read_events


def test_a_crafted_agent_is_refused_unless_trusted(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    hostile = hostile_agent("maskable_ppo", tiny_env_kwargs, tmp_path, marker)
    args = [
        "--policy",
        f"maskable_ppo:{hostile}",
        "--episodes",
        "1",
        "--env-kwargs",
        *(f"{k}:{json.dumps(v)}" for k, v in tiny_env_kwargs.items()),
    ]
    with pytest.raises(UntrustedAgentError, match=r"esper_backdoor[\s\S]*--trust-agent"):
        run_policy(args)
    assert not marker.exists()

    (result,) = run_policy([*args, "--trust-agent"])
    assert marker.exists()  # trusting does run the file's code: the flag is the only way in
    assert result.steps == tiny_env_kwargs["episode_epochs"]


def test_help_says_trusting_runs_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_policy(["--help"])
    assert "RUNS CODE FROM THE FILE" in " ".join(capsys.readouterr().out.split())


def test_run_ends_each_episode_with_its_table_and_writes_telemetry_where_asked(
    tiny_env_kwargs: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapped cells: one line per row
    telemetry = tmp_path / "telemetry"
    args = ["--policy", "fixed", "--telemetry-dir", str(telemetry)]
    (result,) = run_policy([*args, "--env-kwargs", *as_key_values(tiny_env_kwargs)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("seed 0: test_acc ")
    assert lines[1].strip() == "fixed seed 0"
    assert lines[2].split() == ["epoch", "action", "transition", "val_acc", "reward"]
    rows = lines[4:]
    assert len(rows) == result.steps == tiny_env_kwargs["episode_epochs"]
    events = read_events(telemetry)
    (started,) = (e for e in events if isinstance(e, EpisodeStarted))
    assert started.policy == "fixed"
    steps = [e for e in events if isinstance(e, StepEnded)]
    for row, step in zip(rows, steps, strict=True):
        assert row.split()[0] == str(step.step)
        assert f" {step.actions['tamiyo']} " in row
        assert f" {step.val_accuracy:.4f} " in row
    assert "DORMANT->GERMINATED" in rows[0]


def test_quiet_prints_nothing_and_still_writes_the_results(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "episodes.jsonl"
    args = ["--policy", "noop", "--quiet", "--out", str(out)]
    (result,) = run_policy([*args, "--env-kwargs", *as_key_values(tiny_env_kwargs)])
    assert capsys.readouterr() == ("", "")
    assert EpisodeResult.model_validate_json(out.read_text()) == result


def test_telemetry_dir_is_given_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_policy(["--telemetry-dir", str(tmp_path), "--env-kwargs", f"telemetry_dir:{tmp_path}"])
    assert exit_info.value.code == 2
    assert "--telemetry-dir or --env-kwargs telemetry_dir:DIR, not both" in capsys.readouterr().err
