"""Nothing lost under load, nothing corrupt after a kill: several client processes, one server."""

import json
import multiprocessing
import os
import signal
import time
import urllib.request
from pathlib import Path

from urza_server import TOKEN, Server, design, start_server

from blueprints.library import BlueprintLibrary, BlueprintStatus
from urza.client import RemoteLibrary

CLIENTS = 4
DESIGNS = 12


def _poster_and_reader(url: str, offset: int, results: "multiprocessing.Queue[object]") -> None:
    """Posts every design (in its own order, so all clients race on each) and reads them back."""
    accepted, seen = [], []
    with RemoteLibrary(url, token=TOKEN) as library:
        for i in range(DESIGNS):
            index = 100 + (i + offset) % DESIGNS
            accepted.append(library.submit(design(index), f"client:{offset}").hash)
            # Every read is parsed and checked against its hash: a half-written entry fails here.
            seen.append(len(library.entries()))
            library.entry(accepted[-1])
    results.put((accepted, seen))


def test_many_clients_posting_and_reading_store_each_design_exactly_once(
    server: Server,
) -> None:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_poster_and_reader, args=(server.url, k * 3, results))
        for k in range(CLIENTS)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    expected = {design(100 + i).canonical_hash for i in range(DESIGNS)}
    for accepted, seen in answers:
        assert set(accepted) == expected
        assert seen == sorted(seen)  # readers only ever see committed, growing state
    with BlueprintLibrary(server.db) as library:
        rows = [e.hash for e in library.entries()]
        assert library.problems == []
    assert all(rows.count(h) == 1 for h in expected)


def _stream(url: str, acknowledged: "multiprocessing.Queue[str]") -> None:
    """Posts designs until the server dies, reporting each one it acknowledged."""
    with RemoteLibrary(url, token=TOKEN, timeout=10) as library:
        for i in range(10_000):
            acknowledged.put(library.submit(design(1000 + i), "stream").hash)


def test_a_server_killed_mid_write_restarts_with_every_acknowledged_entry(
    tmp_path: Path,
) -> None:
    db = tmp_path / "library.sqlite"
    first = start_server(db)
    context = multiprocessing.get_context("spawn")
    acknowledged = context.Queue()
    client = context.Process(target=_stream, args=(first.url, acknowledged))
    client.start()
    hashes = [acknowledged.get(timeout=120) for _ in range(30)]
    first.kill()  # SIGKILL, server and worker, while the client is still posting
    client.join(60)
    assert client.exitcode != 0  # it was cut off mid-stream
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not acknowledged.empty():
        hashes.append(acknowledged.get(timeout=1))

    second = start_server(db)
    try:
        with BlueprintLibrary(db) as library:
            stored = {e.hash: e for e in library.entries()}
            assert library.problems == []  # no corrupt row
        assert set(hashes) <= set(stored)  # every acknowledged design survived
        with RemoteLibrary(second.url, token=TOKEN) as remote:
            # Submissions the killed worker never judged are judged after the restart.
            last = remote.settle(hashes[-1], timeout=300)
            assert last.status is BlueprintStatus.VALIDATED
            remote.submit(design(5), "after-restart")  # and it takes new writes
    finally:
        second.stop()


def _gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie that nobody reaped counts as exited)."""
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")


def test_the_worker_ends_with_a_killed_server(tmp_path: Path) -> None:
    server = start_server(tmp_path / "library.sqlite")
    with urllib.request.urlopen(f"{server.url}/health", timeout=10) as answer:
        worker = json.loads(answer.read())["tezzeret"]["pid"]
    os.kill(server.process.pid, signal.SIGKILL)  # the server alone: nothing stops its worker
    server.process.wait(30)
    deadline = time.monotonic() + 30
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker)
