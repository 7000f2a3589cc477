"""Command-line helpers of the console scripts: rl-zoo3's `key:value` arguments, one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from agents.extras import MissingExtraError


def parse_key_values(items: Sequence[str]) -> dict[str, Any]:
    """Parses `key:value` strings into a dict; values are YAML, dotted keys nest.

    `["episode_epochs:4", "train.batch_size:32", "host:mini"]` gives
    `{"episode_epochs": 4, "train": {"batch_size": 32}, "host": "mini"}`.

    Raises:
        ValueError: An item has no `:` or an empty key, or a key is given twice.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition(":")
        if not sep or not key:
            raise ValueError(f"expected key:value, got {item!r} (e.g. train.batch_size:32)")
        *parents, leaf = key.split(".")
        node = parsed
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{key!r} nests under a key that already has a value")
        if leaf in node:
            raise ValueError(f"{key!r} is given twice")
        node[leaf] = yaml.safe_load(raw)
    return parsed


class StoreDict(argparse.Action):
    """rl-zoo3's `StoreDict`: `--env-kwargs a:1 b.c:x` stores `{"a": 1, "b": {"c": "x"}}`.

    Values are YAML (never evaluated as Python, unlike rl-zoo3's); dotted keys nest.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        """Parses the `key:value` items; a malformed one is a usage error."""
        items = [values] if isinstance(values, str) else list(values or [])
        try:
            parsed = parse_key_values(items)
        except ValueError as error:
            parser.error(f"{option_string}: {error}")
        setattr(namespace, self.dest, parsed)


def run_cli(main: Callable[[list[str]], object], prog: str) -> None:
    """Runs a console script's `main` on `sys.argv[1:]`; bad input exits 2 with one line.

    Bad input (a `ValueError`, a missing file, a missing extra) is the user's to fix,
    so it gets its message, not a traceback; anything else is a bug and propagates.
    """
    try:
        main(sys.argv[1:])
    except (ValueError, FileNotFoundError, MissingExtraError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
