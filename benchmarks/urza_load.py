"""Urza load benchmark: concurrent client processes against one real server, on loopback.

Starts `esper-urza serve` (with its Tezzeret worker) on a temporary library,
submits `--designs` distinct designs and waits until each is judged, then runs
`--clients` client processes, each with its own `RemoteLibrary` (one keep-alive
connection), through two phases that start together behind a barrier:

1. GET: `--requests` per client of `entry(hash)` on random pre-populated (validated)
   hashes;
2. POST: `--posts` per client of `submit` of new designs, distinct across clients.

Every request's latency is timed with `time.perf_counter`. `--max-seconds` bounds
each phase: a client stops early once it passes, and the report says so (judging the
pre-populated designs is bounded by `--populate-seconds`). A request that fails with
a transport or HTTP error, or whose answer is wrong, is an error (there should be
none); any other exception ends the benchmark with its traceback.
After the POST phase the library file is read directly to check that every accepted
hash is stored exactly once and no row is corrupt.

Clients and server share the machine's cores, so on a small machine the figures are
a floor of what the service does, not its capacity.

Usage:
    python benchmarks/urza_load.py --clients 8 --requests 200 --posts 25 --designs 50 \
        --out benchmarks/results/urza_load.md
"""

from __future__ import annotations

import argparse
import http.client
import math
import multiprocessing
import os
import platform
import random
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path

import torch

from benchmarks.machine import machine_record
from blueprints.ir import BlueprintIR, C, IRBuilder, Width
from blueprints.library import BlueprintLibrary, BlueprintStatus
from urza.client import RemoteLibrary, UrzaError
from urza.process import serve_in_background

#: What a request may fail with and still be counted (as an error) rather than end the
#: run: the server's refusal, a missing entry, an answer that does not validate
#: (pydantic's ValidationError and CorruptEntryError are ValueErrors), and transport
#: failures (sockets, timeouts, http.client's protocol errors).
EXPECTED_ERRORS = (UrzaError, KeyError, ValueError, OSError, http.client.HTTPException)

#: Seconds the server may take to answer /health, and client processes to start.
STARTUP_SECONDS = 180.0

#: Error messages each client keeps (all are counted).
KEPT_MESSAGES = 5

DEFAULT_WIDTHS = "8,16,32,64,128"


def design(index: int) -> BlueprintIR:
    """A distinct low-rank adapter per `index` (a valid residual seed that Urabrask passes)."""
    b = IRBuilder(f"load_{index}")
    down = b.add("pointwise_conv", b.input, out_channels=Width(den=4, minimum=2))
    return b.build(b.add("pointwise_conv", down, out_channels=C, init_scale=0.01 + index / 1e6))


def _populate(url: str, token: str, count: int, max_seconds: float) -> list[str]:
    """Submits designs 0..count-1 and waits for each verdict; returns their hashes.

    Raises:
        RuntimeError: If a design is not new or is not validated.
        TimeoutError: If the verdicts take more than `max_seconds` in all.
    """
    deadline = time.monotonic() + max_seconds
    with RemoteLibrary(url, token=token) as library:
        answers = [library.submit(design(i), "urza_load:populate") for i in range(count)]
        if not all(a.created for a in answers):
            raise RuntimeError("a pre-populated design was already in the fresh library")
        for answer in answers:
            left = max(deadline - time.monotonic(), 0.0)
            entry = library.settle(answer.hash, timeout=left)
            if entry.status is not BlueprintStatus.VALIDATED:
                raise RuntimeError(f"design {entry.name} was {entry.status.value}: {entry.reasons}")
    return [a.hash for a in answers]


# --- the clients (each in its own process) ------------------------------------------------


