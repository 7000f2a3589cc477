"""Runs `esper-urza serve` as a child process and waits until it answers.

For notebooks, sweeps, benchmarks and tests that want a private server on
loopback: `with serve_in_background(db) as server: RemoteLibrary(server.url, ...)`.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from urza.client import TOKEN_ENV, TOKEN_FILE_ENV


def free_port() -> int:
    """A loopback TCP port that nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """A running server: its URL, port, library file, token, process and log file."""

    url: str
    port: int
    db: Path
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Interrupts its process group (as Ctrl-C does) and waits; kills it after 30 s."""
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILLs the server and its Tezzeret worker: no clean-up runs."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_in_background(
    db: Path,
    args: Sequence[str] = (),
    *,
    token: str | None = None,
    timeout: float = 120.0,
) -> ServerProcess:
    """Starts `esper-urza serve --db DB` on a free loopback port; returns once it answers.

    Its output goes to `DB.<port>.log`.

    Args:
        db: The library file.
        args: More `esper-urza serve` arguments (e.g. `["--widths", "16"]`).
        token: Its write token (default: a fresh random one).
        timeout: Seconds to wait for `/health` to answer.

    Raises:
        RuntimeError: If the server exits before it answers.
        TimeoutError: If it does not answer within `timeout`.
    """
    token = secrets.token_urlsafe(24) if token is None else token
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, TOKEN_FILE_ENV)}
    env[TOKEN_ENV] = token
    log = db.with_name(f"{db.name}.{port}.log")
    command = [sys.executable, "-m", "urza", "serve", "--db", str(db), "--port", str(port)]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--log-level", "warning", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, with its worker
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", port, db, token, process, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"esper-urza exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as answer:
                if answer.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                server.kill()
                raise TimeoutError(f"esper-urza did not answer in {timeout:.0f} s") from None
        time.sleep(0.2)
