"""Command-line helpers shared by the scripts: `key:value` arguments, as rl-zoo3 takes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


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
