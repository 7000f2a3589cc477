import json
import multiprocessing
import sqlite3

import pytest

from blueprints.catalog import CATALOG
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
    assert library.entry(good).status == BlueprintStatus.DRAFT
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
