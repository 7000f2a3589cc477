from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from recording_sink import RecordingSink
from torch import nn

import esper_env  # noqa: F401  (registers the envs)
from agents.policies import FixedSchedule
from agents.rollout import run_episode
from benchmarks import seed_paper
from esper_env.contracts import SeedStage
from esper_env.kasmina import BakedSeed, export_static

#: Gates loosened (and significance off) so that one scripted seed surely fossilizes.
LOOSE = {
    "significance": 0.0,
    "fossilize_significance": 0.0,
    "min_improvement": -10.0,
    "min_contribution": -1.0,
}


def test_static_export_of_a_model_grown_through_the_env_computes_the_same(
    tiny_env_kwargs: dict[str, Any],
) -> None:
    lifecycle = {**tiny_env_kwargs["lifecycle"], **LOOSE}
    env = gym.make(
        "Esper-CIFAR-Mini-v0", **{**tiny_env_kwargs, "episode_epochs": 8, "lifecycle": lifecycle}
    )
    # One seed, pushed along every epoch: germinate, G1, G2, G3, G4 by epoch 4.
    policy = FixedSchedule(env.unwrapped.layout, germinate_epochs=(0,))
    run_episode(env, policy, seed=1000, policy_name="fixed")
    world = env.unwrapped.world
    assert SeedStage.FOSSILIZED in [r.stage for r in world.model.reports()]
    model = world.model.eval()
    static = export_static(model).eval()
    assert any(isinstance(m, BakedSeed) for m in static.modules())
    assert sum(p.numel() for p in static.parameters()) == world.base_params + world.added_params()
    x, _ = next(iter(world.splits.test.iterate()))
    with torch.no_grad():
        assert torch.equal(static(x), model(x))
    env.close()


def test_the_scratch_row_reports_each_epoch(tiny_env_kwargs: dict[str, Any]) -> None:
    env = gym.make("Esper-CIFAR-Mini-v0", **tiny_env_kwargs)
    env.reset(seed=1000)
    calls = RecordingSink()
    row = seed_paper.from_scratch(env.unwrapped.world, 1000, 2, calls)
    env.close()
    assert calls == [
        ("start", "from scratch seed 1000", 2),
        *(("step", value) for value in row.val_accuracy_curve),
        ("end",),
    ]


def test_reinitialise_draws_fresh_parameters_and_refuses_unknown_modules() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
    seed_paper.reinitialise(net, seed=0)
    assert not torch.any(net[0].weight == 3.0) and torch.all(net[1].weight == 1.0)

    class Bare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match="has no reset_parameters"):
        seed_paper.reinitialise(nn.Sequential(Bare()), seed=0)


def test_seed_paper_writes_the_four_rows_per_seed_and_resumes(
    tmp_path: Path, tiny_env_kwargs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    kwargs = {**tiny_env_kwargs, "episode_epochs": 8}
    argv = ["--env", "Esper-CIFAR-Mini-v0", "--out-dir", str(tmp_path), "--seeds", "2"]
    argv += ["--threads", "1", "--env-kwargs"]
    argv += [f"{key}:{json.dumps(value)}" for key, value in kwargs.items()]
    rows = seed_paper.main([*argv, "--quiet"])
    printed = capsys.readouterr()
    assert printed.err == "" and printed.out.startswith("total wall ")  # no row lines
    expected = [(name, seed) for name in seed_paper.ORIGINAL for seed in (1000, 1001)]
    assert [(r.row, r.seed) for r in rows] == expected
    for seed in (1000, 1001):
        by_name = {r.row: r for r in rows if r.seed == seed}
        grown = by_name["Tamiyo-driven (heuristic)"]
        scratch = by_name[seed_paper.SCRATCH_ROW]
        # The heuristic grew seeds that act on the output, and the scratch row retrains
        # exactly that seed's architecture.
        assert grown.architecture != "bare host" and grown.params_added > 0
        assert scratch.architecture == grown.architecture
        # Isolated (alpha 0) seeds are not exported; the acting ones are.
        assert 0 < scratch.params_added <= grown.params_added
        assert scratch.epochs == grown.epochs == 8
        assert by_name["baseline (noop)"].params_added == 0
    report = (tmp_path / "seed_paper.md").read_text()
    for name, original in seed_paper.ORIGINAL.items():
        assert f"| {name} | {original:.2f} |" in report
    assert "| 2 |" in report  # two seeds per row, paired with the baseline
    rerun = seed_paper.main(argv)  # nothing rerun
    assert [(r.row, r.seed) for r in rerun] == expected
    assert len((tmp_path / "seed_paper.jsonl").read_text().splitlines()) == 8


def _paper_row(row: str, seed: int, accuracy: float) -> seed_paper.SeedPaperRow:
    return seed_paper.SeedPaperRow(
        row=row,
        seed=seed,
        test_accuracy=accuracy,
        val_accuracy=accuracy,
        params=100,
        params_added=0,
        epochs=8,
        wall_seconds=1.0,
        architecture="bare host",
    )


def test_seed_paper_report_pairs_each_row_with_the_baseline() -> None:
    rows = [_paper_row("baseline (noop)", 1000 + i, a) for i, a in enumerate((0.60, 0.62, 0.61))]
    rows += [_paper_row("fixed schedule", 1000 + i, a) for i, a in enumerate((0.64, 0.65, 0.66))]
    rows.append(_paper_row("Tamiyo-driven (heuristic)", 1000, 0.70))  # one seed: no interval
    lines = seed_paper.render(rows, "# header").splitlines()
    header = next(line for line in lines if line.startswith("| row |"))
    cells = {line.split(" | ")[0]: line.split(" | ") for line in lines if line.startswith("| ")}
    assert "| ours IQM (%) |" in header and "| P(row > baseline) |" in header
    # fixed: sd 1 point, t(2) = 4.303 -> ± 2.48; differences 4, 3, 5 points: the same spread;
    # every fixed seed beats every baseline seed.
    assert cells["| fixed schedule"][2:6] == [
        "65.00 ± 2.48",
        "65.00 [64.00, 66.00]",
        "+4.00 ± 2.48",
        "1.00 [1.00, 1.00]",
    ]
    assert cells["| Tamiyo-driven (heuristic)"][2:7] == ["70.00", "70.00", "", "", "1"]
    assert cells["| baseline (noop)"][4:6] == ["", ""]
    scratch = next(line for line in lines if line.startswith(f"| {seed_paper.SCRATCH_ROW} |"))
    assert scratch.count("|") == header.count("|")
