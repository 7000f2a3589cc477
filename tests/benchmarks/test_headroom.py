from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from recording_sink import RecordingSink

from agents.rollout import EpisodeResult
from benchmarks import growth_report, headroom
from benchmarks.headroom import Arm, HeadroomRow, parse_arm
from esper_env.envs.presets import ENV_SEMANTICS_VERSION
from esper_env.envs.world import World


def result(policy: str, seed: int, **fields: Any) -> EpisodeResult:
    counts = ("params_added", "steps", "seeds_germinated", "seeds_fossilized", "seeds_pruned")
    zeros = dict.fromkeys((*counts, "governor_rollbacks", "refused_actions"), 0)
    return EpisodeResult(
        env_id="Esper-CIFAR-Mini-v0",
        policy=policy,
        seed=seed,
        final_val_accuracy=0.5,
        added_param_fraction=0.0,
        wall_seconds=1.0,
        **{**zeros, **fields},
    )


def test_parse_arm_reads_bare_and_grafts_and_names_bad_input() -> None:
    assert parse_arm("bare") == Arm(name="bare")
    assert parse_arm("two=residual_block@slot1,slot2") == Arm(
        name="two", blueprint="residual_block", slots=("slot1", "slot2")
    )
    with pytest.raises(ValueError, match="NAME=BLUEPRINT@SLOT"):
        parse_arm("residual_block@slot1")


