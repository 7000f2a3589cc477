"""A blueprint library over HTTP, used like the local one; `open_library` opens either.

`RemoteLibrary` speaks to an Urza server (`esper-urza serve`) with the standard
library's `http.client` on one keep-alive connection, so envs need nothing beyond
the base install. Every blueprint it hands out has been validated and checked
against the hash it was asked for. Writes send the token from `token`, else from
`ESPER_URZA_TOKEN`, else from the file named by `ESPER_URZA_TOKEN_FILE`.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import torch
from pydantic import BaseModel

from blueprints.catalog import CATALOG
from blueprints.compiler import CompileFn
from blueprints.ir import BlueprintIR
from blueprints.library import BlueprintLibrary, BlueprintStatus, LibraryEntry, offer_order
from urza.schema import API_VERSION, VERSION_HEADER, Entry, Listing, Submitted, verified_ir

_M = TypeVar("_M", bound=BaseModel)

TOKEN_ENV = "ESPER_URZA_TOKEN"
TOKEN_FILE_ENV = "ESPER_URZA_TOKEN_FILE"

# A kept-alive connection the server closed while idle fails on its next use.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class UrzaError(RuntimeError):
    """The server refused a request; `status` is its HTTP status, the message its reason."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"Urza answered {status}: {detail}")
        self.status = status
        self.detail = detail


def is_url(location: str) -> bool:
    """Whether a library location names a server rather than a file."""
    return location.startswith(("http://", "https://"))


def open_library(location: str | os.PathLike[str] | None) -> BlueprintLibrary | RemoteLibrary:
    """The library at `location`: a URL (an Urza server), a SQLite file, or None (in memory)."""
    if location is None:
        return BlueprintLibrary(":memory:")
    if isinstance(location, str) and is_url(location):
        return RemoteLibrary(location)
    return BlueprintLibrary(location)


def read_token(token: str | None = None) -> str | None:
    """`token`, else `ESPER_URZA_TOKEN`, else the contents of `ESPER_URZA_TOKEN_FILE`."""
    if token is not None:
        return token
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    if os.environ.get(TOKEN_FILE_ENV):
        return Path(os.environ[TOKEN_FILE_ENV]).read_text().strip()
    return None


