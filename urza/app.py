"""The Urza service: a FastAPI app over one SQLite blueprint library.

`POST /blueprints` stores a design as `submitted` and answers at once; a Tezzeret
worker process (`urza.worker`, started and stopped with the app) judges it and the
entry becomes `validated` or `rejected`. Reads need nothing; writes need the
server's token as `Authorization: Bearer <token>`. A request body is bounded in
size and JSON nesting before it is parsed, and every check happens before the
single transaction that stores it, so a refused request leaves the library as it
was.
"""

from __future__ import annotations

import hmac
import multiprocessing
import re
import signal
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Annotated, Any

from pydantic import ValidationError

from agents.extras import require_extra
from blueprints.ir import BlueprintIR, SeedContractError
from blueprints.library import (
    BlueprintLibrary,
    BlueprintStatus,
    CorruptEntryError,
    LibraryEntry,
)
from urza import worker
from urza.schema import API_VERSION, VERSION_HEADER, Entry, Listing, Submitted

require_extra("fastapi", "the Urza service")
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status  # noqa: E402
from fastapi.concurrency import run_in_threadpool  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

#: Largest page `GET /blueprints` answers.
MAX_PAGE = 500

# Strings (with their escapes) are skipped whole, so brackets inside them do not count.
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


@dataclass(frozen=True)
class Limits:
    """What a request may be.

    Attributes:
        max_body_bytes: Largest request body.
        max_depth: Deepest JSON nesting (objects and arrays) in a body.
    """

    max_body_bytes: int = 256 * 1024
    max_depth: int = 32


@dataclass(frozen=True)
class WorkerConfig:
    """How the app's Tezzeret worker judges submissions (see `urza.worker.run`).

    Attributes:
        widths: Slot widths every design is judged at.
        device: Where it runs.
        compile: Also `torch.compile` each plan (slow on a CPU).
        poll_seconds: How often it looks for new submissions.
        threads: Torch threads of the worker process.
    """

    widths: Sequence[int] = (8, 16, 32, 64, 128)
    device: str = "cpu"
    compile: bool = False
    poll_seconds: float = 0.1
    threads: int = 1


@dataclass
class _State:
    db: Path
    token: str
    limits: Limits
    local: threading.local = field(default_factory=threading.local)
    worker: BaseProcess | None = None

    def library(self) -> BlueprintLibrary:
        # sqlite3 connections belong to one thread; FastAPI runs handlers on a pool.
        lib = getattr(self.local, "library", None)
        if lib is None:
            lib = self.local.library = BlueprintLibrary(self.db)
        return lib


