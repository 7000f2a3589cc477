"""The performance board: regenerates `benchmarks/PERFORMANCE.md` from every benchmark.

Runs, each as its own command, writing its report under `benchmarks/results/`:

- `data_bench`: CIFAR-10 load times and augmented batch throughput;
- `kasmina_overhead`: Kasmina/Tolaria epoch time against plain PyTorch loops;
- `blueprint_bench`: Tezzeret's plan cache and background compiles;
- `memory_format_bench`: channels-last against contiguous batches;
- `env_throughput` (measured here): environment steps per second of one
  `Esper-CIFAR-Mini-v0`, and of `gym.make_vec` over 1, 2 and 4 envs, sync and async,
  and the cost of the telemetry log per step;

then gathers the reports, each with the command that produced it, into
`PERFORMANCE.md`. `--reuse NAME...` gathers a report as it is instead of
rerunning its benchmark (the board says which were rerun).

Usage:
    ESPER_DATA_DIR=../shared/datasets python -m benchmarks.performance
    ESPER_DATA_DIR=../shared/datasets python -m benchmarks.performance \
        --reuse data_bench kasmina_overhead blueprint_bench
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import esper_env  # noqa: F401  (registers the envs)
from agents.cli import parse_key_values
from agents.policies import make_policy
from esper_env.telemetry import JsonlSink, read_events

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
THROUGHPUT_ENV = "Esper-CIFAR-Mini-v0"
VECTOR_SIZES = (1, 2, 4)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark script and its report.

    Attributes:
        name: Report name: `benchmarks/results/<name>.md`.
        module: The benchmark's module, run with `python -m` from the repository root.
        what: One line on what it measures.
    """

    name: str
    module: str
    what: str

    def command(self, results_dir: Path) -> list[str]:
        """The command that regenerates the report."""
        return [sys.executable, "-m", self.module, "--out", str(results_dir / f"{self.name}.md")]


EXTERNAL = (
    Benchmark("data_bench", "benchmarks.data_bench", "CIFAR-10 loading and batch throughput"),
    Benchmark(
        "kasmina_overhead",
        "benchmarks.kasmina_overhead",
        "Kasmina/Tolaria epoch time against plain PyTorch loops",
    ),
    Benchmark(
        "blueprint_bench",
        "benchmarks.blueprint_bench",
        "Tezzeret's plan cache and background compiles",
    ),
    Benchmark(
        "memory_format_bench",
        "benchmarks.memory_format_bench",
        "channels-last against contiguous batches, one plain PyTorch training step",
    ),
)
THROUGHPUT = "env_throughput"
NAMES = (*(b.name for b in EXTERNAL), THROUGHPUT)


# --- env throughput -------------------------------------------------------------------------


def single_env_rate(env_id: str, steps: int, kwargs: dict[str, Any]) -> tuple[float, float]:
    """Steps per second of one env driven by the random legal policy, and with WAIT only.

    Resets (every `episode_epochs` steps) are inside the timed span; the first is not.
    """
    env = gym.make(env_id, **kwargs)
    rates = []
    for policy_name in ("random", "noop"):
        policy = make_policy(policy_name, env, seed=0)
        obs, info = env.reset(seed=0)
        start = time.perf_counter()
        for _ in range(steps):
            obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
            if terminated or truncated:
                obs, info = env.reset()
        rates.append(steps / (time.perf_counter() - start))
    env.close()
    return rates[0], rates[1]


@dataclass(frozen=True)
class TelemetryCost:
    """What the event log adds to a step.

    Attributes:
        steps: Env steps logged.
        events_per_step: Events written per step (lifecycle, epoch and step events).
        sink_us_per_event: JSON encoding, write and flush of one event by `JsonlSink`.
        build_us_per_event: Building one event (paid with or without a sink).
        seconds_per_step: Mean wall time of one of those steps.
    """

    steps: int
    events_per_step: float
    sink_us_per_event: float
    build_us_per_event: float
    seconds_per_step: float

    @property
    def sink_share(self) -> float:
        """The sink's time over the step's time."""
        return self.events_per_step * self.sink_us_per_event * 1e-6 / self.seconds_per_step


