"""Urza's parts without a server: limits, tokens, and a client that trusts only hashes."""

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from urza_server import design

from blueprints.catalog import CATALOG
from blueprints.library import BlueprintStatus, CorruptEntryError, LibraryEntry
from urza.app import create_app, json_depth
from urza.cli import _is_loopback, resolve_token
from urza.client import TOKEN_ENV, RemoteLibrary, UrzaError
from urza.schema import API_VERSION, VERSION_HEADER, Entry


def test_json_depth_counts_objects_and_arrays_but_not_strings() -> None:
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"a": "[[[[{{{{\\"]]]"}') == 1  # brackets in a string, escaped quote
    assert json_depth(b"[]") == 1 and json_depth(b"3") == 0


def test_the_token_file_is_made_owner_only_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    db = tmp_path / "library.sqlite"
    token, source = resolve_token(None, db)
    made = tmp_path / "library.sqlite.token"
    assert source == str(made) and len(token) >= 32
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert resolve_token(None, db) == (token, source)  # a restart keeps its clients' token
    monkeypatch.setenv(TOKEN_ENV, "from-the-environment-0123")
    assert resolve_token(None, db) == ("from-the-environment-0123", f"${TOKEN_ENV}")
    named = tmp_path / "named.token"
    named.write_text("from-a-file-0123456789\n")
    assert resolve_token(named, db) == ("from-a-file-0123456789", str(named))


def test_a_missing_or_weak_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--token-file"):
        resolve_token(tmp_path / "absent.token", tmp_path / "library.sqlite")
    weak = tmp_path / "weak.token"
    weak.write_text("secret")
    with pytest.raises(ValueError, match="under 16 characters"):
        resolve_token(weak, tmp_path / "library.sqlite")
    with pytest.raises(ValueError, match="at least 16 characters"):
        create_app(tmp_path / "library.sqlite", "secret")


def test_loopback_addresses_are_told_from_others() -> None:
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.7")
    assert not _is_loopback("example.org")


def test_a_remote_library_refuses_what_only_the_server_may_do() -> None:
    with pytest.raises(ValueError, match="not an Urza URL"):
        RemoteLibrary("ftp://127.0.0.1:1")
    remote = RemoteLibrary("http://127.0.0.1:1", token="t" * 20)
    with pytest.raises(ValueError, match="its server judges them"):
        remote.add(design(1), "alice", BlueprintStatus.VALIDATED)


@dataclass
class Liar:
    """A server that answers every GET with `body` and `headers`: it cannot be trusted."""

    url: str = ""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def liar() -> Iterator[Liar]:
    state = Liar()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            for key, value in state.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def _wire(ir_hash: str, ir: dict[str, object]) -> bytes:
    entry = LibraryEntry(
        hash=CATALOG["norm"].canonical_hash,
        ir=CATALOG["norm"],
        status=BlueprintStatus.VALIDATED,
        provenance="builtin",
        evaluation=None,
        rejection=None,
        judgement=None,
        seq=1,
        created_at="2026-12-01T00:00:00Z",
    )
    return Entry.of(entry).model_copy(update={"hash": ir_hash, "ir": ir}).model_dump_json().encode()


def test_a_blueprint_that_is_not_the_one_asked_for_is_refused(liar: Liar) -> None:
    asked = design(7).canonical_hash
    liar.headers = {VERSION_HEADER: str(API_VERSION), "Content-Type": "application/json"}
    liar.body = _wire(asked, json.loads(CATALOG["norm"].to_json()))  # a swapped design
    with RemoteLibrary(liar.url) as remote:
        with pytest.raises(CorruptEntryError, match="not the one asked for"):
            remote.entry(asked)
        liar.body = CATALOG["norm"].to_json().encode()
        with pytest.raises(CorruptEntryError, match="not the one asked for"):
            remote.artifact(asked)
        liar.body = _wire(asked, {"nodes": "three"})
        with pytest.raises(CorruptEntryError, match="invalid blueprint"):
            remote.entry(asked)


def test_a_server_of_another_api_version_is_refused(liar: Liar) -> None:
    liar.headers = {"Content-Type": "application/json"}
    liar.body = b"{}"
    remote = RemoteLibrary(liar.url)
    with pytest.raises(UrzaError, match="speaks Urza API version None"):
        remote.entry(design(7).canonical_hash)
    remote.close()


def test_the_cli_refuses_a_missing_token_file_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "urza",
            "serve",
            "--db",
            str(tmp_path / "x.sqlite"),
            "--token-file",
            str(tmp_path / "absent"),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"esper-urza: error: --token-file {tmp_path / 'absent'} does not exist"
    ]
    assert not (tmp_path / "x.sqlite").exists()  # nothing was created