def create_app(
    db: Path,
    token: str,
    *,
    limits: Limits = Limits(),
    judge: WorkerConfig = WorkerConfig(),
) -> FastAPI:
    """The Urza app over the library at `db`.

    On startup it seeds and evaluates the built-in blueprints (once per file) and
    starts a Tezzeret worker process; on shutdown it stops the worker.

    Args:
        db: The SQLite library file (created if absent).
        token: The secret a write must present; at least 16 characters.
        limits: Request bounds.
        judge: The worker's settings.
    """
    if len(token) < 16:
        raise ValueError("the Urza token must be at least 16 characters; use a random one")
    state = _State(Path(db), token, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with BlueprintLibrary(state.db) as library:
            library.ensure_builtins()
        # A worker holds no lock another process waits on and no state of its own, so
        # stopping it is terminating it, whatever it is doing.
        process = multiprocessing.get_context("spawn").Process(
            target=worker.run,
            args=(str(state.db),),
            kwargs={
                "widths": tuple(judge.widths),
                "device": judge.device,
                "compile": judge.compile,
                "poll_seconds": judge.poll_seconds,
                "threads": judge.threads,
            },
            name="tezzeret",
            daemon=True,
        )
        # Ctrl-C reaches the whole process group; the server stops the worker itself.
        # An ignored signal stays ignored in the child, even while it imports.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        state.worker = process
        yield
        process.terminate()
        process.join(30)
        if process.is_alive():
            process.kill()

    app = FastAPI(
        title="Urza",
        version=str(API_VERSION),
        summary="Esper's blueprint library: submit designs, fetch validated blueprints by hash.",
        lifespan=lifespan,
    )

    @app.middleware("http")
    async def stamp_version(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers[VERSION_HEADER] = str(API_VERSION)
        return response

    def require_token(request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "writes need the server's token: send 'Authorization: Bearer <token>' "
                "(the client reads ESPER_URZA_TOKEN or ESPER_URZA_TOKEN_FILE)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.encode(), state.token.encode()):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong token")

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Whether the service answers, its API version, and whether Tezzeret is judging."""
        process = state.worker
        assert process is not None  # started before the app serves
        return {
            "status": "ok",
            "api_version": API_VERSION,
            "tezzeret": {
                "pid": process.pid,
                "alive": process.is_alive(),
                "exitcode": process.exitcode,
            },
        }

    @app.post(
        "/blueprints",
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(require_token)],
        responses={200: {"model": Submitted, "description": "the design was already stored"}},
    )
    async def submit(
        request: Request,
        response: Response,
        provenance: Annotated[str, Query(min_length=1, max_length=200)] = "api",
    ) -> Submitted:
        """Stores a BlueprintIR (the request body) as `submitted`; Tezzeret judges it later.

        The same computation posted twice is one entry (its canonical hash); the
        second answer is 200 with the entry's current status.
        """
        body = await _bounded_body(request, state.limits.max_body_bytes)
        depth = json_depth(body)
        if depth > state.limits.max_depth:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"JSON nested {depth} deep; at most {state.limits.max_depth} levels are accepted",
            )
        try:
            ir = BlueprintIR.model_validate_json(body)
        except ValidationError as err:
            if any(e["type"] == "json_invalid" for e in err.errors()):
                raise HTTPException(
                    status.HTTP_400_BAD_REQUEST, f"malformed JSON: {err.errors()[0]['msg']}"
                ) from err
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                err.errors(include_url=False, include_context=False),
            ) from err
        try:
            created, current = await run_in_threadpool(_store, state, ir, provenance)
        except SeedContractError as err:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(err)) from err
        if not created:
            response.status_code = status.HTTP_200_OK
        return Submitted(
            hash=ir.canonical_hash, name=ir.metadata.name, status=current, created=created
        )

    @app.get("/blueprints")
    def listing(
        status_: Annotated[BlueprintStatus | None, Query(alias="status")] = None,
        after: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Listing:
        """Entries in insertion order, optionally of one status, a page at a time."""
        library = state.library()
        page = library.entries(status_, after=after, limit=limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return Listing(
            entries=[Entry.of(e) for e in page], next_after=page[-1].seq if more else None
        )

    @app.get("/blueprints/{ir_hash}")
    def entry(ir_hash: str) -> Entry:
        """One entry: status, Urabrask's evaluation, reasons for a rejection, provenance, IR."""
        return Entry.of(_entry(state.library(), ir_hash))

    @app.get("/blueprints/{ir_hash}/artifact")
    def artifact(ir_hash: str) -> Response:
        """What a client builds the seed from: the validated blueprint's IR JSON.

        A client checks that it hashes to `ir_hash` and lowers it itself (Tezzeret's
        `Compiler`): a compiled kernel is tied to one torch version, device and input
        layout, and running code fetched from a server is not safe, while the IR is
        data that proves its identity by its hash.
        """
        found = _entry(state.library(), ir_hash)
        if found.status is not BlueprintStatus.VALIDATED:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"blueprint {ir_hash!r} is {found.status.value}, not validated: no artifact",
            )
        return Response(found.ir.to_json(), media_type="application/json")

    @app.exception_handler(CorruptEntryError)
    async def corrupt(request: Request, err: CorruptEntryError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=500)

    return app


def json_depth(body: bytes) -> int:
    """Deepest nesting of objects and arrays in a JSON text (strings are skipped)."""
    depth = deepest = 0
    for match in _STRUCTURE.finditer(body):
        char = match.group()
        if char in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif char in (b"]", b"}"):
            depth -= 1
    return deepest


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"body of {declared} bytes; at most {limit}"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes; at most {limit}"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _store(state: _State, ir: BlueprintIR, provenance: str) -> tuple[bool, BlueprintStatus]:
    library = state.library()  # on the pool's thread, which owns its connection
    created = library.store(ir, provenance)
    return created, library.entry(ir.canonical_hash).status


def _entry(library: BlueprintLibrary, ir_hash: str) -> LibraryEntry:
    try:
        return library.entry(ir_hash)
    except KeyError as err:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no blueprint {ir_hash!r}") from err
