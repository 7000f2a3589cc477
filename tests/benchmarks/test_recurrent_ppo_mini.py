import json
from pathlib import Path
from typing import Any

from zoo_helpers import as_key_values, tiny_train_args

from agents.zoo.train import main as train
from benchmarks.recurrent_ppo_mini import main as report
from benchmarks.recurrent_ppo_mini import rolling


def test_rolling_mean_is_trailing() -> None:
    assert rolling([1.0, 3.0, 5.0, 7.0], 2).tolist() == [1.0, 2.0, 4.0, 6.0]


def test_report_evaluates_agent_and_baselines(
    tiny_env_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    run = train(
        [
            *tiny_train_args(tiny_env_kwargs, tmp_path / "logs", "recurrent_ppo"),
            *["-n", "16", "--eval-freq", "16", "--eval-episodes", "1"],
        ]
    ).log_path
    out = tmp_path / "results"
    text = report(
        [
            *["--run", str(run), "--out", str(out), "--episodes", "1"],
            *["--env-kwargs", *as_key_values(tiny_env_kwargs)],
        ]
    )
    records = [json.loads(line) for line in (out / "recurrent_ppo_mini_eval.jsonl").open()]
    assert [r["policy"].split(":")[0] for r in records] == [
        "recurrent_ppo",
        "recurrent_ppo",
        "noop",
        "random",
    ]
    assert {r["seed"] for r in records} == {1000}
    assert (out / "recurrent_ppo_mini.png").stat().st_size > 10_000
    assert "| noop |" in text and "| random |" in text and "Trained 16 timesteps" in text