def telemetry_cost(env_id: str, steps: int, kwargs: dict[str, Any], folder: Path) -> TelemetryCost:
    """Runs the random legal policy with the event log on, then times writing its events.

    The events the run wrote are read back and written again through a fresh
    `JsonlSink` (and rebuilt from their fields) until a quarter second has passed,
    so the per-event figures come from the run's own mix of events.
    """
    env = gym.make(env_id, **kwargs, telemetry_dir=str(folder), telemetry_name="run")
    policy = make_policy("random", env, seed=0)
    obs, info = env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, info = env.step(policy.act(obs, info))
        if terminated or truncated:
            obs, info = env.reset()
    seconds = time.perf_counter() - start
    env.close()
    events = read_events(folder / "run.jsonl")
    sink = JsonlSink(folder, "again")
    written, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.25:
        for event in events:
            sink(event)
        written += len(events)
    sink_seconds = time.perf_counter() - start
    sink.close()
    built, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.25:
        for event in events:
            type(event).model_validate(dict(event))
        built += len(events)
    build_seconds = time.perf_counter() - start
    return TelemetryCost(
        steps=steps,
        events_per_step=len(events) / steps,
        sink_us_per_event=sink_seconds / written * 1e6,
        build_us_per_event=build_seconds / built * 1e6,
        seconds_per_step=seconds / steps,
    )


def vector_rate(env_id: str, num_envs: int, mode: str, steps: int, kwargs: dict[str, Any]) -> float:
    """Env steps per second (all sub-envs together) of `gym.make_vec` stepping WAIT.

    The vector env uses Gymnasium's default autoreset (next-step): the step after
    an episode ends resets that sub-env, and those reset steps are counted too.
    """
    # Forking a process whose torch thread pools already run can deadlock the child.
    vector_kwargs = {"context": "spawn"} if mode == "async" else {}
    envs = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode=mode, vector_kwargs=vector_kwargs, **kwargs
    )
    envs.reset(seed=0)
    wait = np.zeros((num_envs, 4), dtype=np.int64)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(wait)
    elapsed = time.perf_counter() - start
    envs.close()
    return num_envs * steps / elapsed


def load_text() -> str:
    """The 1-minute load average and CPU count: how busy the machine was."""
    return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def env_throughput_report(
    env_id: str,
    steps: int,
    sizes: tuple[int, ...],
    kwargs: dict[str, Any],
    command: str,
    modes: tuple[str, ...] = ("sync", "async"),
) -> str:
    """Measures single-env and vector-env throughput and returns the Markdown report."""
    before = load_text()
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    random_rate, wait_rate = single_env_rate(env_id, steps, kwargs)
    with tempfile.TemporaryDirectory() as folder:
        cost = telemetry_cost(env_id, steps, kwargs, Path(folder))
    rows = []
    for mode in modes:
        base = None
        for n in sizes:
            rate = vector_rate(env_id, n, mode, steps, kwargs)
            base = base or rate
            rows.append(f"| {mode} | {n} | {rate:.2f} | {rate / base:.2f} |")
    # Only the load before the run tells of other work: async vector envs load the
    # CPUs themselves with one process per sub-env.
    caveat = (
        "\n\nThe CPUs were oversubscribed (load above the CPU count) when this run began:\n"
        "the rates are lower bounds, and the speed-ups partly measure more processes\n"
        "claiming a larger share of busy CPUs. Rerun on a quiet machine for scaling figures."
        if busy
        else ""
    )
    kwargs_text = f"kwargs `{kwargs}`" if kwargs else "the registered preset"
    return f"""# Environment throughput

Command: `{command}`

Env: `{env_id}` ({kwargs_text}). One step is one epoch of host training on the
env's data plus validation. Machine: {platform.machine()}, {os.cpu_count()} CPUs,
torch {torch.__version__} (torch threads: {torch.get_num_threads()}), device
{"cuda" if torch.cuda.is_available() else "cpu"}; {before} at the start,
{load_text()} at the end (this run's own sub-env processes included).{caveat}

| env | policy | steps | steps/s |
| --- | --- | --- | --- |
| single | random legal actions | {steps} | {random_rate:.2f} |
| single | WAIT | {steps} | {wait_rate:.2f} |

Telemetry (Nissa's event log, `telemetry_dir`), from a run of the random legal
policy with the log on ({cost.steps} steps, {cost.seconds_per_step:.2f} s each):
{cost.events_per_step:.1f} events per step. Writing one (JSON, write, flush: what
the log adds) takes {cost.sink_us_per_event:.0f} µs, {cost.sink_share:.3%} of a step;
building one, paid with or without a log, {cost.build_us_per_event:.0f} µs.

Vector envs (`gym.make_vec`, WAIT in every sub-env, {steps} vector steps each;
steps/s counts every sub-env's steps; async runs one spawned process per sub-env):

| mode | envs | env steps/s | speed-up over 1 env |
| --- | --- | --- | --- |
{chr(10).join(rows)}
"""


