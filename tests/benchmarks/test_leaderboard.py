from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agents.rollout import EpisodeResult
from benchmarks import leaderboard
from benchmarks.leaderboard import (
    BoardEntry,
    mean_ci,
    paired_differences,
    pareto_front,
    read_board,
    render_table,
    validate_board,
)
from esper_env.envs.presets import ENV_SEMANTICS_VERSION

ENV = "Esper-CIFAR-Mini-v0"


def key_values(kwargs: dict[str, Any]) -> list[str]:
    """`--env-kwargs` items for a kwargs dict (JSON values are YAML)."""
    return [f"{key}:{json.dumps(value)}" for key, value in kwargs.items()]


def result(policy: str, seed: int, **fields: Any) -> EpisodeResult:
    base: dict[str, Any] = {
        "env_id": ENV,
        "policy": policy,
        "seed": seed,
        "final_test_accuracy": 0.5,
        "final_val_accuracy": 0.5,
        "params_added": 0,
        "added_param_fraction": 0.0,
        "episode_return": 0.0,
        "steps": 3,
        "seeds_germinated": 0,
        "seeds_fossilized": 0,
        "seeds_pruned": 0,
        "governor_rollbacks": 0,
        "refused_actions": 0,
        "wall_seconds": 1.0,
        "device": "cpu",
        "machine": "m",
    }
    return EpisodeResult(**{**base, **fields})


def test_render_table_gives_one_row_per_policy_sorted_by_test_accuracy() -> None:
    entries = [
        result("c", 1000, final_test_accuracy=0.4, added_param_fraction=0.05, seeds_pruned=1,
               episode_return=-1.0, wall_seconds=0.5),
        result("a", 1000, final_test_accuracy=0.5, final_val_accuracy=0.55,
               added_param_fraction=0.1, episode_return=1.0, seeds_germinated=1,
               seeds_fossilized=1, wall_seconds=2.0),
        result("b", 1000, final_test_accuracy=0.7, final_val_accuracy=0.6, episode_return=5.0,
               device="cuda", machine="g"),
        result("a", 1001, final_test_accuracy=0.6, final_val_accuracy=0.65,
               added_param_fraction=0.3, episode_return=3.0, seeds_germinated=2,
               seeds_pruned=1, wall_seconds=4.0),
    ]  # fmt: skip
    lines = render_table(entries).splitlines()
    assert lines[0] == leaderboard.TABLE_HEADER.splitlines()[0]
    # Two episodes: t(1) = 12.706; sd 0.0707 -> half-width 12.706 * 0.05 = 63.53 points.
    assert lines[2:] == [
        "| 1 | b | 1 | 70.00 | 60.00 | 0.0 | 5.00 | 0.0 / 0.0 / 0.0 | 1.0 | cuda | g |",
        "| 2 | a | 2 | 55.00 ± 63.53 | 60.00 ± 63.53 | 20.0 | 2.00 ± 12.71 "
        "| 1.5 / 0.5 / 0.5 | 3.0 | cpu | m |",
        "| 3 | c | 1 | 40.00 | 50.00 | 5.0 | -1.00 | 0.0 / 0.0 / 1.0 | 0.5 | cpu | m |",
    ]


def test_mean_ci_uses_student_t() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.303 / 3**0.5)
    assert leaderboard.t_quantile(35) == 2.042  # between table keys: the conservative lower df
    assert leaderboard.t_quantile(500) == 1.960


def test_pareto_front_keeps_undominated_points() -> None:
    points = [(0.0, 0.5), (10.0, 0.4), (5.0, 0.6), (5.0, 0.55), (20.0, 0.7), (30.0, 0.7)]
    assert pareto_front(points) == [(0.0, 0.5), (5.0, 0.6), (20.0, 0.7)]


def test_evaluation_seeds_are_disjoint_from_training_seeds() -> None:
    assert leaderboard.evaluation_seeds(3) == [1000, 1001, 1002]
    with pytest.raises(ValueError, match="training uses seeds below"):
        leaderboard.evaluation_seeds(3, first=999)


def test_run_resumes_without_repeating_finished_episodes(
    tmp_path: Path, tiny_env_kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[str, int]] = []
    real = leaderboard.run_episode

    def counting(env, policy, *, seed: int, policy_name: str) -> EpisodeResult:
        ran.append((policy_name, seed))
        return real(env, policy, seed=seed, policy_name=policy_name)

    monkeypatch.setattr(leaderboard, "run_episode", counting)
    common = ["--env", ENV, "--out-dir", str(tmp_path), "--no-render"]
    common += ["--env-kwargs", *key_values(tiny_env_kwargs)]
    assert leaderboard.main(["run", "--policies", "noop", "--seeds", "2", *common]) == 0
    assert ran == [("noop", 1000), ("noop", 1001)]
    ran.clear()
    assert leaderboard.main(["run", "--policies", "noop,random", "--seeds", "2", *common]) == 0
    assert ran == [("random", 1000), ("random", 1001)]
    ran.clear()
    assert leaderboard.main(["run", "--policies", "noop,random", "--seeds", "2", *common]) == 0
    assert ran == []
    entries = read_board(tmp_path / f"{ENV}.jsonl")
    assert [(e.policy, e.seed) for e in entries] == [
        ("noop", 1000),
        ("noop", 1001),
        ("random", 1000),
        ("random", 1001),
    ]
    assert all(e.env_kwargs == tiny_env_kwargs and e.device == "cpu" for e in entries)
    # Another setting cannot be appended to the same board.
    with pytest.raises(ValueError, match="recorded with env kwargs"):
        leaderboard.run_board(
            ENV, ["noop"], [1002], env_kwargs={**tiny_env_kwargs, "episode_epochs": 3},
            out_dir=tmp_path,
        )  # fmt: skip


