from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats

from agents.rollout import EpisodeResult
from benchmarks import leaderboard
from benchmarks.leaderboard import (
    BoardEntry,
    paired_differences,
    pareto_front,
    read_board,
    render_table,
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
    # Their IQM is their mean; bootstrap resamples average 50, 55 or 60.
    # Neighbours share one seed, too few for a paired interval: none is separated.
    assert lines[2:] == [
        "| 1= | b | 1 | 70.00 | 70.00 | 60.00 | 0.0 | 5.00 | 0.0 / 0.0 / 0.0 | 1.0 | cuda | g |",
        "| 1= | a | 2 | 55.00 ± 63.53 | 55.00 [50.00, 60.00] | 60.00 ± 63.53 | 20.0 "
        "| 2.00 ± 12.71 | 1.5 / 0.5 / 0.5 | 3.0 | cpu | m |",
        "| 1= | c | 1 | 40.00 | 40.00 | 50.00 | 5.0 | -1.00 | 0.0 / 0.0 / 1.0 | 0.5 | cpu | m |",
    ]


def _scores(**by_policy: list[float]) -> list[EpisodeResult]:
    """Episodes with these test accuracies, one per seed from 1000."""
    return [
        result(policy, 1000 + index, final_test_accuracy=accuracy)
        for policy, accuracies in by_policy.items()
        for index, accuracy in enumerate(accuracies)
    ]


def test_rank_marks_neighbours_the_paired_interval_does_not_separate() -> None:
    entries = _scores(
        low=[0.40, 0.41, 0.39, 0.40, 0.38],
        mid=[0.60, 0.62, 0.58, 0.61, 0.59],
        near=[0.61, 0.60, 0.59, 0.60, 0.59],  # within noise of mid: differences straddle 0
        top=[0.80, 0.83, 0.79, 0.81, 0.80],
    )
    rows = leaderboard.aggregate(entries)
    assert [r.policy for r in rows] == ["top", "mid", "near", "low"]
    assert leaderboard.ranks(rows, entries) == ["1", "2=", "2=", "4"]
    cells = [line.split(" | ")[:2] for line in render_table(entries).splitlines()[2:]]
    assert cells == [["| 1", "top"], ["| 2=", "mid"], ["| 2=", "near"], ["| 4", "low"]]
    # A run of unseparated neighbours shares the rank of its first row.
    chained = _scores(a=[0.60, 0.70, 0.65], b=[0.62, 0.60, 0.66], c=[0.61, 0.59, 0.60])
    assert leaderboard.ranks(leaderboard.aggregate(chained), chained) == ["1=", "1=", "1="]


def test_pareto_front_keeps_undominated_points() -> None:
    points = [(0.0, 0.5), (10.0, 0.4), (5.0, 0.6), (5.0, 0.55), (20.0, 0.7), (30.0, 0.7)]
    assert pareto_front(points) == [(0.0, 0.5), (5.0, 0.6), (20.0, 0.7)]


def test_evaluation_seeds_are_disjoint_from_training_seeds() -> None:
    assert leaderboard.evaluation_seeds(3) == [1000, 1001, 1002]
    with pytest.raises(ValueError, match="training uses seeds below"):
        leaderboard.evaluation_seeds(3, first=999)


def test_run_resumes_without_repeating_finished_episodes(
    tmp_path: Path,
    tiny_env_kwargs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ran: list[tuple[str, int]] = []
    real = leaderboard.run_episode

    def counting(env, policy, *, seed: int, policy_name: str, **kwargs: Any) -> EpisodeResult:
        ran.append((policy_name, seed))
        return real(env, policy, seed=seed, policy_name=policy_name, **kwargs)

    monkeypatch.setattr(leaderboard, "run_episode", counting)
    common = ["--env", ENV, "--out-dir", str(tmp_path), "--no-render"]
    common += ["--env-kwargs", *key_values(tiny_env_kwargs)]
    assert leaderboard.main(["run", "--policies", "noop", "--seeds", "2", "--quiet", *common]) == 0
    assert ran == [("noop", 1000), ("noop", 1001)]
    assert capsys.readouterr() == ("", "")  # --quiet: no bars, no episode lines
    ran.clear()
    assert leaderboard.main(["run", "--policies", "noop,random", "--seeds", "2", *common]) == 0
    assert ran == [("random", 1000), ("random", 1001)]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["random seed 1000", "random seed 1001"]
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


def _entry(**fields: Any) -> BoardEntry:
    setting = {
        "env_kwargs": {},
        "obs_version": 2,
        "env_semantics_version": ENV_SEMANTICS_VERSION,
        "torch_threads": 2,
        "cpu": "test cpu",
        "torch_version": "2.13.0",
        "numpy_version": "2.0.0",
        "deterministic_algorithms": False,
        "greedy": True,
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
    [(policy, paired)] = paired_differences(entries, "noop").items()
    assert (policy, paired.seeds) == ("grow", (1000, 1001))
    assert paired.difference.estimate == pytest.approx(0.025)
    # t(1) x sd 0.00707 / sqrt(2), as scipy's paired t test gives it.
    expected = scipy.stats.ttest_rel([0.42, 0.53], [0.40, 0.50]).confidence_interval()
    assert paired.difference.half_width == pytest.approx(12.706 * 0.005, rel=1e-4)
    assert (paired.difference.low, paired.difference.high) == pytest.approx(
        (expected.low, expected.high)
    )


def test_render_paired_gives_the_difference_and_probability_of_improvement() -> None:
    entries = _scores(
        noop=[0.40, 0.42, 0.41, 0.43],
        heuristic=[0.45, 0.46, 0.47, 0.46],
        grow=[0.46, 0.45, 0.48, 0.47],
    )
    lines = leaderboard.render_paired(entries).splitlines()
    assert lines[0].startswith("| policy | minus | seeds | test acc (points, 95% CI) |")
    assert "P(policy > minus) (95% CI)" in lines[0]
    rows = {tuple(line.split(" | ")[:2]): line for line in lines[2:]}
    assert set(rows) == {("| heuristic", "noop"), ("| grow", "noop"), ("| grow", "heuristic")}
    # Every heuristic seed beats every noop seed: P = 1 in every resample.
    assert "| yes | 1.00 [1.00, 1.00] |" in rows[("| heuristic", "noop")]
    # grow - heuristic: +1, -1, +1, +1 points: a mean of +0.5, not separated from 0.
    assert "| +0.50 ± " in rows[("| grow", "heuristic")]
    assert "| no | " in rows[("| grow", "heuristic")]


def _board_line(env: str, policy: str, seed: int, accuracy: float) -> str:
    episode = result(policy, seed, env_id=env, final_test_accuracy=accuracy)
    return _entry().model_copy(update=episode.model_dump()).model_dump_json() + "\n"


def test_compare_writes_rliable_plots_and_the_table_across_worlds(tmp_path: Path) -> None:
    worlds = {
        "Esper-CIFAR-Mini-v0": {
            "noop": [0.40, 0.42, 0.41],
            "heuristic": [0.45, 0.46, 0.47],
            "grow": [0.50, 0.50, 0.50],  # on this board only: left out
        },
        "Esper-CIFAR-Impaired-v0": {"noop": [0.50, 0.52, 0.51], "heuristic": [0.56, 0.55, 0.57]},
    }
    for env, policies in worlds.items():
        (tmp_path / f"{env}.jsonl").write_text(
            "".join(
                _board_line(env, policy, 1000 + i, accuracy)
                for policy, accuracies in policies.items()
                for i, accuracy in enumerate(accuracies)
            )
        )
    assert leaderboard.main(["compare", "--envs", *worlds, "--out-dir", str(tmp_path)]) == 0
    text = (tmp_path / "across_worlds.md").read_text()
    for plot in ("across_worlds_aggregates.png", "across_worlds_profiles.png"):
        assert f"]({plot})" in text
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Score: test accuracy minus noop's on the same seed, in points." in text
    assert "Left out (not on every board): grow." in text
    # heuristic - noop by seed: 5, 4, 6 and 6, 3, 6 points. Median and mean of the
    # world means 5 and 5: 5; IQM of 3, 4, 5, 6, 6, 6 trims one per end: 5.25.
    heuristic = next(line for line in text.splitlines() if line.startswith("| heuristic |"))
    cells = heuristic.split(" | ")
    assert cells[1] == "3"
    assert cells[2].startswith("5.00 [") and cells[3].startswith("5.25 [")
    assert cells[4].startswith("5.00 [")
    assert cells[5] == "1.00 [1.00, 1.00]" and cells[6] == "- |"
    assert text.index("| heuristic |") < text.index("| noop |")  # sorted by IQM
    raw = leaderboard.world_scores(
        {env: leaderboard.read_board(tmp_path / f"{env}.jsonl") for env in worlds}, "none"
    )
    assert raw["noop"] == pytest.approx(np.array([[40.0, 50.0], [42.0, 52.0], [41.0, 51.0]]))
    with pytest.raises(ValueError, match="needs noop on every board"):
        leaderboard.world_scores({"A": _scores(heuristic=[0.5])}, "noop")


def test_render_regenerates_the_readme_section_between_its_markers(
    recorded_board: Path, tmp_path: Path
) -> None:
    start, end = leaderboard.readme_markers(ENV)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{start}\nstale table\n{end}\nafter\n")
    leaderboard.main(
        ["render", "--env", ENV, "--out-dir", str(recorded_board), "--readme", str(readme)]
    )
    text = readme.read_text()
    assert "stale table" not in text and text.startswith("# Title\n\nbefore\n")
    assert text.endswith(f"{end}\nafter\n")
    assert leaderboard.readme_section(ENV, recorded_board) in text
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match=f"needs one {start}"):
        leaderboard.update_readme(readme, ENV, recorded_board)


def test_the_readme_shows_the_committed_board_as_generated() -> None:
    readme = Path(__file__).parents[2] / "README.md"
    start, end = leaderboard.readme_markers(ENV)
    shown = readme.read_text().split(start)[1].split(end)[0]
    assert shown == "\n" + leaderboard.readme_section(ENV), (
        "README.md's board section differs from the board: run "
        f"python -m benchmarks.leaderboard render --env {ENV} --readme README.md"
    )
