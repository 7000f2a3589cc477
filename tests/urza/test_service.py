"""The Urza service against a real server: submissions, verdicts, reads, and bad requests."""

import http.client
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from urza_server import TOKEN, Server, db_rows, design, start_server

from blueprints.catalog import CATALOG
from blueprints.ir import BlueprintIR, C, IRBuilder, Width
from blueprints.library import BlueprintStatus
from urza.client import RemoteLibrary, UrzaError


def raw(
    server: Server,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request on a fresh connection: status and decoded JSON (or text)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    is_json = response.getheader("content-type", "").startswith("application/json")
    return response.status, json.loads(data) if is_json else data.decode()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def test_a_post_answers_submitted_at_once_and_tezzeret_validates_it(
    server: Server, remote: RemoteLibrary
) -> None:
    ir = design(1)
    status, answer = raw(
        server, "POST", "/blueprints?provenance=alice", ir.to_json().encode(), auth()
    )
    assert status == 202
    assert answer == {
        "hash": ir.canonical_hash,
        "name": "design_1",
        "status": "submitted",
        "created": True,
    }
    entry = remote.settle(ir.canonical_hash, timeout=120)
    assert entry.status is BlueprintStatus.VALIDATED and entry.reasons == ()
    assert entry.provenance == "alice" and entry.ir == ir
    # Judged at every width the server was started with: the last report is the widest.
    assert entry.evaluation is not None and entry.evaluation.channels == 128
    assert entry.evaluation.params > 0 and entry.evaluation.flops > 0
    assert entry.judgement is not None and entry.judgement.widths == (8, 16, 32, 64, 128)
    assert not entry.judgement.compiled  # the default: envs run seeds eagerly on a CPU
    with pytest.raises(ValueError, match=r"not at \[12\]: start it with --widths"):
        remote.settle(ir.canonical_hash, [16, 12])

    status, body = raw(server, "GET", f"/blueprints/{ir.canonical_hash}")
    assert status == 200 and body["status"] == "validated" and body["provenance"] == "alice"
    assert body["evaluation"]["latency_ms"] > 0
    validated = [e.hash for e in remote.entries(BlueprintStatus.VALIDATED)]
    assert ir.canonical_hash in validated
    assert remote.artifact(ir.canonical_hash) == ir


def test_the_same_design_posted_twice_is_one_entry(server: Server, remote: RemoteLibrary) -> None:
    first = remote.submit(design(2), "alice")
    before = db_rows(server.db)
    renamed = design(2).model_copy(
        update={"metadata": design(2).metadata.model_copy(update={"name": "other_name"})}
    )
    status, answer = raw(
        server, "POST", "/blueprints?provenance=bob", renamed.to_json().encode(), auth()
    )
    assert status == 200 and answer["hash"] == first.hash and answer["created"] is False
    assert db_rows(server.db) == before
    assert remote.entry(first.hash).provenance == "alice"  # the first stays


def test_a_design_that_fails_urabrask_is_rejected_with_its_reasons(
    server: Server, remote: RemoteLibrary
) -> None:
    submitted = remote.submit(design(3, loud=True), "alice")
    entry = remote.settle(submitted.hash, timeout=120)
    assert entry.status is BlueprintStatus.REJECTED
    assert any("output scale at init" in reason for reason in entry.reasons)
    assert submitted.hash not in [e.hash for e in remote.offered()]
    with pytest.raises(UrzaError, match="rejected, not validated") as refused:
        remote.artifact(submitted.hash)
    assert refused.value.status == 409


def test_listings_page_in_insertion_order(server: Server, remote: RemoteLibrary) -> None:
    for i in range(10, 13):
        remote.submit(design(i), "alice")
    status, first = raw(server, "GET", "/blueprints?limit=2")
    assert status == 200 and len(first["entries"]) == 2 and first["next_after"] is not None
    seqs = [e["seq"] for e in first["entries"]]
    status, second = raw(server, "GET", f"/blueprints?limit=2&after={first['next_after']}")
    assert second["entries"][0]["seq"] > seqs[-1]
    everything = remote.entries()
    assert [e.seq for e in everything] == sorted(e.seq for e in everything)
    assert len(everything) == db_rows(server.db)


def test_the_builtins_are_offered_in_catalog_order(remote: RemoteLibrary) -> None:
    assert remote.ensure_builtins() == [ir.canonical_hash for ir in CATALOG.values()]
    assert [e.name for e in remote.offered()][: len(CATALOG)] == list(CATALOG)


def test_reads_of_unknown_hashes_are_404_and_keyerror(
    server: Server, remote: RemoteLibrary
) -> None:
    assert raw(server, "GET", "/blueprints/feed")[0] == 404
    with pytest.raises(KeyError, match="no blueprint"):
        remote.entry("feed")


def test_openapi_docs_are_served(server: Server) -> None:
    status, page = raw(server, "GET", "/docs")
    assert status == 200 and "swagger" in page.lower()
    status, spec = raw(server, "GET", "/openapi.json")
    assert status == 200
    assert {"/blueprints", "/blueprints/{ir_hash}", "/blueprints/{ir_hash}/artifact"} <= set(
        spec["paths"]
    )


def test_the_server_listens_on_loopback_only_by_default(server: Server) -> None:
    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("needs Linux's /proc/net/tcp to read the listening address")
    listening = []
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) == server.port:  # 0A: LISTEN
            listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex


# --- nobody gets in where they do not belong ------------------------------------------------


