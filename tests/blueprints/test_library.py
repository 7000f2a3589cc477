import json
import multiprocessing
import sqlite3

import pytest

from blueprints.catalog import CATALOG
from blueprints.compiler import torch_compile
from blueprints.evaluate import evaluate
from blueprints.ir import BlueprintIR, C, IRBuilder, SeedContractError, Width
from blueprints.library import (
    BlueprintLibrary,
    BlueprintStatus,
    CorruptEntryError,
)

WRITES = 15


def _adapter(rank_den: int, scale: float, name: str = "karn_adapter") -> BlueprintIR:
    b = IRBuilder(name)
    down = b.add("pointwise_conv", b.input, out_channels=Width(den=rank_den, minimum=2))
    return b.build(b.add("pointwise_conv", down, out_channels=C, init_scale=scale))


def _writer(path: str, count: int) -> None:
    """Runs in a second process: `count` single-transaction writes."""
    with BlueprintLibrary(path) as library:
        for i in range(count):
            ir = _adapter(3, 0.01 + i / 1000, name=f"child_{i}")
            library.add(ir, f"karn:{i}", status=BlueprintStatus.VALIDATED)


@pytest.fixture
def library(tmp_path):
    with BlueprintLibrary(tmp_path / "urza.sqlite") as lib:
        yield lib


def test_builtins_are_seeded_validated_and_offered_in_catalog_order(library):
    hashes = library.ensure_builtins(channels_for_eval=8)
    assert hashes == [ir.canonical_hash for ir in CATALOG.values()]
    offered = library.offered()
    assert [e.name for e in offered] == list(CATALOG)
    assert all(e.provenance == "builtin" and e.evaluation.passed for e in offered)
    assert offered[0].evaluation.channels == 8
    # Idempotent: a second call evaluates nothing again and adds nothing.
    first_eval = offered[0].evaluation
    assert library.ensure_builtins(channels_for_eval=8) == hashes
    assert library.offered()[0].evaluation == first_eval
    assert len(library.entries()) == len(CATALOG)


def test_designs_are_offered_only_once_validated_after_builtins(library, tmp_path):
    library.ensure_builtins(channels_for_eval=8)
    good = library.add(_adapter(4, 0.05), "karn:12")
    bad = library.add(_adapter(2, 4.0, name="loud"), "karn:13")
    assert library.entry(good).status == BlueprintStatus.SUBMITTED
    assert good not in [e.hash for e in library.offered()]

    assert library.record_evaluation(good, evaluate(library.get(good), 8)) == "validated"
    assert library.record_evaluation(bad, evaluate(library.get(bad), 8)) == "rejected"
    offered = library.offered()
    assert [e.hash for e in offered][-1] == good
    assert len(offered) == len(CATALOG) + 1
    assert library.entry(bad).evaluation.reasons

    library.set_status(good, BlueprintStatus.REJECTED)
    assert good not in [e.hash for e in library.offered()]

    # Survives reopening, in the same order.
    library.set_status(good, BlueprintStatus.VALIDATED)
    with BlueprintLibrary(tmp_path / "urza.sqlite") as again:
        assert [e.hash for e in again.offered()] == [e.hash for e in library.offered()]
        assert again.get(good) == library.get(good)


def test_adding_the_same_computation_twice_keeps_one_row(library):
    first = library.add(_adapter(4, 0.05, name="one"), "karn:1")
    second = library.add(_adapter(4, 0.05, name="renamed"), "karn:2")
    assert first == second
    (entry,) = library.entries()
    assert entry.provenance == "karn:1" and entry.name == "one"


def test_bad_writes_are_refused_with_clear_errors(library):
    b = IRBuilder("pooled")
    with pytest.raises(SeedContractError):
        library.add(b.build(b.add("global_avg_pool", b.input)), "karn:1")
    with pytest.raises(ValueError, match="provenance"):
        library.add(CATALOG["norm"], "")
    with pytest.raises(KeyError, match="no blueprint 'feed'"):
        library.set_status("feed", BlueprintStatus.VALIDATED)
    with pytest.raises(KeyError):
        library.get("feed")
    h = library.add(CATALOG["norm"], "builtin")
    with pytest.raises(ValueError, match="report is for blueprint"):
        library.record_evaluation(h, evaluate(CATALOG["bottleneck"], 8))


def test_corrupt_rows_are_reported_never_handed_out(library):
    library.ensure_builtins(channels_for_eval=8)
    victim = CATALOG["bottleneck"].canonical_hash
    tampered = CATALOG["norm"].canonical_hash
    doc = json.loads(CATALOG["norm"].to_json())
    doc["nodes"][0]["attrs"]["weight_init"] = 0.5  # valid IR, but no longer this hash
    with sqlite3.connect(library.path) as raw:
        raw.execute("UPDATE blueprints SET ir_json = ? WHERE hash = ?", ('{"nodes": 3}', victim))
        raw.execute("UPDATE blueprints SET ir_json = ? WHERE hash = ?", (json.dumps(doc), tampered))
    with pytest.raises(CorruptEntryError, match="no longer validates"):
        library.get(victim)
    with pytest.raises(CorruptEntryError, match="now hashes to"):
        library.get(tampered)
    names = [e.name for e in library.offered()]
    assert "bottleneck" not in names and "norm" not in names
    assert len(names) == len(CATALOG) - 2
    assert len(library.problems) == 2
    library.offered()
    assert len(library.problems) == 2  # reported once


