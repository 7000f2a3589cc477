"""A real `esper-urza serve` on a free loopback port, and designs to send it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from blueprints.ir import BlueprintIR, C, IRBuilder, Width
from urza.process import ServerProcess, serve_in_background

TOKEN = "test-token-0123456789abcdef"

Server = ServerProcess


def start_server(db: Path, *args: str) -> ServerProcess:
    """`serve_in_background` with the tests' token."""
    return serve_in_background(db, args, token=TOKEN)


def design(index: int, *, loud: bool = False) -> BlueprintIR:
    """A distinct low-rank adapter per `index`; `loud` ones fail Urabrask's output-scale check."""
    b = IRBuilder(f"design_{index}")
    down = b.add("pointwise_conv", b.input, out_channels=Width(den=4, minimum=2))
    scale = 3.0 + index / 100000 if loud else 0.01 + index / 100000
    return b.build(b.add("pointwise_conv", down, out_channels=C, init_scale=scale))


def db_rows(db: Path) -> int:
    """Rows in a library file, counted with sqlite3 directly."""
    with sqlite3.connect(db) as raw:
        return int(raw.execute("SELECT COUNT(*) FROM blueprints").fetchone()[0])
