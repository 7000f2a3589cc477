"""What a measurement ran on, and the settings that make it replay: CPU model, threads, versions."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch


def fix_threads(threads: int) -> None:
    """Fixes torch's intra-op CPU threads: CPU results depend on it, so every run sets it.

    Raises:
        ValueError: if `threads` < 1.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else `platform.processor()`)."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_record(device: torch.device) -> dict[str, object]:
    """The machine and library versions a result was measured with, as plain data."""
    record: dict[str, object] = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    return record