def test_unknown_schema_version_is_refused(tmp_path):
    path = tmp_path / "future.sqlite"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        BlueprintLibrary(path)


def test_concurrent_writer_process_and_reader(tmp_path):
    path = tmp_path / "shared.sqlite"
    with BlueprintLibrary(path) as library:
        library.add(CATALOG["norm"], "builtin", status=BlueprintStatus.VALIDATED)
        child = multiprocessing.get_context("spawn").Process(
            target=_writer, args=(str(path), WRITES)
        )
        child.start()
        seen = []
        own = 0
        while child.is_alive() or own < WRITES:
            seen.append(len(library.offered()))
            if own < WRITES:
                library.add(_adapter(5, 0.01 + own / 1000, name=f"parent_{own}"), f"karn:p{own}")
                own += 1
        child.join(60)
        assert child.exitcode == 0
        final = library.offered()
    assert seen == sorted(seen)  # readers only ever see committed, growing state
    assert len(final) == 1 + WRITES  # parent's own adds are drafts, not offered
    assert {e.name for e in final[1:]} == {f"child_{i}" for i in range(WRITES)}
    with BlueprintLibrary(path) as reopened:
        assert len(reopened.entries()) == 1 + 2 * WRITES
        assert reopened.problems == []


_V1_TABLE = """
CREATE TABLE blueprints (
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


def test_a_version_1_file_is_migrated_in_place(tmp_path):
    path = tmp_path / "v1.sqlite"
    draft, kept = _adapter(4, 0.05, name="draft"), CATALOG["norm"]
    report = evaluate(kept, 8)
    with sqlite3.connect(path) as raw:
        raw.execute(_V1_TABLE)
        for ir, status, evaluation in ((draft, "draft", None), (kept, "validated", report)):
            raw.execute(
                "INSERT INTO blueprints (hash, name, version, ir_json, status, evaluation_json, "
                "provenance) VALUES (?, ?, 1, ?, ?, ?, 'karn:1')",
                (
                    ir.canonical_hash,
                    ir.metadata.name,
                    ir.to_json(),
                    status,
                    None if evaluation is None else evaluation.model_dump_json(),
                ),
            )
        raw.execute("PRAGMA user_version = 1")
    with BlueprintLibrary(path) as library:
        first, second = library.entries()
    assert (first.hash, first.status, first.evaluation) == (
        draft.canonical_hash,
        BlueprintStatus.SUBMITTED,
        None,
    )
    assert (second.status, second.evaluation, second.provenance) == (
        BlueprintStatus.VALIDATED,
        report,
        "karn:1",
    )
    assert first.seq < second.seq and first.created_at
    assert first.rejection is None and first.judgement is None
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    with BlueprintLibrary(path) as again:  # opening a migrated file changes nothing
        assert again.entries() == [first, second]
        later = again.entry(again.add(_adapter(5, 0.05, name="later"), "karn:2"))
        assert later.seq > second.seq  # insertion order goes on


def test_store_says_whether_the_design_was_new(library):
    assert library.store(_adapter(4, 0.05), "karn:1") is True
    assert library.store(_adapter(4, 0.05, name="again"), "karn:2") is False


def test_settle_judges_a_submission_once_at_every_width(library):
    h = library.add(_adapter(4, 0.05), "karn:1")
    entry = library.settle(h, [16, 8])
    assert entry.status is BlueprintStatus.VALIDATED and entry.reasons == ()
    assert entry.evaluation.channels == 16  # every width passed: the widest report is kept
    assert (entry.judgement.widths, entry.judgement.compiled) == ((8, 16), False)
    assert entry.judgement.device == "cpu" and entry.judgement.seconds > 0
    assert library.settle(h, [8]) == entry  # a verdict is final: nothing is judged again
    loud = library.add(_adapter(2, 3.0, name="loud"), "karn:2")
    rejected = library.settle(loud, [8, 16])
    assert rejected.status is BlueprintStatus.REJECTED
    assert rejected.evaluation.channels == 8  # the first failing width
    assert rejected.reasons == rejected.evaluation.reasons and rejected.reasons
    assert [e.hash for e in library.submitted(limit=5)] == []


def test_settle_with_a_compile_that_fails_rejects_it_with_the_reason(library):
    def broken(graph, example):
        raise RuntimeError("inductor is out of order")

    h = library.add(_adapter(4, 0.05), "karn:1")
    entry = library.settle(h, [8], compile_fn=broken)
    assert entry.status is BlueprintStatus.REJECTED and entry.evaluation is None
    assert entry.reasons == (
        "Tezzeret cannot compile it at 8 channels: RuntimeError: inductor is out of order",
    )
    assert h not in [e.hash for e in library.offered()]


def test_settle_compiles_with_torch_compile(library):
    h = library.add(_adapter(4, 0.05), "karn:1")
    entry = library.settle(h, [8], compile_fn=torch_compile)
    assert entry.status is BlueprintStatus.VALIDATED and entry.rejection is None
    assert entry.judgement.compiled


def test_entries_page_and_submitted_come_oldest_first(library):
    hashes = [library.add(_adapter(4, 0.01 + i / 1000, name=f"d{i}"), "karn:1") for i in range(4)]
    first = library.entries(limit=2)
    assert [e.hash for e in first] == hashes[:2]
    assert [e.hash for e in library.entries(after=first[-1].seq)] == hashes[2:]
    assert [e.hash for e in library.submitted(limit=3)] == hashes[:3]