# --- the board ------------------------------------------------------------------------------


def demote(report: str) -> tuple[str, str]:
    """Splits a report into its title and its body with headings one level deeper."""
    lines = report.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("a benchmark report must start with a '# title' line")
    body = ["#" + line if line.startswith("#") else line for line in lines[1:]]
    return lines[0][2:], "\n".join(body).strip()


def gather(results_dir: Path, rerun: set[str]) -> str:
    """Composes PERFORMANCE.md from the reports in `results_dir`.

    Raises:
        FileNotFoundError: A report is missing (run its benchmark first).
    """
    sections = []
    for name in NAMES:
        path = results_dir / f"{name}.md"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: run `python -m benchmarks.performance` without --reuse {name}"
            )
        title, body = demote(path.read_text(encoding="utf-8"))
        status = "regenerated by this run" if name in rerun else "gathered as committed"
        sections.append(
            f"## {title}\n\nReport: [`results/{name}.md`](results/{name}.md) ({status}).\n\n{body}"
        )
    index = "\n".join(f"- `{b.name}`: {b.what}." for b in EXTERNAL)
    return f"""# Performance

Every figure below comes from a benchmark script run on the machine it names, with
its exact command; `python -m benchmarks.performance` reruns them all and rewrites
this page (`--reuse NAME...` keeps a committed report instead of rerunning it).
Ratios against plain PyTorch loops are the headline figures: absolute times depend
on the machine and on what else ran on it.

{index}
- `{THROUGHPUT}`: environment steps per second, single and vector envs (1, 2, 4), and
  what the telemetry log adds to a step.

{(chr(10) * 2).join(sections)}
"""


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", nargs="*", default=[], choices=NAMES, metavar="NAME")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "PERFORMANCE.md")
    parser.add_argument("--env", default=THROUGHPUT_ENV, help="env of the throughput benchmark")
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    parser.add_argument("--steps", type=int, default=12, help="steps timed per configuration")
    parser.add_argument("--vector-sizes", type=int, nargs="+", default=list(VECTOR_SIZES))
    parser.add_argument(
        "--vector-modes", nargs="+", default=["sync", "async"], choices=["sync", "async"]
    )
    args = parser.parse_args(argv)
    rerun = set(NAMES) - set(args.reuse)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for bench in EXTERNAL:
        if bench.name in rerun:
            command = bench.command(args.results_dir)
            print(f"running {shlex.join(command)}", flush=True)
            subprocess.run(command, check=True, cwd=ROOT)
    if THROUGHPUT in rerun:
        command = "python -m benchmarks.performance " + shlex.join(
            argv if argv is not None else sys.argv[1:]
        )
        report = env_throughput_report(
            args.env,
            args.steps,
            tuple(args.vector_sizes),
            parse_key_values(args.env_kwargs),
            command,
            tuple(args.vector_modes),
        )
        (args.results_dir / f"{THROUGHPUT}.md").write_text(report, encoding="utf-8")
    args.out.write_text(gather(args.results_dir, rerun), encoding="utf-8")
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
