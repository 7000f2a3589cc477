"""Tezzeret's worker: judges the library's submissions, one at a time, oldest first.

It runs in its own process (the app starts it), so the server never waits on a
lowering, a compile or Urabrask's measurements, and a crash here cannot take the
server down. It keeps no state of its own, so it may be killed at any moment: an
entry it was judging is still `submitted` in the file and is judged again on restart.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Sequence

import torch

from blueprints.compiler import torch_compile
from blueprints.library import BlueprintLibrary

log = logging.getLogger(__name__)


def run(
    db: str,
    *,
    widths: Sequence[int],
    device: str = "cpu",
    compile: bool = False,
    poll_seconds: float = 0.1,
    threads: int = 1,
) -> None:
    """Judges submissions in the library at `db` for as long as its parent process lives.

    Args:
        db: The SQLite library file.
        widths: Slot widths every design is judged at.
        device: Where Tezzeret and Urabrask run.
        compile: Also `torch.compile` each plan.
        poll_seconds: Wait between two looks when nothing is waiting.
        threads: Torch threads (the server's own process needs the rest).
    """
    torch.set_num_threads(threads)
    # Started by a server, it ends with it, even when the server is killed outright.
    parent = multiprocessing.parent_process()
    with BlueprintLibrary(db) as library:
        while parent is None or parent.is_alive():
            waiting = library.submitted(limit=1)
            if not waiting:
                time.sleep(poll_seconds)
                continue
            entry = library.settle(
                waiting[0].hash,
                widths,
                device=device,
                compile_fn=torch_compile if compile else None,
            )
            log.info("tezzeret: %s (%s) %s", entry.name, entry.hash[:12], entry.status.value)
