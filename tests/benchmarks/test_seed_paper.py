from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from torch import nn

import esper_env  # noqa: F401  (registers the envs)
from agents.rollout import load_policy, run_episode
from benchmarks import seed_paper
from esper_env.contracts import SeedStage
from esper_env.kasmina import BakedSeed, export_static


def grow(kwargs: dict[str, Any], policy: str) -> gym.Env:
    env = gym.make("Esper-CIFAR-Mini-v0", **{**kwargs, "episode_epochs": 8})
    run_episode(env, load_policy(policy, env, seed=1000), seed=1000, policy_name=policy)
    return env


def test_static_export_of_a_model_grown_through_the_env_computes_the_same(
    tiny_env_kwargs: dict[str, Any],
) -> None:
    env = grow(tiny_env_kwargs, "fixed")
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


def test_seed_paper_writes_the_four_rows_and_resumes(
    tmp_path: Path, tiny_env_kwargs: dict[str, Any]
) -> None:
    kwargs = {**tiny_env_kwargs, "episode_epochs": 8}
    argv = ["--env", "Esper-CIFAR-Mini-v0", "--out-dir", str(tmp_path), "--env-kwargs"]
    argv += [f"{key}:{json.dumps(value)}" for key, value in kwargs.items()]
    rows = seed_paper.main(argv)
    assert [r.row for r in rows] == list(seed_paper.ORIGINAL)
    by_name = {r.row: r for r in rows}
    grown = by_name["Tamiyo-driven (heuristic)"]
    scratch = by_name[seed_paper.SCRATCH_ROW]
    assert "FOSSILIZED" in grown.architecture
    assert scratch.architecture == grown.architecture
    assert scratch.epochs == grown.epochs == 8
    assert by_name["baseline (noop)"].params_added == 0
    report = (tmp_path / "seed_paper.md").read_text()
    for name, original in seed_paper.ORIGINAL.items():
        assert f"| {name} | {original:.2f} |" in report
    assert [r.row for r in seed_paper.main(argv)] == list(seed_paper.ORIGINAL)  # nothing rerun
    assert len((tmp_path / "seed_paper.jsonl").read_text().splitlines()) == 4