@dataclass
class ClientResult:
    """What one client measured in one phase.

    Attributes:
        latencies: Seconds of each request, in order (failed ones included).
        errors: Number of failed requests.
        messages: The first few errors, as "Type: message".
        stopped_early: Whether it stopped at the phase deadline.
        accepted: Hashes the server stored for this client's POSTs (created).
    """

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    messages: list[str] = field(default_factory=list)
    stopped_early: bool = False
    accepted: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        """Counts an error and keeps its message if there is room."""
        self.errors += 1
        if len(self.messages) < KEPT_MESSAGES:
            self.messages.append(message)


_client: RemoteLibrary | None = None
_barrier: Barrier | None = None


def _init_client(url: str, token: str, barrier: Barrier) -> None:
    """A client process's set-up: its own library (one keep-alive connection)."""
    global _client, _barrier
    torch.set_num_threads(1)
    _client = RemoteLibrary(url, token=token)
    _barrier = barrier


def _ready() -> int:
    """Runs once in every client process before the phases, behind the barrier: its pid."""
    assert _barrier is not None, "not a client process"
    _barrier.wait(STARTUP_SECONDS)
    return os.getpid()


def _run_phase(
    phase: str, index: int, hashes: Sequence[str], count: int, first_design: int, seconds: float
) -> ClientResult:
    """One client's share of a phase: `count` requests, or fewer if `seconds` pass.

    Args:
        phase: "GET" (entries of random `hashes`) or "POST" (new designs).
        index: This client's number (seeds its choice of hashes).
        hashes: Pre-populated, validated hashes.
        count: Requests to make.
        first_design: Index of this client's first new design (POST).
        seconds: The phase's time bound, from the barrier.
    """
    assert _client is not None and _barrier is not None, "not a client process"
    library = _client
    result = ClientResult()
    rng = random.Random(index)
    targets = [rng.choice(hashes) for _ in range(count)] if phase == "GET" else []
    designs = [design(first_design + i) for i in range(count)] if phase == "POST" else []
    _barrier.wait(STARTUP_SECONDS)
    deadline = time.perf_counter() + seconds
    for i in range(count):
        if time.perf_counter() > deadline:
            result.stopped_early = True
            break
        start = time.perf_counter()
        try:
            if phase == "GET":
                entry = library.entry(targets[i])
                wrong = entry.hash != targets[i] or entry.status is not BlueprintStatus.VALIDATED
                problem = f"wrong answer: {entry.hash[:12]} {entry.status.value}" if wrong else ""
            else:
                ir = designs[i]
                answer = library.submit(ir, f"urza_load:client{index}")
                if answer.created and answer.hash == ir.canonical_hash:
                    result.accepted.append(answer.hash)
                    problem = ""
                else:
                    problem = f"wrong answer: {answer.hash[:12]} created={answer.created}"
        except EXPECTED_ERRORS as err:
            problem = f"{type(err).__name__}: {err}"
            library.close()  # a request cut off mid-way leaves the connection unusable
        result.latencies.append(time.perf_counter() - start)
        if problem:
            result.fail(problem)
    return result


# --- the parent ---------------------------------------------------------------------------


