"""`leaderboard validate` re-runs each recorded policy under the recorded settings, exactly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO

from agents.rollout import EpisodeResult
from benchmarks import leaderboard
from benchmarks.leaderboard import BOARD_DIR, read_board, run_board, validate_board
from benchmarks.machine import cpu_model

ENV = "Esper-CIFAR-Mini-v0"


def _rewrite(board: Path, entries: list[Any]) -> None:
    board.write_text("".join(e.model_dump_json() + "\n" for e in entries))


def test_a_record_names_the_machine_versions_and_device(recorded_board: Path) -> None:
    for entry in read_board(recorded_board / f"{ENV}.jsonl"):
        assert entry.cpu == cpu_model() and entry.torch_threads == torch.get_num_threads()
        assert entry.torch_version == torch.__version__
        assert entry.numpy_version == np.__version__
        assert entry.device == "cpu" and entry.deterministic_algorithms is False
        assert entry.greedy and entry.agent_sha256 is None and entry.agent_command is None


def test_validate_reproduces_a_faithful_board_exactly(recorded_board: Path) -> None:
    entries = read_board(recorded_board / f"{ENV}.jsonl")
    assert any(e.seeds_germinated for e in entries)  # the re-runs exercise lifecycle operations
    results = validate_board(ENV, recorded_board)
    assert [(v.policy, v.seed, v.mismatches, v.machine) for v in results] == [
        ("heuristic", 1000, (), ()),
        ("random", 1000, (), ()),
    ]


def test_validate_detects_a_tampered_result_and_actions_the_policy_did_not_choose(
    recorded_board: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heuristic, random = read_board(recorded_board / f"{ENV}.jsonl")
    # The smallest change a float can take: the check is exact.
    nudged = float(np.nextafter(heuristic.final_test_accuracy, 1.0))
    other = [list(a) for a in random.actions]
    other[2] = [0, 0, 0, 0] if other[2] != [0, 0, 0, 0] else [1, 0, 0, 0]
    _rewrite(
        tmp_path / f"{ENV}.jsonl",
        [
            heuristic.model_copy(update={"final_test_accuracy": nudged}),
            random.model_copy(update={"actions": other}),
        ],
    )
    first, second = validate_board(ENV, tmp_path)
    assert first.mismatches == (
        f"final_test_accuracy: recorded {nudged!r}, re-run {heuristic.final_test_accuracy!r}",
    )
    assert second.mismatches[0] == (
        f"actions differ at step 3: policy chose {random.actions[2]}, recorded {other[2]}"
    )
    assert leaderboard.main(["validate", "--env", ENV, "--out-dir", str(tmp_path)]) == 1
    assert "0/2 episodes reproduced" in capsys.readouterr().out


def test_validate_uses_the_recorded_threads_and_device(
    recorded_board: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = read_board(recorded_board / f"{ENV}.jsonl")
    threads = torch.get_num_threads()
    _rewrite(tmp_path / f"{ENV}.jsonl", [entries[0].model_copy(update={"torch_threads": 2})])
    made: list[dict[str, Any]] = []
    during: list[int] = []
    real_make, real_run = gym.make, leaderboard.run_episode

    def make(env_id: str, **kwargs: Any) -> gym.Env:
        made.append(kwargs)
        return real_make(env_id, **kwargs)

    def run(*args: Any, **kwargs: Any) -> EpisodeResult:
        during.append(torch.get_num_threads())
        return real_run(*args, **kwargs)

    monkeypatch.setattr(leaderboard.gym, "make", make)
    monkeypatch.setattr(leaderboard, "run_episode", run)
    try:
        (result,) = validate_board(ENV, tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert during == [2]
    assert made[0]["train"]["device"] == "cpu"
    assert "torch_threads" not in " ".join(result.machine)


def test_an_agent_on_the_board_records_its_file_and_command_and_must_still_match(
    tmp_path: Path, board_kwargs: dict[str, Any]
) -> None:
    env = gym.make(ENV, **board_kwargs)
    model = MaskablePPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    model.env_semantics_version = leaderboard.ENV_SEMANTICS_VERSION
    path = tmp_path / "agent.zip"
    model.save(path)
    spec = f"maskable_ppo:{path}"
    with pytest.raises(ValueError, match="pass --agent-command"):
        run_board(ENV, [spec], [1000], env_kwargs=board_kwargs, out_dir=tmp_path)
    command = "python scripts/train_agent.py --algo maskable_ppo"
    run_board(
        ENV, [spec], [1000], env_kwargs=board_kwargs, out_dir=tmp_path,
        agent_commands={spec: command},
    )  # fmt: skip
    (entry,) = read_board(tmp_path / f"{ENV}.jsonl")
    assert entry.agent_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry.agent_command == command
    assert all(v.ok for v in validate_board(ENV, tmp_path))
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="is not the agent on the board"):
        validate_board(ENV, tmp_path)


COMMITTED = BOARD_DIR / f"{ENV}.jsonl"


@pytest.mark.skipif(not COMMITTED.exists(), reason=f"no committed board at {COMMITTED}")
def test_the_committed_mini_board_replays_exactly_here() -> None:
    root = os.environ.get("ESPER_DATA_DIR")
    if not root:
        pytest.skip("ESPER_DATA_DIR is not set: real CIFAR-10 is needed (.ci/run sets it)")
    entries = read_board(COMMITTED)
    if entries[0].cpu != cpu_model():
        pytest.skip(f"the board was recorded on {entries[0].cpu!r}, this is {cpu_model()!r}")
    # One growing episode: the heuristic's first seed (about 30 s on 2 threads).
    threads = torch.get_num_threads()
    try:
        (result,) = validate_board(ENV, policy="heuristic", seeds=[entries[0].seed])
    finally:
        torch.set_num_threads(threads)
    assert result.ok, result.mismatches
