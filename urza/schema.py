"""The wire format of the Urza service: what the server answers and the client reads."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from blueprints.evaluate import EvaluationReport
from blueprints.ir import BlueprintIR
from blueprints.library import BlueprintStatus, CorruptEntryError, Judgement, LibraryEntry

#: Version of these response models; a client refuses a server that speaks another.
API_VERSION = 1

#: Header that carries the API version on every answer.
VERSION_HEADER = "X-Urza-Api-Version"


class Submitted(BaseModel):
    """The answer to `POST /blueprints`.

    Attributes:
        hash: Canonical hash of the design (its key from now on).
        name: The design's name.
        status: `submitted` for a new design, else the stored entry's status.
        created: Whether this request stored it (False: it was there already).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hash: str
    name: str
    status: BlueprintStatus
    created: bool


class Entry(BaseModel):
    """One library entry as `GET /blueprints/{hash}` answers it.

    Attributes:
        hash: Canonical hash (the key).
        seq: Insertion order in the server's library.
        name: The blueprint's name.
        status: submitted, validated or rejected.
        provenance: "builtin" or who designed it.
        created_at: When it was stored (UTC, ISO 8601).
        evaluation: Urabrask's report, once measured.
        reasons: Why it was rejected (empty unless rejected).
        judgement: How it was judged (widths, device, compiled), once judged.
        ir: The blueprint as JSON.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    hash: str
    seq: int
    name: str
    status: BlueprintStatus
    provenance: str
    created_at: str
    evaluation: EvaluationReport | None
    reasons: tuple[str, ...]
    judgement: Judgement | None
    ir: dict[str, Any]

    @classmethod
    def of(cls, entry: LibraryEntry) -> Entry:
        """The wire form of a library entry."""
        return cls(
            hash=entry.hash,
            seq=entry.seq,
            name=entry.name,
            status=entry.status,
            provenance=entry.provenance,
            created_at=entry.created_at,
            evaluation=entry.evaluation,
            reasons=entry.reasons,
            judgement=entry.judgement,
            ir=entry.ir.model_dump(mode="json"),
        )

    def to_library_entry(self) -> LibraryEntry:
        """The library entry, its IR validated and checked against its hash.

        Raises:
            CorruptEntryError: If the IR does not validate or hashes to another key.
        """
        try:
            ir = BlueprintIR.model_validate_json(json.dumps(self.ir))
        except ValidationError as err:
            message = f"the server sent an invalid blueprint {self.hash!r}: {err}"
            raise CorruptEntryError(message) from err
        ir = verified_ir(ir, self.hash)
        rejection = self.reasons[0] if self.reasons and self.evaluation is None else None
        return LibraryEntry(
            hash=self.hash,
            ir=ir,
            status=self.status,
            provenance=self.provenance,
            evaluation=self.evaluation,
            rejection=rejection,
            judgement=self.judgement,
            seq=self.seq,
            created_at=self.created_at,
        )


class Listing(BaseModel):
    """The answer to `GET /blueprints`: one page of entries in insertion order.

    Attributes:
        entries: The page.
        next_after: The `after` of the next page, or None when this is the last.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    entries: list[Entry]
    next_after: int | None


def verified_ir(ir: BlueprintIR, expected_hash: str) -> BlueprintIR:
    """`ir` if it hashes to `expected_hash`; a fetched design is trusted by its hash only.

    Raises:
        CorruptEntryError: If it does not.
    """
    if ir.canonical_hash != expected_hash:
        raise CorruptEntryError(
            f"the server sent blueprint {ir.canonical_hash!r} for {expected_hash!r}: "
            "refusing a design that is not the one asked for"
        )
    return ir
