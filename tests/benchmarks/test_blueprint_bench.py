from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_and_reports_cache_measures(tmp_path: Path) -> None:
    # No blueprint compiled (a cold inductor compile takes ~30 s here); the
    # compile path itself is tested in tests/blueprints/test_compiler.py.
    out = tmp_path / "report.md"
    args = ["--lookups", "300", "--episodes", "3", "--shape", "4", "8", "4", "4"]
    args += ["--blueprints", "--out", str(out)]
    script = ROOT / "benchmarks" / "blueprint_bench.py"
    subprocess.run([sys.executable, str(script), *args], check=True, cwd=ROOT, timeout=300)
    text = out.read_text()
    for row in (
        "| plan lookup, hit (300 lookups) |",
        "| fresh compiler per episode (cold) |",
        "| offered blueprints prewarmed at env construction | 100.0% |",
        "| blueprint | params | eager | compiled | speed-up | compile wall | served | slowest |",
    ):
        assert row in text
