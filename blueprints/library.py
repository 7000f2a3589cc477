"""Urza: the persistent blueprint library (SQLite, standard library `sqlite3`).

One row per blueprint, keyed by canonical hash: IR JSON, name, version, status
(draft, validated, rejected), Urabrask's evaluation (JSON) and provenance
("builtin", or who designed it, e.g. "karn:<step>"). The database runs in WAL
mode and every write is one `BEGIN IMMEDIATE` transaction, so readers in other
processes never block and writers queue (up to `timeout` seconds).

A row whose JSON no longer validates (or no longer hashes to its key) is never
handed out: `get`/`entry` raise `CorruptEntryError`, and listings skip it,
append a description to `problems` and log a warning.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from blueprints.catalog import CATALOG
from blueprints.evaluate import EvaluationReport, evaluate
from blueprints.ir import BlueprintIR, check_seed_contract

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUILTIN = "builtin"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blueprints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    ir_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('draft', 'validated', 'rejected')),
    evaluation_json TEXT,
    provenance TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


class BlueprintStatus(StrEnum):
    """Lifecycle of a library entry; only VALIDATED entries are offered to slots."""

    DRAFT = "draft"
    VALIDATED = "validated"
    REJECTED = "rejected"


class CorruptEntryError(ValueError):
    """A stored row that no longer validates; it is never handed out."""


@dataclass(frozen=True)
class LibraryEntry:
    """One validated-on-read library row.

    Attributes:
        hash: Canonical hash of the blueprint (the key).
        ir: The blueprint.
        status: Draft, validated or rejected.
        provenance: "builtin" or who designed it.
        evaluation: Urabrask's report, once evaluated.
        seq: Insertion order.
    """

    hash: str
    ir: BlueprintIR
    status: BlueprintStatus
    provenance: str
    evaluation: EvaluationReport | None
    seq: int

    @property
    def name(self) -> str:
        """The blueprint's name."""
        return self.ir.metadata.name


_COLUMNS = "seq, hash, ir_json, status, provenance, evaluation_json"
_Row = tuple[int, str, str, str, str, str | None]


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
                self._conn.execute(_SCHEMA)
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
        status: BlueprintStatus = BlueprintStatus.DRAFT,
    ) -> str:
        """Stores a seed blueprint and returns its hash.

        Adding a blueprint whose computation is already stored (same canonical
        hash) changes nothing and returns the existing hash.

        Args:
            ir: A seed blueprint.
            provenance: "builtin" or who designed it, e.g. "karn:120".
            status: Initial status; leave DRAFT until it has been evaluated.

        Raises:
            SeedContractError: If `ir` is not a residual seed.
        """
        check_seed_contract(ir)
        if not provenance:
            raise ValueError("provenance must name where the blueprint came from")
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
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
        return ir.canonical_hash

    def set_status(self, ir_hash: str, status: BlueprintStatus) -> None:
        """Sets an entry's status."""
        self._update(ir_hash, "status = ?", (BlueprintStatus(status).value,))

    def record_evaluation(self, ir_hash: str, report: EvaluationReport) -> BlueprintStatus:
        """Stores Urabrask's report and sets VALIDATED or REJECTED from it; returns the status."""
        if report.ir_hash != ir_hash:
            raise ValueError(f"report is for blueprint {report.ir_hash[:12]}, not {ir_hash[:12]}")
        status = BlueprintStatus.VALIDATED if report.passed else BlueprintStatus.REJECTED
        self._update(
            ir_hash, "status = ?, evaluation_json = ?", (status.value, report.model_dump_json())
        )
        return status

    def _update(self, ir_hash: str, assignments: str, values: tuple[str, ...]) -> None:
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
            if self.entry(ir_hash).status == BlueprintStatus.DRAFT:
                status = self.record_evaluation(ir_hash, evaluate(ir, channels_for_eval))
                if status != BlueprintStatus.VALIDATED:
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

    def entries(self, status: BlueprintStatus | None = None) -> list[LibraryEntry]:
        """Entries (optionally of one status) in insertion order; corrupt rows are skipped."""
        if status is None:
            rows = self._conn.execute(f"SELECT {_COLUMNS} FROM blueprints ORDER BY seq")
        else:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM blueprints WHERE status = ? ORDER BY seq",
                (BlueprintStatus(status).value,),
            )
        good = []
        for row in rows.fetchall():
            try:
                good.append(_parse(row))
            except CorruptEntryError as err:
                if str(err) not in self.problems:
                    self.problems.append(str(err))
                    log.warning("%s", err)
        return good

    def offered(self) -> list[LibraryEntry]:
        """Validated entries in a stable order: built-ins in catalog order, then by insertion."""
        rank = {ir.canonical_hash: i for i, ir in enumerate(CATALOG.values())}
        entries = self.entries(BlueprintStatus.VALIDATED)

        def order(e: LibraryEntry) -> tuple[int, int]:
            if e.provenance == BUILTIN and e.hash in rank:
                return (0, rank[e.hash])
            return (1, e.seq)

        return sorted(entries, key=order)


def _parse(row: _Row) -> LibraryEntry:
    seq, ir_hash, ir_json, status, provenance, evaluation_json = row
    try:
        ir = BlueprintIR.from_json(ir_json)
        evaluation = (
            None
            if evaluation_json is None
            else EvaluationReport.model_validate_json(evaluation_json)
        )
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
        seq=seq,
    )
