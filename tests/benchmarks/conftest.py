from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.leaderboard import run_board


@pytest.fixture(scope="session")
def recorded_board(tmp_path_factory: pytest.TempPathFactory, board_kwargs: dict[str, Any]) -> Path:
    """A Mini board of one heuristic and one random episode on the tiny data (read-only)."""
    out = tmp_path_factory.mktemp("board")
    policies, seeds = ["heuristic", "random"], [1000]
    run_board("Esper-CIFAR-Mini-v0", policies, seeds, env_kwargs=board_kwargs, out_dir=out)
    return out