class RemoteLibrary:
    """Urza over HTTP, with the local library's interface.

    Args:
        url: The server, e.g. "http://127.0.0.1:8765".
        token: The write token (see the module docstring for where it is read from).
        timeout: Seconds one request may take.
    """

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an Urza URL: expected http://host:port")
        self.path = url.rstrip("/")
        self.token = read_token(token)
        https = parts.scheme == "https"
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        self._connection = kind(parts.hostname, parts.port, timeout=timeout)
        self._prefix = parts.path.rstrip("/")

    def close(self) -> None:
        """Closes the connection."""
        self._connection.close()

    def __enter__(self) -> RemoteLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the library's interface ----------------------------------------------------------

    def add(
        self,
        ir: BlueprintIR,
        provenance: str,
        status: BlueprintStatus = BlueprintStatus.SUBMITTED,
    ) -> str:
        """Submits a design and returns its hash; the server's Tezzeret judges it."""
        return self.submit(ir, provenance, status).hash

    def submit(
        self,
        ir: BlueprintIR,
        provenance: str,
        status: BlueprintStatus = BlueprintStatus.SUBMITTED,
    ) -> Submitted:
        """Submits a design (`POST /blueprints`); the answer says if it was new.

        Raises:
            ValueError: For a status other than SUBMITTED: only the server judges.
            UrzaError: If the server refuses it (no token, invalid design, ...).
        """
        if BlueprintStatus(status) is not BlueprintStatus.SUBMITTED:
            raise ValueError(
                f"a remote library stores designs as submitted; its server judges them, "
                f"so status {BlueprintStatus(status).value!r} cannot be set from here"
            )
        if self.token is None:
            raise ValueError(
                f"writing to {self.path} needs its token: set {TOKEN_ENV} or {TOKEN_FILE_ENV}"
            )
        body = ir.to_json().encode()
        answer = self._request(
            "POST",
            f"/blueprints?{urlencode({'provenance': provenance})}",
            body,
            {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        return Submitted.model_validate_json(answer)

    def entry(self, ir_hash: str) -> LibraryEntry:
        """The entry stored under `ir_hash`.

        Raises:
            KeyError: If there is no such entry.
            CorruptEntryError: If what the server sent does not validate or hash to it.
        """
        return self._read(f"/blueprints/{ir_hash}", Entry).to_library_entry()

    def get(self, ir_hash: str) -> BlueprintIR:
        """The blueprint stored under `ir_hash` (see `entry` for errors)."""
        return self.entry(ir_hash).ir

    def artifact(self, ir_hash: str) -> BlueprintIR:
        """The validated blueprint to build a seed from, checked against `ir_hash`.

        Raises:
            UrzaError: 409 if it is not validated.
        """
        body = self._request("GET", f"/blueprints/{ir_hash}/artifact")
        return verified_ir(BlueprintIR.from_json(body), ir_hash)

    def entries(self, status: BlueprintStatus | None = None) -> list[LibraryEntry]:
        """Entries (optionally of one status) in insertion order, read page by page."""
        found: list[LibraryEntry] = []
        after: int | None = 0
        while after is not None:
            query: dict[str, Any] = {"after": after, "limit": 500}
            if status is not None:
                query["status"] = BlueprintStatus(status).value
            page = self._read(f"/blueprints?{urlencode(query)}", Listing)
            found += [e.to_library_entry() for e in page.entries]
            after = page.next_after
        return found

    def offered(self) -> list[LibraryEntry]:
        """Validated entries in the local library's offer order."""
        return offer_order(self.entries(BlueprintStatus.VALIDATED))

    def ensure_builtins(self, channels_for_eval: int = 16) -> list[str]:
        """The built-ins' hashes, in catalog order; the server seeds and evaluates them.

        Raises:
            RuntimeError: If the server does not offer every built-in.
        """
        hashes = [ir.canonical_hash for ir in CATALOG.values()]
        offered = {e.hash for e in self.offered()}
        missing = [name for name, h in zip(CATALOG, hashes, strict=True) if h not in offered]
        if missing:
            raise RuntimeError(
                f"{self.path} does not offer the built-in blueprints {missing}: the server "
                "is from another Esper release, or its file was edited"
            )
        return hashes

    def settle(
        self,
        ir_hash: str,
        widths: Sequence[int] = (),
        *,
        device: torch.device | str = "cpu",
        compile_fn: CompileFn | None = None,
        timeout: float = 300.0,
    ) -> LibraryEntry:
        """Waits for the server's verdict on `ir_hash` and returns the entry.

        The server judges at its own widths, device and compile setting (`esper-urza
        serve --widths ... --compile`), so `device` and `compile_fn` are not used;
        a verdict that does not cover every one of `widths` is refused.

        Raises:
            TimeoutError: If no verdict comes within `timeout` seconds.
            ValueError: If the server judged it at other widths than `widths` asks for.
        """
        deadline = time.monotonic() + timeout
        pause = 0.05
        entry = self.entry(ir_hash)
        while entry.status is BlueprintStatus.SUBMITTED:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.path} gave no verdict on {ir_hash!r} in {timeout:.0f} s: "
                    "is its Tezzeret worker running (see the server's log)?"
                )
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            entry = self.entry(ir_hash)
        judged = set() if entry.judgement is None else set(entry.judgement.widths)
        missing = sorted(set(widths) - judged)
        if missing and entry.status is BlueprintStatus.VALIDATED:
            raise ValueError(
                f"{self.path} validated {ir_hash[:12]} at widths {sorted(judged)}, not at "
                f"{missing}: start it with --widths covering every slot width"
            )
        return entry

    # --- HTTP -----------------------------------------------------------------------------

    def _read(self, target: str, model: type[_M]) -> _M:
        return model.model_validate_json(self._request("GET", target))

    def _request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        # Retrying is safe for every request here: reads, and a submit keyed by its hash.
        for attempt in (1, 2):
            done = False
            try:
                self._connection.request(method, self._prefix + target, body, headers or {})
                response = self._connection.getresponse()
                data = response.read()
                done = True
                break
            except _STALE:
                if attempt == 2:
                    raise
            finally:
                if not done:  # a half-done exchange (a timeout, say) leaves it unusable
                    self._connection.close()
        if response.status == 404:
            raise KeyError(f"no blueprint at {self.path}{target}")
        if response.status >= 400:
            is_json = response.getheader("content-type", "").startswith("application/json")
            detail = json.loads(data).get("detail") if is_json else data.decode(errors="replace")
            raise UrzaError(response.status, detail)
        version = response.getheader(VERSION_HEADER)
        if version != str(API_VERSION):
            raise UrzaError(
                response.status,
                f"{self.path} speaks Urza API version {version}, this client {API_VERSION}: "
                "use the same Esper release on both sides",
            )
        return data
