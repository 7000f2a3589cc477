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


def make_reproducible(device: torch.device) -> bool:
    """Sets what makes a run on `device` replay exactly; returns whether that took settings.

    On CUDA: PyTorch's deterministic algorithms, cuBLAS's fixed workspace
    (`CUBLAS_WORKSPACE_CONFIG`, read when cuBLAS starts: call this before any CUDA work)
    and no cuDNN autotuning. On the CPU nothing is needed beyond `fix_threads`: its
    kernels are deterministic at a fixed thread count.
    """
    if device.type != "cuda":
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    return True


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
