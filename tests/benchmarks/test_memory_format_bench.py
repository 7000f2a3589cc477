from pathlib import Path

import pytest

from benchmarks import memory_format_bench


def test_the_benchmark_times_both_formats_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    argv = ["--hosts", "mini", "--batch", "4", "--steps", "1", "--repeats", "1", "--threads", "1"]
    assert memory_format_bench.main([*argv, "--out", str(out)]) == out
    text = out.read_text()
    assert "Command: `python -m benchmarks.memory_format_bench --hosts mini" in text
    (row,) = [line for line in text.splitlines() if line.startswith("| mini |")]
    contiguous, channels_last, speedup = (cell.strip() for cell in row.split("|")[3:6])
    # The cells are rounded to 2 decimals, so the ratio of the cells is close, not equal.
    ratio = float(contiguous) / float(channels_last)
    assert float(speedup.rstrip("x")) == pytest.approx(ratio, rel=0.05, abs=0.01)