@dataclass
class PhaseResult:
    """One phase, all clients together.

    Attributes:
        name: "GET" or "POST".
        clients: Client processes.
        planned: Requests the clients were to make.
        wall: Seconds from the barrier to the last client's end.
        results: Each client's result.
    """

    name: str
    clients: int
    planned: int
    wall: float
    results: list[ClientResult]

    @property
    def latencies(self) -> list[float]:
        """Every request's latency (seconds), sorted."""
        return sorted(t for r in self.results for t in r.latencies)

    @property
    def requests(self) -> int:
        """Requests made."""
        return sum(len(r.latencies) for r in self.results)

    @property
    def errors(self) -> int:
        """Requests that failed."""
        return sum(r.errors for r in self.results)

    @property
    def stopped_early(self) -> int:
        """Clients that stopped at the deadline."""
        return sum(r.stopped_early for r in self.results)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile of ascending values (nan if there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(p / 100 * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def _wait(barrier: Barrier, futures: Sequence[Future[object]]) -> None:
    """Waits at `barrier` with the clients; if it breaks, raises a client's own failure.

    Raises:
        RuntimeError: From the exception of a client that failed before the barrier.
        threading.BrokenBarrierError: If the barrier broke for another reason.
    """
    try:
        barrier.wait(STARTUP_SECONDS)
    except threading.BrokenBarrierError:
        for future in futures:
            if future.done() and future.exception() is not None:
                raise RuntimeError("a client failed before the barrier") from future.exception()
        raise


def _start_clients(pool: ProcessPoolExecutor, barrier: Barrier, clients: int) -> set[int]:
    """Starts every client process (each takes one task: they meet at the barrier).

    Raises:
        RuntimeError: If fewer than `clients` distinct processes answered.
    """
    futures = [pool.submit(_ready) for _ in range(clients)]
    _wait(barrier, futures)
    pids = {f.result() for f in futures}
    if len(pids) != clients:
        raise RuntimeError(f"{clients} client processes wanted, {len(pids)} started")
    return pids


def _phase(
    pool: ProcessPoolExecutor,
    barrier: Barrier,
    phase: str,
    clients: int,
    count: int,
    hashes: Sequence[str],
    first_design: int,
    seconds: float,
) -> PhaseResult:
    """Runs one phase on every client process at once and times it from the barrier."""
    futures: list[Future[ClientResult]] = [
        pool.submit(_run_phase, phase, k, hashes, count, first_design + k * count, seconds)
        for k in range(clients)
    ]
    _wait(barrier, futures)  # every client holds one task: one task per process
    start = time.perf_counter()
    results = [f.result() for f in futures]
    return PhaseResult(phase, clients, clients * count, time.perf_counter() - start, results)


def _check_library(db: Path, accepted: Sequence[str], expected_rows: int) -> tuple[bool, str]:
    """Reads `db` directly: is every accepted hash stored exactly once, with no problems?"""
    with BlueprintLibrary(db) as library:
        entries = library.entries()
        problems = list(library.problems)
    stored = Counter(e.hash for e in entries)
    missing = [h for h in accepted if stored[h] == 0]
    repeated = [h for h, n in stored.items() if n > 1]
    twice_accepted = [h for h, n in Counter(accepted).items() if n > 1]
    ok = not (missing or repeated or twice_accepted or problems) and len(entries) == expected_rows
    if ok:
        line = (
            f"Library check: all {len(accepted)} accepted hashes stored exactly once "
            f"({len(entries)} rows in all), problems == []."
        )
    else:
        line = (
            f"Library check FAILED: {len(accepted)} accepted, {len(entries)} rows "
            f"(expected {expected_rows}), missing {missing[:5]}, stored more than once "
            f"{repeated[:5]}, accepted twice {twice_accepted[:5]}, problems {problems[:5]}."
        )
    return ok, line


def _table(phases: Sequence[PhaseResult]) -> list[str]:
    lines = [
        "| phase | clients | requests (planned) | errors | wall (s) | requests/s "
        "| p50 (ms) | p99 (ms) | max (ms) | clients stopped early |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for p in phases:
        lat = p.latencies
        rate = p.requests / p.wall if p.wall > 0 else math.nan
        top = lat[-1] if lat else math.nan
        lines.append(
            f"| {p.name} | {p.clients} | {p.requests} ({p.planned}) | {p.errors} "
            f"| {p.wall:.2f} | {rate:.0f} | {percentile(lat, 50) * 1e3:.2f} "
            f"| {percentile(lat, 99) * 1e3:.2f} | {top * 1e3:.2f} | {p.stopped_early} |"
        )
    return lines


def run(args: argparse.Namespace, command: str) -> tuple[str, bool]:
    """Runs the benchmark; returns its markdown report and whether everything passed.

    Args:
        args: The parsed command line.
        command: The command line, as the report records it.
    """
    with tempfile.TemporaryDirectory(prefix="urza_load_") as tmp:
        db = Path(tmp) / "library.sqlite"
        server = serve_in_background(db, ["--widths", args.widths], timeout=STARTUP_SECONDS)
        try:
            start = time.perf_counter()
            hashes = _populate(server.url, server.token, args.designs, args.populate_seconds)
            populate_seconds = time.perf_counter() - start
            with BlueprintLibrary(db) as library:
                rows_before = len(library.entries())
            context = multiprocessing.get_context("spawn")
            barrier = context.Barrier(args.clients + 1)
            with ProcessPoolExecutor(
                args.clients,
                mp_context=context,
                initializer=_init_client,
                initargs=(server.url, server.token, barrier),
            ) as pool:
                pids = _start_clients(pool, barrier, args.clients)
                seconds = args.max_seconds
                get = _phase(pool, barrier, "GET", args.clients, args.requests, hashes, 0, seconds)
                post = _phase(
                    pool, barrier, "POST", args.clients, args.posts, hashes, args.designs, seconds
                )
            phases = [get, post]
            accepted_hashes = [h for r in post.results for h in r.accepted]
            ok, check = _check_library(db, accepted_hashes, rows_before + len(accepted_hashes))
        finally:
            server.stop()
    machine = machine_record(torch.device("cpu"))
    passed = ok and all(p.errors == 0 for p in phases)
    lines = [
        "# Urza load (loopback)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {platform.machine()}, "
        f"Python {platform.python_version()}, torch {machine['torch']}. Server: one "
        f"`esper-urza serve` (uvicorn, one process) with its Tezzeret worker judging at widths "
        f"{args.widths}; {len(pids)} client processes (spawn), each one `RemoteLibrary` on one "
        "keep-alive connection.",
        "",
        f"Pre-populated: {args.designs} designs, submitted and judged (all validated) in "
        f"{populate_seconds:.1f} s. GET: `entry(hash)` of random pre-populated hashes, "
        f"{args.requests} per client. POST: `submit` of new designs, {args.posts} per client, "
        f"distinct across clients (the worker judges them meanwhile). Each phase starts on a "
        f"barrier; wall time runs from it to the last client's end; requests/s is all requests "
        f"over that wall time. Latency is per request, client side (`time.perf_counter`, "
        f"including the client's JSON validation). Bound: {args.max_seconds:g} s per phase.",
        "",
        "This is loopback on a small machine where clients, server and worker share the cores "
        f"({machine['cpus']} here): the figures are a floor, not the service's capacity.",
        "",
        *_table(phases),
        "",
        check,
    ]
    for p in phases:
        if p.stopped_early:
            lines.append(
                f"{p.name}: {p.stopped_early} of {p.clients} clients stopped at --max-seconds "
                f"{args.max_seconds:g}: {p.requests} of {p.planned} requests made."
            )
        for k, r in enumerate(p.results):
            for message in r.messages:
                lines.append(f"{p.name} client {k} error: {message}")
    lines.append("Result: " + ("PASS" if passed else "FAIL") + ".")
    return "\n".join(lines) + "\n", passed


def main(argv: list[str] | None = None) -> int:
    """Parses the arguments, runs the benchmark, prints and writes its report.

    Returns:
        0 if there were no errors and the library check passed, else 1.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="client processes")
    parser.add_argument("--requests", type=int, default=200, help="GETs per client")
    parser.add_argument("--posts", type=int, default=25, help="POSTs per client")
    parser.add_argument("--designs", type=int, default=50, help="designs pre-populated")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="bound of each phase")
    parser.add_argument(
        "--populate-seconds",
        type=float,
        default=300.0,
        help="bound of submitting and judging the pre-populated designs",
    )
    parser.add_argument(
        "--widths", default=DEFAULT_WIDTHS, help="slot widths the server's worker judges at"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/urza_load.md"))
    args = parser.parse_args(argv)
    for name in ("clients", "requests", "posts", "designs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if argv is None:
        command = "python " + shlex.join(sys.argv)
    else:
        command = "python benchmarks/urza_load.py " + shlex.join(argv)
    text, passed = run(args, command)
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
