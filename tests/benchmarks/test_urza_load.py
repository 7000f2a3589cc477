"""The Urza load benchmark, at a tiny size: a real server, two client processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.urza_load import main


@pytest.mark.slow  # about 20 s: a server and two client processes start
def test_benchmark_reports_both_phases_without_errors_and_checks_the_library(
    tmp_path: Path,
) -> None:
    out = tmp_path / "urza_load.md"
    args = ["--clients", "2", "--requests", "10", "--posts", "3", "--designs", "5"]
    assert main([*args, "--out", str(out)]) == 0
    text = out.read_text()
    assert "| GET | 2 | 20 (20) | 0 |" in text
    assert "| POST | 2 | 6 (6) | 0 |" in text
    assert "Library check: all 6 accepted hashes stored exactly once" in text
    assert "problems == []" in text
    assert "Result: PASS." in text
    assert "python benchmarks/urza_load.py --clients 2 --requests 10" in text
