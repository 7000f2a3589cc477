"""Run folders of `esper-train`, laid out as rl-baselines3-zoo lays them out.

A run lives in `{log_folder}/{algo}/{env}_{N}[_{uuid}]/` with its settings in
`{env}/args.yml` (the command line, keys sorted, `env_kwargs` and `hyperparams` as
mappings: rl-zoo's `enjoy.py` and `record_video.py` read them) and `{env}/config.yml`
(the effective hyperparameter section, `n_timesteps` included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agents.cli import parse_key_values


@dataclass(frozen=True)
class RunRecord:
    """What a run folder says about its run.

    Attributes:
        folder: The run folder.
        args: Its `args.yml`.
        config: Its `config.yml`.
    """

    folder: Path
    args: dict[str, Any]
    config: dict[str, Any]

    @property
    def env_kwargs(self) -> dict[str, Any]:
        """The env kwargs the run trained with."""
        return _mapping(self.args.get("env_kwargs"), self.folder)

    @property
    def eval_env_kwargs(self) -> dict[str, Any] | None:
        """The eval env's kwargs, when the run set its own (else it used `env_kwargs`)."""
        value = self.args.get("eval_env_kwargs")
        return None if value is None else _mapping(value, self.folder)


def _mapping(value: Any, folder: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list):  # args.yml of Esper before 0.2 stored the KEY:VALUE strings
        return parse_key_values(value)
    raise ValueError(f"{folder}: env kwargs in args.yml must be a mapping, got {value!r}")


def run_folder_of(model_path: Path, env_id: str) -> Path | None:
    """The run folder holding `model_path` (a parent with `{env_id}/args.yml`), if any."""
    for folder in list(model_path.resolve().parents)[:3]:
        if (folder / env_id / "args.yml").is_file():
            return folder
    return None


def read_run(folder: Path, env_id: str) -> RunRecord:
    """Reads `{folder}/{env_id}/args.yml` and `config.yml`.

    Raises:
        FileNotFoundError: Either file is missing.
        ValueError: A file is not a mapping.
    """
    records = []
    for name in ("args.yml", "config.yml"):
        path = folder / env_id / name
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path} must be a mapping; the run folder is damaged")
        records.append(data)
    return RunRecord(folder=folder, args=records[0], config=records[1])


def run_ids(log_folder: Path, algo: str, env_id: str) -> dict[int, Path]:
    """The runs of `algo` on `env_id` under `log_folder`, by run number."""
    parent = log_folder / algo
    pattern = re.compile(rf"^{re.escape(env_id)}_(\d+)(_[0-9a-f-]{{36}})?$")
    return {
        int(match.group(1)): child
        for child in (parent.iterdir() if parent.is_dir() else [])
        if child.is_dir() and (match := pattern.match(child.name))
    }


def new_run_folder(log_folder: Path, algo: str, env_id: str, suffix: str = "") -> Path:
    """`{log_folder}/{algo}/{env_id}_{N}{suffix}`, N one more than the largest existing run."""
    taken = run_ids(log_folder, algo, env_id)
    return log_folder / algo / f"{env_id}_{max(taken, default=0) + 1}{suffix}"


def find_run(log_folder: Path, algo: str, env_id: str, exp_id: int = 0) -> Path:
    """Run `exp_id` of `algo` on `env_id` (0: the latest).

    Raises:
        FileNotFoundError: No such run.
    """
    runs = run_ids(log_folder, algo, env_id)
    if not runs:
        raise FileNotFoundError(f"no runs of {algo} on {env_id} under {log_folder / algo}")
    exp_id = exp_id if exp_id > 0 else max(runs)
    if exp_id not in runs:
        raise FileNotFoundError(
            f"no run {env_id}_{exp_id} under {log_folder / algo} (have {sorted(runs)})"
        )
    return runs[exp_id]


def write_yaml(path: Path, data: dict[str, Any]) -> None:
    """Writes `data` as YAML with sorted keys, atomically (no half-written settings)."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(yaml.safe_dump(data, sort_keys=True), encoding="utf-8")
    partial.replace(path)