def pooled() -> BlueprintIR:
    """A valid blueprint that is not a residual seed: it returns [C, 1, 1]."""
    b = IRBuilder("pooled")
    return b.build(b.add("global_avg_pool", b.input))


def deep(levels: int) -> bytes:
    return b'{"metadata": ' + b"[" * levels + b"]" * levels + b"}"


BAD_POSTS = {
    "no token": (design(20).to_json().encode(), {"Content-Type": "application/json"}, 401),
    "wrong token": (design(21).to_json().encode(), auth("x" * 26), 403),
    "not a bearer": (design(22).to_json().encode(), {"Authorization": f"Basic {TOKEN}"}, 401),
    "too deep": (deep(40), auth(), 400),
    "malformed": (b'{"metadata": {', auth(), 400),
    "not json at all": (b"\xff\xfe", auth(), 400),
    "unknown key": (
        json.dumps({**json.loads(design(23).to_json()), "backdoor": 1}).encode(),
        auth(),
        422,
    ),
    "empty": (b"", auth(), 400),
    "not a seed": (pooled().to_json().encode(), auth(), 422),
}


@pytest.mark.parametrize("case", sorted(BAD_POSTS))
def test_bad_posts_get_a_clear_4xx_and_change_nothing(server: Server, case: str) -> None:
    body, headers, expected = BAD_POSTS[case]
    before = db_rows(server.db)
    status, answer = raw(server, "POST", "/blueprints", body, headers)
    assert status == expected, answer
    assert answer["detail"]  # a reason, not an empty refusal
    assert db_rows(server.db) == before
    assert raw(server, "GET", "/health")[0] == 200  # and it keeps serving


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server: Server) -> None:
    before = db_rows(server.db)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/blueprints")
    for key, value in {**auth(), "Content-Length": str(256 * 1024 + 1)}.items():
        connection.putheader(key, value)
    connection.endheaders()  # and no body: the server must answer from the header alone
    response = connection.getresponse()
    assert response.status == 413 and b"at most 262144" in response.read()
    connection.close()
    assert db_rows(server.db) == before
    assert raw(server, "GET", "/health")[0] == 200


def test_a_chunked_body_over_the_limit_is_cut_off(server: Server) -> None:
    before = db_rows(server.db)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    # No Content-Length to trust; the last chunk (all sent by then) crosses the limit.
    chunks = [b" " * 65536] * 4 + [b" " * 1024]
    connection.request("POST", "/blueprints", chunks, auth(), encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and b"at most" in response.read()
    connection.close()
    assert db_rows(server.db) == before
    assert raw(server, "GET", "/health")[0] == 200


def test_a_client_without_a_token_cannot_write(reader: RemoteLibrary) -> None:
    with pytest.raises(ValueError, match="needs its token: set ESPER_URZA_TOKEN"):
        reader.add(design(30), "alice")
    assert reader.offered()  # reading needs none


def test_with_compile_tezzeret_compiles_each_submission(tmp_path: Path) -> None:
    compiling = start_server(tmp_path / "library.sqlite", "--compile", "--widths", "8")
    try:
        with RemoteLibrary(compiling.url, token=compiling.token) as remote:
            submitted = remote.submit(design(50), "alice")
            entry = remote.settle(submitted.hash, timeout=300)
        assert entry.status is BlueprintStatus.VALIDATED
        assert entry.evaluation is not None and entry.evaluation.channels == 8
        assert entry.judgement is not None and entry.judgement.compiled
        assert entry.judgement.widths == (8,)
    finally:
        compiling.stop()


def test_health_says_when_tezzeret_has_died(tmp_path: Path) -> None:
    orphaned = start_server(tmp_path / "library.sqlite")
    try:
        status, health = raw(orphaned, "GET", "/health")
        assert health["tezzeret"]["alive"] and health["tezzeret"]["exitcode"] is None
        os.kill(health["tezzeret"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while health["tezzeret"]["alive"] and time.monotonic() < deadline:
            time.sleep(0.1)
            status, health = raw(orphaned, "GET", "/health")
        assert status == 200 and health["tezzeret"] == {
            "pid": health["tezzeret"]["pid"],
            "alive": False,
            "exitcode": -signal.SIGKILL,
        }
        with RemoteLibrary(orphaned.url, token=orphaned.token) as remote:
            submitted = remote.submit(design(60), "alice")  # still stored, judged later
            with pytest.raises(TimeoutError, match="is its Tezzeret worker running"):
                remote.settle(submitted.hash, timeout=0.5)
    finally:
        orphaned.stop()


def test_a_design_too_big_to_build_is_rejected_and_tezzeret_lives_on(
    server: Server, remote: RemoteLibrary
) -> None:
    b = IRBuilder("giant")  # 3.3 billion parameters at 128 channels: 13 GB if it were built
    wide = b.add("conv2d", b.input, out_channels=Width(num=64), kernel_size=7)
    wider = b.add("conv2d", wide, out_channels=Width(num=64), kernel_size=7)
    giant = b.build(b.add("pointwise_conv", wider, out_channels=C, init_scale=0.01))
    entry = remote.settle(remote.add(giant, "mallory"), timeout=120)
    assert entry.status is BlueprintStatus.REJECTED
    assert entry.reasons[0].startswith("too big to build at 8 channels")
    assert raw(server, "GET", "/health")[1]["tezzeret"]["alive"]
    assert remote.settle(remote.add(design(70), "alice"), timeout=120).status == "validated"