@pytest.fixture(scope="module")
def recorded_board(tmp_path_factory: pytest.TempPathFactory, tiny_cifar_dir: str) -> Path:
    """A board of one heuristic and one random episode on the tiny data."""
    out = tmp_path_factory.mktemp("board")
    kwargs = {
        "data_dir": tiny_cifar_dir,
        "train_per_class": 8,
        "val_per_class": 4,
        "test_per_class": 4,
        "episode_epochs": 6,
        "train": {"batch_size": 16, "eval_batch_size": 64},
        "lifecycle": {"min_training_epochs": 0, "holding_epochs": 0, "embargo_epochs": 1},
    }
    leaderboard.run_board(ENV, ["heuristic", "random"], [1000], env_kwargs=kwargs, out_dir=out)
    return out


def test_render_writes_the_board_and_its_plots(recorded_board: Path, tmp_path: Path) -> None:
    shutil.copy(recorded_board / f"{ENV}.jsonl", tmp_path)
    path = leaderboard.render_board(ENV, tmp_path)
    text = path.read_text()
    assert "Env version **v0**, observation layout version **2**" in text
    assert f"env semantics version **{ENV_SEMANTICS_VERSION}**" in text
    assert "| policy | minus | seeds | test acc (points, 95% CI) |" in text  # paired table
    assert "Evaluation seeds:\n1000–1000" in text
    assert text.count("| cpu |") == 2
    for plot in (f"{ENV}_curves.png", f"{ENV}_frontier.png"):
        assert f"]({plot})" in text
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validate_replays_episodes_and_detects_a_tampered_result(
    recorded_board: Path, tmp_path: Path
) -> None:
    entries = read_board(recorded_board / f"{ENV}.jsonl")
    assert any(e.seeds_germinated for e in entries)  # the replays exercise lifecycle operations
    assert all(len(e.actions) == e.steps for e in entries)
    assert all(v.ok for v in validate_board(ENV, recorded_board)), "a faithful board replays"
    tampered = [
        entries[0].model_copy(update={"final_test_accuracy": entries[0].final_test_accuracy + 0.1}),
        entries[1].model_copy(update={"actions": entries[1].actions[:-1]}),
    ]
    board = tmp_path / f"{ENV}.jsonl"
    board.write_text("".join(e.model_dump_json() + "\n" for e in tampered))
    first, second = validate_board(ENV, tmp_path)
    assert not first.ok and first.mismatches[0].startswith("final_test_accuracy: recorded")
    assert second.mismatches == (f"episode still running after {entries[1].steps - 1} actions",)
    assert leaderboard.main(["validate", "--env", ENV, "--out-dir", str(tmp_path)]) == 1


def _entry(**fields: Any) -> BoardEntry:
    setting = {
        "env_kwargs": {},
        "obs_version": 2,
        "env_semantics_version": ENV_SEMANTICS_VERSION,
        "torch_threads": 2,
        "cpu": "test cpu",
    }
    return BoardEntry(**result("noop", 1000).model_dump(), **{**setting, **fields})


def test_a_board_line_is_an_episode_result_plus_its_setting(tmp_path: Path) -> None:
    entry = _entry()
    assert EpisodeResult.model_fields.keys() < BoardEntry.model_fields.keys()
    board = tmp_path / "board.jsonl"
    good = entry.model_dump_json()
    board.write_text(good + "\n" + good.replace('"obs_version":2', '"obs_version":"x"') + "\n")
    with pytest.raises(ValueError, match=r"board.jsonl:2 is not a leaderboard line"):
        read_board(board)


def test_records_of_other_env_semantics_are_refused(tmp_path: Path) -> None:
    board = tmp_path / "board.jsonl"
    old = json.loads(_entry().model_dump_json())
    del old["env_semantics_version"]
    board.write_text(json.dumps(old) + "\n")
    with pytest.raises(
        ValueError, match=r"board.jsonl:1 was recorded under env semantics version 1"
    ):
        read_board(board)
    board.write_text(_entry(env_semantics_version=ENV_SEMANTICS_VERSION + 1).model_dump_json())
    with pytest.raises(ValueError, match="delete the board and run it again"):
        read_board(board)


def test_paired_differences_pair_by_seed() -> None:
    entries = [
        result("noop", 1000, final_test_accuracy=0.40),
        result("noop", 1001, final_test_accuracy=0.50),
        result("grow", 1000, final_test_accuracy=0.42),
        result("grow", 1001, final_test_accuracy=0.53),
        result("grow", 1002, final_test_accuracy=0.99),  # no noop partner: left out
    ]
    [(policy, n, mean, half)] = paired_differences(entries, "noop")
    assert (policy, n) == ("grow", 2)
    assert mean == pytest.approx(0.025)
    assert half == pytest.approx(12.706 * 0.005)  # t(1) x sd 0.00707 / sqrt(2)
