from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_runs_and_reports_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    args = ["--data", "synthetic", "--host", "impaired", "--train-images", "256"]
    args += ["--val-images", "100", "--rounds", "1", "--device", "cpu", "--out", str(out)]
    script = ROOT / "benchmarks" / "kasmina_overhead.py"
    subprocess.run([sys.executable, str(script), *args], check=True, cwd=ROOT, timeout=120)
    text = out.read_text()
    for row in (
        "| (a) Tolaria, all slots dormant |",
        "| (b) Tolaria, one TRAINING seed |",
        "| counterfactual, host prefix reused |",
        "3 active slots (TRAINING, BLENDING at alpha 0.5, HOLDING: 7 alpha variants)",
    ):
        assert row in text
