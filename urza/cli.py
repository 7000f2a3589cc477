"""`esper-urza serve`: the blueprint library as a web service, on loopback by default."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
import sys
from pathlib import Path

from agents.cli import run_cli
from agents.extras import require_extra
from urza.client import TOKEN_ENV

log = logging.getLogger("urza")


def resolve_token(token_file: Path | None, db: Path) -> tuple[str, str]:
    """The write token and where it came from.

    From `token_file` if given (it must exist), else `ESPER_URZA_TOKEN`, else the file
    `<db>.token`, created with a fresh random token (owner-only) if absent, so that a
    restarted server keeps its clients' token.

    Raises:
        FileNotFoundError: If `token_file` does not exist.
        ValueError: If the token is shorter than 16 characters.
    """
    if token_file is not None:
        if not token_file.is_file():
            raise FileNotFoundError(f"--token-file {token_file} does not exist")
        token, source = token_file.read_text().strip(), str(token_file)
    elif os.environ.get(TOKEN_ENV):
        token, source = os.environ[TOKEN_ENV], f"${TOKEN_ENV}"
    else:
        path = db.with_name(db.name + ".token")
        if not path.exists():
            # Created owner-only from the start: no moment where others can read it.
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        token, source = path.read_text().strip(), str(path)
    if len(token) < 16:
        raise ValueError(f"the token from {source} is under 16 characters; use a random one")
    return token, source


def _widths(text: str) -> tuple[int, ...]:
    widths = tuple(int(part) for part in text.split(","))
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive ints, got {text!r}")
    return widths


def main(argv: list[str] | None = None) -> None:
    """Parses `esper-urza serve ...` and serves until interrupted."""
    parser = argparse.ArgumentParser(
        prog="esper-urza", description="Urza, Esper's blueprint library, as a web service."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a library file over HTTP, with a Tezzeret worker judging submissions",
        description="Serves the SQLite library DB over HTTP (API docs at /docs). Reads need "
        "nothing; writes need the token. A Tezzeret worker process judges every submission.",
    )
    serve.add_argument("--db", type=Path, required=True, help="the library file (created)")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default loopback only)"
    )
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    serve.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the write token (default: ${TOKEN_ENV}, else DB.token, created)",
    )
    serve.add_argument(
        "--widths",
        type=_widths,
        default=(8, 16, 32, 64, 128),
        help="slot widths every design is judged at (default 8,16,32,64,128)",
    )
    serve.add_argument("--device", default="cpu", help="where Tezzeret runs (default cpu)")
    serve.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also torch.compile each plan (default off: seconds per width on a CPU)",
    )
    serve.add_argument("--max-body-bytes", type=int, default=256 * 1024)
    serve.add_argument("--max-depth", type=int, default=32, help="deepest JSON nesting accepted")
    serve.add_argument("--worker-threads", type=int, default=1, help="torch threads of Tezzeret")
    serve.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)

    require_extra("fastapi", "esper-urza serve")
    require_extra("uvicorn", "esper-urza serve")
    import uvicorn

    from urza.app import Limits, WorkerConfig, create_app

    token, source = resolve_token(args.token_file, args.db)
    if not _is_loopback(args.host):
        print(
            f"esper-urza: warning: binding {args.host} makes the library readable from other "
            "machines (writes still need the token)",
            file=sys.stderr,
        )
    app = create_app(
        args.db,
        token,
        limits=Limits(max_body_bytes=args.max_body_bytes, max_depth=args.max_depth),
        judge=WorkerConfig(
            widths=args.widths,
            device=args.device,
            compile=args.compile,
            threads=args.worker_threads,
        ),
    )
    print(
        f"esper-urza: serving {args.db} on http://{args.host}:{args.port} "
        f"(API docs at /docs); write token from {source}",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only the resolver knows
        return False


def cli() -> None:
    """The `esper-urza` console script: bad input ends with one line."""
    run_cli(main, "esper-urza")
