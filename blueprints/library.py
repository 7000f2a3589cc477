"""Urza: the persistent blueprint library (SQLite, standard library `sqlite3`).

One row per blueprint, keyed by canonical hash: IR JSON, name, version, status
(submitted, validated, rejected), Urabrask's evaluation (JSON), the reason for a
rejection that came before any measurement, and provenance ("builtin", or who
designed it, e.g. "karn:<episode>:<step>"). The database runs in WAL mode and
every write is one `BEGIN IMMEDIATE` transaction, so readers in other processes
never block, never see half an entry, and writers queue (up to `timeout`
seconds). The same file serves one process or many, and the Urza service
(`urza`) over HTTP.

A row whose JSON no longer validates (or no longer hashes to its key) is never
handed out: `get`/`entry` raise `CorruptEntryError`, and listings skip it,
append a description to `problems` and log a warning.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from blueprints.catalog import CATALOG
from blueprints.compiler import CompileFn, Compiler, CompileState
from blueprints.evaluate import EvaluationReport, evaluate_widths
from blueprints.ir import BlueprintIR, check_seed_contract

log = logging.getLogger(__name__)

#: 2: status "draft" became "submitted"; columns `rejection` (a verdict reached before
#: Urabrask measured: a design that does not compile) and `judgement_json` (how it was
#: judged).
SCHEMA_VERSION = 2
BUILTIN = "builtin"

_TABLE = """
CREATE TABLE {name} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    ir_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('submitted', 'validated', 'rejected')),
    evaluation_json TEXT,
    rejection TEXT,
    judgement_json TEXT,
    provenance TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""

# Version 1 to 2: SQLite cannot alter a CHECK constraint, so the table is rebuilt.
_MIGRATE_FROM_1 = (
    _TABLE.format(name="blueprints_v2"),
    "INSERT INTO blueprints_v2 (seq, hash, name, version, ir_json, status, evaluation_json, "
    "provenance, created_at) SELECT seq, hash, name, version, ir_json, CASE status WHEN "
    "'draft' THEN 'submitted' ELSE status END, evaluation_json, provenance, created_at "
    "FROM blueprints",
    "DROP TABLE blueprints",
    "ALTER TABLE blueprints_v2 RENAME TO blueprints",
)


class BlueprintStatus(StrEnum):
    """Lifecycle of a library entry; only VALIDATED entries are offered to slots."""

    SUBMITTED = "submitted"  # stored, waiting for Tezzeret and Urabrask's verdict
    VALIDATED = "validated"
    REJECTED = "rejected"


