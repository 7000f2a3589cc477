"""Shared helpers of the zoo script tests: tiny env kwargs as `key:value` arguments."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2


def as_key_values(kwargs: dict[str, Any], prefix: str = "") -> list[str]:
    """Flattens nested kwargs into the `a.b:value` form `parse_key_values` reads."""
    items: list[str] = []
    for key, value in kwargs.items():
        if isinstance(value, dict):
            items += as_key_values(value, f"{prefix}{key}.")
        else:
            items.append(f"{prefix}{key}:{value}")
    return items


def tiny_train_args(env_kwargs: dict[str, Any], log_folder: Path, algo: str) -> list[str]:
    """`train_agent.py` arguments for a run of seconds on the tiny dataset."""
    return [
        "--algo",
        algo,
        "--env",
        "Esper-CIFAR-Mini-v0",
        "-f",
        str(log_folder),
        "--device",
        "cpu",
        "--seed",
        "0",
        "--num-threads",
        "1",
        "--no-progress",
        "--verbose",
        "0",
        "--hyperparams",
        "n_steps:16",
        "batch_size:16",
        "n_epochs:2",
        "n_envs:1",
        "--env-kwargs",
        *as_key_values(env_kwargs),
    ]


_BLOCK = 32768
_HEADER = 7  # the file starts with ":W&B", a 2-byte magic and a version byte


def read_wandb_history(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Reads an offline `.wandb` file (a LevelDB-style log of protobuf records).

    Returns:
        The history rows (key to value) and the run's config (key to value).
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, rows, config = _HEADER, b"", [], {}
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        pending += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            which = record.WhichOneof("record_type")
            if which == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
            elif which == "run":
                for item in record.run.config.update:
                    config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return rows, config


def read_monitor(path: Path) -> list[dict[str, float]]:
    """Rows of an SB3 `monitor.csv` (after its JSON header line), as floats."""
    lines = path.read_text().splitlines()[1:]
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(lines)]
