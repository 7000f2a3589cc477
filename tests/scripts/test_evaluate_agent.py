import json
from pathlib import Path
from typing import Any

import pytest
from zoo_helpers import hostile_agent, tiny_train_args

from agents.rollout import EpisodeResult
from agents.run import main as run_policy
from agents.zoo.evaluate import main as evaluate
from agents.zoo.safe_load import UntrustedAgentError
from agents.zoo.train import main as train


def test_trained_agent_is_evaluated_in_the_episode_schema(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs"
    trained = train(
        [
            *tiny_train_args(tiny_env_kwargs, logs, "recurrent_ppo"),
            "-n",
            "16",
            "--eval-freq",
            "16",
            "--eval-episodes",
            "1",
        ]
    )
    out = tmp_path / "eval.jsonl"
    capsys.readouterr()

    # The run is found by number and its env kwargs come from its args.yml; --quiet
    # leaves out the bars and the episodes' lines, not the summary.
    results = evaluate(
        [
            "--algo",
            "recurrent_ppo",
            "-f",
            str(logs),
            "--exp-id",
            "1",
            "--load-best",
            "--episodes",
            "2",
            "--seed",
            "1000",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr()
    assert printed.err == "" and "seed 1000:" not in printed.out
    assert printed.out.splitlines()[-1].startswith(f"recurrent_ppo:{trained.log_path}")
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    records = [EpisodeResult.model_validate_json(line) for line in lines]
    assert [r.seed for r in records] == [1000, 1001]
    assert records == results
    best = trained.log_path / "best_model.zip"
    assert {r.policy for r in records} == {f"recurrent_ppo:{best}"}
    assert all(r.steps == tiny_env_kwargs["episode_epochs"] for r in records)
    assert set(json.loads(lines[0])) == set(EpisodeResult.model_fields)

    # The same agent named as a policy of run_policy.py gives the same episodes.
    kwargs = [f"{k}:{json.dumps(v)}" for k, v in tiny_env_kwargs.items()]
    baseline_style = run_policy(
        [
            "--policy",
            f"recurrent_ppo:{best}",
            "--episodes",
            "2",
            "--seed",
            "1000",
            "--env-kwargs",
            *kwargs,
        ]
    )
    assert [r.final_test_accuracy for r in baseline_style] == [
        r.final_test_accuracy for r in records
    ]


def test_missing_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no runs of ppo"):
        evaluate(["--algo", "ppo", "-f", str(tmp_path)])


def test_a_crafted_agent_is_refused_unless_trusted(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "MARKER"
    hostile = hostile_agent("ppo", tiny_env_kwargs, tmp_path, marker)
    args = [
        "--algo",
        "ppo",
        "--model",
        str(hostile),
        "--episodes",
        "1",
        "--env-kwargs",
        *(f"{k}:{json.dumps(v)}" for k, v in tiny_env_kwargs.items()),
    ]
    with pytest.raises(UntrustedAgentError, match=r"esper_backdoor[\s\S]*--trust-agent"):
        evaluate(args)
    assert not marker.exists()

    (result,) = evaluate([*args, "--trust-agent"])
    assert marker.exists()  # trusting does run the file's code: the flag is the only way in
    assert result.policy == f"ppo:{hostile}"