class Judgement(BaseModel):
    """How an entry was judged (`BlueprintLibrary.settle`).

    Attributes:
        widths: Slot widths it was lowered and evaluated at.
        device: Where.
        compiled: Whether Tezzeret also compiled it with `torch.compile`.
        seconds: Wall time of the judgement.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    widths: tuple[int, ...]
    device: str
    compiled: bool
    seconds: float


class CorruptEntryError(ValueError):
    """A stored row that no longer validates; it is never handed out."""


@dataclass(frozen=True)
class LibraryEntry:
    """One validated-on-read library row.

    Attributes:
        hash: Canonical hash of the blueprint (the key).
        ir: The blueprint.
        status: Submitted, validated or rejected.
        provenance: "builtin" or who designed it.
        evaluation: Urabrask's report, once evaluated.
        rejection: Why it was rejected before Urabrask could measure it, if so.
        judgement: How it was judged, once judged by `settle`.
        seq: Insertion order.
        created_at: When it was first stored (UTC, ISO 8601).
    """

    hash: str
    ir: BlueprintIR
    status: BlueprintStatus
    provenance: str
    evaluation: EvaluationReport | None
    rejection: str | None
    judgement: Judgement | None
    seq: int
    created_at: str

    @property
    def name(self) -> str:
        """The blueprint's name."""
        return self.ir.metadata.name

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the entry was rejected (empty unless REJECTED)."""
        if self.status is not BlueprintStatus.REJECTED:
            return ()
        if self.rejection is not None:
            return (self.rejection,)
        return self.evaluation.reasons if self.evaluation is not None else ()


_COLUMNS = (
    "seq, hash, ir_json, status, provenance, evaluation_json, rejection, judgement_json, created_at"
)
_Row = tuple[int, str, str, str, str, str | None, str | None, str | None, str]


class BlueprintLibrary:
    """Urza: a SQLite-backed store of seed blueprints.

    Args:
        path: Database file; created (with its schema) on first use.
        timeout: Seconds a write waits for another process's write to finish.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = os.fspath(path)
        #: Rows skipped by listings because they no longer validate (each reported once).
        self.problems: list[str] = []
        # isolation_level=None: transactions are explicit, one per write.
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._conn.execute(_TABLE.format(name="blueprints"))
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version == 1:
                for statement in _MIGRATE_FROM_1:
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: blueprint library schema version {version}, this code reads "
                    f"{SCHEMA_VERSION}; use a new file or migrate it"
                )

    def close(self) -> None:
        """Closes the connection."""
        self._conn.close()

    def __enter__(self) -> BlueprintLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(
        self,
        ir: BlueprintIR,
        provenance: str,
        status: BlueprintStatus = BlueprintStatus.SUBMITTED,
    ) -> str:
        """Stores a seed blueprint and returns its hash (see `store`)."""
        self.store(ir, provenance, status)
        return ir.canonical_hash

    def store(
        self,
        ir: BlueprintIR,
        provenance: str,
        status: BlueprintStatus = BlueprintStatus.SUBMITTED,
    ) -> bool:
        """Stores a seed blueprint in one transaction; True if it was not stored before.

        A blueprint whose computation is already stored (same canonical hash)
        changes nothing: the first entry, its provenance and status stay.

        Args:
            ir: A seed blueprint.
            provenance: "builtin" or who designed it, e.g. "karn:3:12".
            status: Initial status; leave SUBMITTED until it has been judged (`settle`).

        Raises:
            SeedContractError: If `ir` is not a residual seed.
        """
        check_seed_contract(ir)
        if not provenance:
            raise ValueError("provenance must name where the blueprint came from")
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            cursor = self._conn.execute(
                "INSERT OR IGNORE INTO blueprints (hash, name, version, ir_json, status, "
                "provenance) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    ir.canonical_hash,
                    ir.metadata.name,
                    ir.metadata.version,
                    ir.to_json(),
                    BlueprintStatus(status).value,
                    provenance,
                ),
            )
        return cursor.rowcount == 1

    def set_status(self, ir_hash: str, status: BlueprintStatus) -> None:
        """Sets an entry's status."""
        self._update(ir_hash, "status = ?", (BlueprintStatus(status).value,))

    def record_evaluation(
        self, ir_hash: str, report: EvaluationReport, judgement: Judgement | None = None
    ) -> BlueprintStatus:
        """Stores Urabrask's report and sets VALIDATED or REJECTED from it; returns the status."""
        if report.ir_hash != ir_hash:
            raise ValueError(f"report is for blueprint {report.ir_hash[:12]}, not {ir_hash[:12]}")
        status = BlueprintStatus.VALIDATED if report.passed else BlueprintStatus.REJECTED
        self._verdict(ir_hash, status, report.model_dump_json(), None, judgement)
        return status

    def reject(self, ir_hash: str, reason: str, judgement: Judgement | None = None) -> None:
        """Rejects an entry for a reason found before Urabrask measured it (a failed compile)."""
        self._verdict(ir_hash, BlueprintStatus.REJECTED, None, reason, judgement)

    def _verdict(
        self,
        ir_hash: str,
        status: BlueprintStatus,
        evaluation_json: str | None,
        rejection: str | None,
        judgement: Judgement | None,
    ) -> None:
        judgement_json = None if judgement is None else judgement.model_dump_json()
        self._update(
            ir_hash,
            "status = ?, evaluation_json = ?, rejection = ?, judgement_json = ?",
            (status.value, evaluation_json, rejection, judgement_json),
        )

    def settle(
        self,
        ir_hash: str,
        widths: Sequence[int],
        *,
        device: torch.device | str = "cpu",
        compile_fn: CompileFn | None = None,
    ) -> LibraryEntry:
        """Judges a submitted entry (Tezzeret, then Urabrask) and returns it with its verdict.

        An entry that already has a verdict is returned as it is. With `compile_fn`,
        Tezzeret first compiles the blueprint's plan at every width and runs it once;
        then Urabrask evaluates it at every width (`evaluate_widths`). The first
        failure rejects it, with its reason.

        Args:
            ir_hash: The entry to judge.
            widths: Channel counts of the slots it may grow in.
            device: Where Tezzeret and Urabrask run.
            compile_fn: How to compile (`blueprints.compiler.torch_compile`); None
                skips compiling (seconds per width on a CPU; envs run eagerly there).
        """
        entry = self.entry(ir_hash)
        if entry.status is not BlueprintStatus.SUBMITTED:
            return entry
        start = time.perf_counter()
        failure = (
            None if compile_fn is None else _compile_failure(entry.ir, widths, device, compile_fn)
        )
        report = None if failure is not None else evaluate_widths(entry.ir, widths, device=device)
        judgement = Judgement(
            widths=tuple(sorted(set(widths))),
            device=str(torch.device(device)),
            compiled=compile_fn is not None,
            seconds=time.perf_counter() - start,
        )
        if report is None:
            assert failure is not None
            self.reject(ir_hash, failure, judgement)
        else:
            self.record_evaluation(ir_hash, report, judgement)
        return self.entry(ir_hash)

    def _update(self, ir_hash: str, assignments: str, values: tuple[str | None, ...]) -> None:
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            cursor = self._conn.execute(
                f"UPDATE blueprints SET {assignments} WHERE hash = ?", (*values, ir_hash)
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no blueprint {ir_hash!r} in {self.path}")

    def ensure_builtins(self, channels_for_eval: int = 16) -> list[str]:
        """Seeds the catalog into the library, evaluating those not yet evaluated.

        Args:
            channels_for_eval: Width the built-ins are evaluated at.

        Returns:
            The built-ins' hashes, in catalog order.
        """
        hashes = []
        for ir in CATALOG.values():
            ir_hash = self.add(ir, BUILTIN)
            entry = self.settle(ir_hash, [channels_for_eval])
            if entry.status is not BlueprintStatus.VALIDATED:
                log.warning("built-in blueprint %s failed evaluation", ir.metadata.name)
            hashes.append(ir_hash)
        return hashes

    def get(self, ir_hash: str) -> BlueprintIR:
        """The blueprint stored under `ir_hash`.

        Raises:
            KeyError: If there is no such entry.
            CorruptEntryError: If the stored row no longer validates.
        """
        return self.entry(ir_hash).ir

    def entry(self, ir_hash: str) -> LibraryEntry:
        """The full entry stored under `ir_hash` (see `get` for errors)."""
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM blueprints WHERE hash = ?", (ir_hash,)
        ).fetchone()
        if row is None:
            raise KeyError(f"no blueprint {ir_hash!r} in {self.path}")
        return _parse(row)

    def entries(
        self,
        status: BlueprintStatus | None = None,
        *,
        after: int = 0,
        limit: int | None = None,
    ) -> list[LibraryEntry]:
        """Entries (optionally of one status) in insertion order; corrupt rows are skipped.

        Args:
            status: Only entries with this status.
            after: Only entries inserted after the one with this `seq` (paging).
            limit: At most this many rows are read.
        """
        where, values = "seq > ?", [after]
        if status is not None:
            where += " AND status = ?"
            values.append(BlueprintStatus(status).value)
        sql = f"SELECT {_COLUMNS} FROM blueprints WHERE {where} ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            values.append(limit)
        good = []
        for row in self._conn.execute(sql, values).fetchall():
            try:
                good.append(_parse(row))
            except CorruptEntryError as err:
                if str(err) not in self.problems:
                    self.problems.append(str(err))
                    log.warning("%s", err)
        return good

    def submitted(self, limit: int = 1) -> list[LibraryEntry]:
        """The oldest entries still waiting for a verdict."""
        return self.entries(BlueprintStatus.SUBMITTED, limit=limit)

    def offered(self) -> list[LibraryEntry]:
        """Validated entries in offer order (see `offer_order`)."""
        return offer_order(self.entries(BlueprintStatus.VALIDATED))


