from __future__ import annotations

from pathlib import Path

from benchmarks.multi_agent_mini import main


def test_benchmark_reports_both_teams_per_seed(tmp_path: Path, tiny_cifar_dir: str) -> None:
    out = tmp_path / "report.md"
    env_kwargs = [
        f"data_dir:{tiny_cifar_dir}",
        "train_per_class:8",
        "val_per_class:4",
        "test_per_class:4",
        "episode_epochs:3",
        "train.batch_size:16",
        "train.eval_batch_size:64",
    ]
    main(["--seeds", "0", "--env-kwargs", *env_kwargs, "--out", str(out)])
    text = out.read_text()
    assert "Episodes: 2 of 2" in text
    assert "| heuristic team | 0 |" in text
    assert "| tamiyo alone | 0 |" in text
    assert "| tamiyo alone | 1 |" in text.split("Means over seeds")[1]
