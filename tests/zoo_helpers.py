"""Shared helpers of the zoo script tests: tiny env kwargs as `key:value` arguments,
W&B and monitor readers, and a crafted (hostile) agent file."""

from __future__ import annotations

import base64
import csv
import json
import os
import shlex
import struct
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
from wandb.proto import wandb_internal_pb2

from agents.zoo.algos import algo_class
from agents.zoo.envs import make_esper_env
from agents.zoo.policy import stamp_semantics


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


def read_wandb_history(
    path: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Reads an offline `.wandb` file (a LevelDB-style log of protobuf records).

    Returns:
        The history rows (key to value), the run's config (key to value), and the
        run's `tags` and `group`.
    """
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pending, rows, config = _HEADER, b"", [], {}
    run: dict[str, Any] = {}
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
                run = {"tags": list(record.run.tags), "group": record.run.run_group}
                for item in record.run.config.update:
                    config[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert run, f"{path} has no run record ({len(data)} bytes): was the run finished?"
    return rows, config, run


def read_monitor(path: Path) -> list[dict[str, float]]:
    """Rows of an SB3 `monitor.csv` (after its JSON header line), as floats."""
    lines = path.read_text().splitlines()[1:]
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(lines)]


class Touch:
    """Unpickles into `touch MARKER`: what a hostile agent file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def hostile_agent(algo: str, env_kwargs: dict[str, Any], folder: Path, marker: Path) -> Path:
    """An agent file with a pickled entry Esper does not know, which creates `marker`."""
    env = make_esper_env("Esper-CIFAR-Mini-v0", env_kwargs)
    model = algo_class(algo)("MlpPolicy", env, n_steps=16, batch_size=16, seed=0, device="cpu")
    stamp_semantics(model)
    model.save(folder / "agent.zip")
    env.close()
    with zipfile.ZipFile(folder / "agent.zip") as old:
        members = {name: old.read(name) for name in old.namelist()}
    data = json.loads(members["data"])
    blob = base64.b64encode(cloudpickle.dumps(Touch(marker))).decode()
    data["esper_backdoor"] = {":type:": "<class 'int'>", ":serialized:": blob}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(folder / "hostile.zip", "w") as new:
        for name, content in members.items():
            new.writestr(name, content)
    return folder / "hostile.zip"