def offer_order(entries: Sequence[LibraryEntry]) -> list[LibraryEntry]:
    """A stable order for offering entries: built-ins in catalog order, then by insertion."""
    rank = {ir.canonical_hash: i for i, ir in enumerate(CATALOG.values())}

    def order(e: LibraryEntry) -> tuple[int, int]:
        if e.provenance == BUILTIN and e.hash in rank:
            return (0, rank[e.hash])
        return (1, e.seq)

    return sorted(entries, key=order)


def _compile_failure(
    ir: BlueprintIR, widths: Sequence[int], device: torch.device | str, compile_fn: CompileFn
) -> str | None:
    """Why Tezzeret cannot compile `ir` at one of `widths`, or None if it compiles at each."""
    with Compiler(compile_fn=compile_fn) as compiler:
        for channels in sorted(set(widths)):
            module = compiler.build(ir, channels, seed=0, device=device, compile=True)
            # A module's first training forward starts its compile in the background.
            module(torch.zeros(2, channels, 8, 8, device=device, requires_grad=True))
            assert module.compiles is not None
            for handle in module.compiles.handles().values():
                status = handle.wait()
                if status.state is not CompileState.READY:
                    return f"Tezzeret cannot compile it at {channels} channels: {status.reason}"
    return None


def _parse(row: _Row) -> LibraryEntry:
    seq, ir_hash, ir_json, status, provenance, evaluation_json, rejection, judged, created_at = row
    try:
        ir = BlueprintIR.from_json(ir_json)
        evaluation = (
            None
            if evaluation_json is None
            else EvaluationReport.model_validate_json(evaluation_json)
        )
        judgement = None if judged is None else Judgement.model_validate_json(judged)
    except ValidationError as err:
        raise CorruptEntryError(
            f"blueprint {ir_hash!r} (row {seq}) no longer validates: {err}"
        ) from err
    if ir.canonical_hash != ir_hash:
        raise CorruptEntryError(
            f"blueprint {ir_hash!r} (row {seq}) now hashes to {ir.canonical_hash!r}: its IR or "
            "the hash format changed"
        )
    return LibraryEntry(
        hash=ir_hash,
        ir=ir,
        status=BlueprintStatus(status),
        provenance=provenance,
        evaluation=evaluation,
        rejection=rejection,
        judgement=judgement,
        seq=seq,
        created_at=created_at,
    )