def test_headroom_trains_each_arm_on_the_same_seeds_and_resumes(
    tmp_path: Path, tiny_env_kwargs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--seeds", "1", "2", "--threads", "1", "--out", str(tmp_path / "hr")]
    argv += ["--arm", "grown=residual_block@slot1,slot2", "--env-kwargs"]
    argv += [f"{key}:{json.dumps(value)}" for key, value in tiny_env_kwargs.items()]
    rows = headroom.main([*argv, "--quiet"])
    assert capsys.readouterr() == ("", "")  # no bars, no row lines
    assert [(r.arm, r.seed) for r in rows] == [
        ("bare", 1), ("grown", 1), ("bare", 2), ("grown", 2)
    ]  # fmt: skip
    bare, grown = rows[0], rows[1]
    assert bare.added_params == 0 and grown.added_params > 0
    assert grown.machine["torch_threads"] == 1
    report = (tmp_path / "hr.md").read_text()
    assert "| grown | 2 |" in report and "Command: `python -m benchmarks.headroom" in report
    assert headroom.main(argv) == rows  # nothing rerun
    assert len((tmp_path / "hr.jsonl").read_text().splitlines()) == 4


def test_an_arm_reports_each_epoch(tiny_env_kwargs: dict[str, Any]) -> None:
    world = World.from_preset("Esper-CIFAR-Mini-v0", **{**tiny_env_kwargs, "episode_epochs": 2})
    calls = RecordingSink()
    val, _, _ = headroom.run_arm(world, Arm(name="bare"), 1, calls)
    world.close()
    assert [c[0] for c in calls] == ["start", "step", "step", "end"]
    assert calls[0] == ("start", "bare seed 1", 2) and calls[2] == ("step", val)


def test_growth_report_pairs_the_board_with_the_headroom(
    tmp_path: Path, tiny_env_kwargs: dict[str, Any]
) -> None:
    env = "Esper-CIFAR-Mini-v0"
    setting = {
        "env_kwargs": {},
        "obs_version": 2,
        "env_semantics_version": ENV_SEMANTICS_VERSION,
        "torch_threads": 2,
        "cpu": "cpu",
        "torch_version": "2.13.0",
        "numpy_version": "2.0.0",
        "deterministic_algorithms": False,
        "greedy": True,
    }
    episodes = [
        result("noop", 1000, final_test_accuracy=0.40, episode_return=7.0),
        result("noop", 1001, final_test_accuracy=0.50, episode_return=8.0),
        result("grow", 1000, final_test_accuracy=0.43, episode_return=7.5),
        result("grow", 1001, final_test_accuracy=0.52, episode_return=8.1),
    ]
    (tmp_path / f"{env}.jsonl").write_text(
        "".join(json.dumps({**e.model_dump(mode="json"), **setting}) + "\n" for e in episodes)
    )
    machine: dict[str, object] = {"cpu": "cpu", "torch_threads": 2}
    rows = [
        HeadroomRow(
            env_id=env,
            env_semantics_version=ENV_SEMANTICS_VERSION,
            env_kwargs={},
            arm=arm,
            seed=seed,
            final_val_accuracy=acc,
            final_test_accuracy=acc,
            added_params=0,
            wall_seconds=1.0,
            machine=machine,
        )
        for arm, seed, acc in (
            ("bare", 1, 0.4),
            ("all3", 1, 0.45),
            ("bare", 2, 0.5),
            ("all3", 2, 0.55),
        )
    ]
    (tmp_path / f"headroom_{env}.jsonl").write_text(
        "".join(r.model_dump_json() + "\n" for r in rows)
    )
    out = growth_report.main(
        ["--env", env, "--board-dir", str(tmp_path), "--results-dir", str(tmp_path)]
    )
    text = out.read_text()
    assert "**+5.00 ± 0.00** test-accuracy points" in text
    # grow - noop: +3 and +2 points, mean 2.5 of a 5-point headroom.
    assert "| grow | 2 | +2.50 ±" in text and "| 50% |" in text
    # grow beats noop in 3 of the 4 pairs of runs (0.43 < 0.50).
    assert "| P(> noop) (95% CI) |" in text and "| 0.75 [" in text


def _arm_row(arm: str, seed: int, accuracy: float) -> HeadroomRow:
    return HeadroomRow(
        env_id="Esper-CIFAR-Mini-v0",
        env_semantics_version=ENV_SEMANTICS_VERSION,
        env_kwargs={},
        arm=arm,
        seed=seed,
        final_val_accuracy=accuracy,
        final_test_accuracy=accuracy,
        added_params=0 if arm == "bare" else 100,
        wall_seconds=1.0,
        machine={"cpu": "cpu", "torch_threads": 2},
    )


def test_headroom_report_pairs_each_arm_with_bare() -> None:
    rows = [_arm_row("bare", s, a) for s, a in ((1, 0.40), (2, 0.50), (3, 0.45))]
    rows += [_arm_row("grown", s, a) for s, a in ((1, 0.45), (2, 0.56), (3, 0.49))]
    lines = {
        line.split(" | ")[0]: line.split(" | ") for line in headroom.render(rows, "c").splitlines()
    }
    # bare: sd 5 points, t(2) = 4.303 -> ± 4.303 * 5 / sqrt(3) = 12.42; three values: IQM = mean.
    assert lines["| bare"][1:7] == ["3", "45.00 ± 12.42", "45.00 [40.00, 50.00]", "-", "-", "-"]
    grown = lines["| grown"]
    # Differences 5, 6, 4 points: mean 5, sd 1 -> ± 4.303 / sqrt(3) = 2.48.
    assert grown[2].startswith("50.00 ± ") and grown[4:6] == ["+5.00 ± 2.48", "yes"]
    # P(grown > bare) over the 9 pairs of runs: 0.45 beats 0.40 and ties 0.45, 0.56 beats
    # all three, 0.49 beats two: 6.5 / 9.
    assert grown[6].startswith(f"{6.5 / 9:.2f} [")


def test_rows_of_other_env_semantics_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "headroom.jsonl"
    row = _arm_row("bare", 1, 0.4)
    stale = row.model_copy(update={"env_semantics_version": ENV_SEMANTICS_VERSION - 1})
    path.write_text(row.model_dump_json() + "\n")
    assert headroom.read_rows(path) == [row]
    path.write_text(row.model_dump_json() + "\n" + stale.model_dump_json() + "\n")
    with pytest.raises(ValueError, match="delete the file and run the headroom again"):
        headroom.read_rows(path)
