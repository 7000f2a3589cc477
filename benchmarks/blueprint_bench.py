"""Blueprint benchmark: Tezzeret's cache and background compile on this machine.

Measures, in one run:
- plan-cache lookup latency (median, p99) and the latency of a full cached build;
- the cache hit ratio over simulated Mini episodes (one germination per step,
  random blueprint and slot), cold, with the compiler kept across episodes, and
  with the offered blueprints prewarmed when the environment is built;
- per catalog blueprint: eager vs `torch.compile` forward+backward time, the
  compile's wall time while training continues eagerly on the main thread, the
  training steps served meanwhile and the slowest of them (a step never waits).

Usage:
    python benchmarks/blueprint_bench.py --out benchmarks/results/blueprint_bench.md
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from blueprints.catalog import CATALOG
from blueprints.compiler import Compiler, CompileState
from esper_env.contracts import HOST_PRESETS, TrainConfig

MINI_WIDTHS = HOST_PRESETS["mini"].widths


def lookup_rows(repeats: int) -> list[str]:
    """Median/p99 of cached plan lookups and of cached builds, in microseconds."""
    compiler = Compiler()
    keys = [(ir, c) for ir in CATALOG.values() for c in MINI_WIDTHS]
    for ir, c in keys:
        compiler.plan(ir, c)
    rng = random.Random(0)
    lookups, builds = [], []
    for i in range(repeats):
        ir, c = rng.choice(keys)
        start = time.perf_counter()
        compiler.plan(ir, c)
        lookups.append(time.perf_counter() - start)
        if i % 10 == 0:
            start = time.perf_counter()
            compiler.build(ir, c, seed=i)
            builds.append(time.perf_counter() - start)
    compiler.close()

    def us(xs: list[float], q: float) -> str:
        return f"{statistics.quantiles(xs, n=100)[q - 1] * 1e6:,.1f} µs"

    return [
        f"| plan lookup, hit ({len(lookups)} lookups) | {us(lookups, 50)} | {us(lookups, 99)} |",
        f"| build, hit: lookup + init parameters ({len(builds)} builds, all widths) "
        f"| {us(builds, 50)} | {us(builds, 99)} |",
    ]


def episode_rows(episodes: int) -> list[str]:
    """Hit ratios of simulated Mini episodes under three ways of holding the compiler."""
    steps = TrainConfig().epochs
    names = list(CATALOG)
    rng = random.Random(0)
    plans = [
        [(rng.choice(names), rng.choice(MINI_WIDTHS)) for _ in range(steps)]
        for _ in range(episodes)
    ]

    def run(prewarm: bool, per_episode: bool) -> float:
        compiler = Compiler()
        if prewarm:
            for ir in CATALOG.values():
                for c in MINI_WIDTHS:
                    compiler.plan(ir, c)
        hits = lookups = 0
        for episode in plans:
            if per_episode:
                compiler.close()
                compiler = Compiler()
            before = compiler.stats
            for name, c in episode:
                compiler.build(CATALOG[name], c, seed=0)
            after = compiler.stats
            hits += after.hits - before.hits
            lookups += after.hits + after.misses - before.hits - before.misses
        compiler.close()
        return hits / lookups

    return [
        f"| fresh compiler per episode (cold) | {run(False, True):.1%} |",
        f"| one compiler across {episodes} episodes | {run(False, False):.1%} |",
        f"| offered blueprints prewarmed at env construction | {run(True, False):.1%} |",
    ]


def fwd_bwd_s(module: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    module(x).square().mean().backward()
    return time.perf_counter() - start


def compile_rows(
    names: list[str], shape: tuple[int, ...], repeats: int, timeout: float
) -> list[str]:
    """Eager vs compiled forward+backward per blueprint, and the compile seen from training."""
    channels = shape[1]
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    rows = []
    with Compiler() as compiler:
        for name in names:
            ir = CATALOG[name]
            eager = compiler.build(ir, channels, seed=0)
            module = compiler.build(ir, channels, seed=0, compile=True)
            start = time.perf_counter()
            fwd_bwd_s(module, x)  # the first training forward starts the background compile
            (handle,) = module.compiles.handles().values()
            served = []
            while handle.status.state == CompileState.PENDING:
                if time.perf_counter() - start > timeout:
                    break
                served.append(fwd_bwd_s(module, x))
            compile_s = time.perf_counter() - start
            status = handle.status
            # Interleaved, so that machine noise hits both sides alike.
            eager_s, compiled_s = [], []
            for _ in range(repeats + 2):
                eager_s.append(fwd_bwd_s(eager, x))
                compiled_s.append(fwd_bwd_s(module, x))
            eager_ms = statistics.median(eager_s[2:]) * 1e3
            compiled_ms = statistics.median(compiled_s[2:]) * 1e3
            slowest = f"{max(served) * 1e3:.1f} ms" if served else "-"
            result = (
                f"{compiled_ms:.2f} ms | {eager_ms / compiled_ms:.2f}x"
                if status.state == CompileState.READY
                else f"{status.state.value}: {status.reason} | -"
            )
            rows.append(
                f"| {name} | {sum(p.numel() for p in eager.parameters()):,} | {eager_ms:.2f} ms "
                f"| {result} | {compile_s:.1f} s | {len(served)} | {slowest} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lookups", type=int, default=20000, help="cached lookups timed")
    parser.add_argument("--episodes", type=int, default=200, help="simulated Mini episodes")
    parser.add_argument(
        "--shape", type=int, nargs=4, default=(128, 32, 16, 16), help="N C H W of seed inputs"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed fwd+bwd per median")
    parser.add_argument(
        "--blueprints",
        nargs="*",
        choices=list(CATALOG),
        default=list(CATALOG),
        help="blueprints to compile (none: skip the compile section)",
    )
    parser.add_argument("--compile-timeout", type=float, default=120.0, help="seconds per compile")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()
    torch.manual_seed(0)
    lookups = lookup_rows(args.lookups)
    episodes = episode_rows(args.episodes)
    # A fresh inductor cache, so that compile times are cold, not cache hits of an
    # earlier run (inductor reads the variable when it first compiles).
    with tempfile.TemporaryDirectory(prefix="blueprint-bench-", ignore_cleanup_errors=True) as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp
        compiles = compile_rows(
            args.blueprints, tuple(args.shape), args.repeats, args.compile_timeout
        )

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    lines = [
        "# Blueprint benchmark (Tezzeret)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device cpu.",
        "",
        f"## Cache lookups (catalog x Mini widths {MINI_WIDTHS}, all cached)",
        "",
        "| measure | median | p99 |",
        "| --- | --- | --- |",
        *lookups,
        "",
        f"## Cache hit ratio over Mini episodes ({TrainConfig().epochs} steps, one germination "
        f"per step: random blueprint of {len(CATALOG)}, random slot of widths {MINI_WIDTHS})",
        "",
        "| compiler held | hit ratio |",
        "| --- | --- |",
        *episodes,
        "",
        f"## Eager vs compiled forward+backward, input {tuple(args.shape)} (medians of "
        f"{args.repeats} interleaved steps)",
        "",
        "Compile: inductor (cold cache), static shapes, on the background thread while the main "
        "thread keeps training eagerly (both share the CPUs). `served` = eager training steps "
        "run while the compile was pending; `slowest` = the longest of them.",
        "",
        "| blueprint | params | eager | compiled | speed-up | compile wall | served | slowest |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *compiles,
        "",
        "Targets (issue 5): lookup under 1 ms; hit ratio over 99% over a Mini episode.",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
