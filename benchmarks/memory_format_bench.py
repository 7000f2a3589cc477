"""Channels-last against contiguous batches: one SGD step of the CIFAR hosts, plain PyTorch.

`esper_env.data.DeviceBatches` yields channels-last batches because convolutions then
take faster kernels. This measures that choice in one run: the same host, the same
batch, one training step (forward, backward, SGD with Nesterov momentum) with the
input in each memory format, best of `--repeats` timings of `--steps` steps.

    python -m benchmarks.memory_format_bench --threads 2
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.machine import cpu_model, fix_threads
from esper_env.contracts import HOST_PRESETS
from esper_env.kasmina.host import CifarHost

RESULTS = Path(__file__).parent / "results" / "memory_format_bench.md"
FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def step_seconds(
    host: str, memory_format: torch.memory_format, batch: int, steps: int, repeats: int
) -> float:
    """Best mean seconds per training step of `host` on a random batch in `memory_format`."""
    torch.manual_seed(0)
    model = CifarHost(HOST_PRESETS[host])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,))

    def train(n: int) -> None:
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    train(3)  # warm-up: kernel selection and allocator
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        train(steps)
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", nargs="+", default=["mini", "default"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    fix_threads(args.threads)
    lines = [
        "| host | batch | contiguous ms/step | channels-last ms/step | speed-up |",
        "| --- | --- | --- | --- | --- |",
    ]
    for host in args.hosts:
        ms = {
            name: 1000 * step_seconds(host, fmt, args.batch, args.steps, args.repeats)
            for name, fmt in FORMATS.items()
        }
        speedup = ms["contiguous"] / ms["channels_last"]
        lines.append(
            f"| {host} | {args.batch} | {ms['contiguous']:.2f} | {ms['channels_last']:.2f} "
            f"| {speedup:.2f}x |"
        )
        print(lines[-1], flush=True)
    command = "python -m benchmarks.memory_format_bench " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    text = (
        "# Channels-last batches\n\n"
        f"Command: `{command}`\n\n"
        f"One SGD training step of the bare host (plain PyTorch), best of {args.repeats} "
        f"runs of {args.steps} steps. Machine: {cpu_model()} ({platform.machine()}), "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return args.out


if __name__ == "__main__":
    print(f"wrote {main()}")
