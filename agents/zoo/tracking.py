"""Weights & Biases tracking of a training run (the `[wandb]` extra).

`start_run` opens the run (offline without an API key, so nothing is lost without a
network: `wandb sync` uploads it later); `WandbCallback` logs SB3's scalars and a
table of Esper episodes to it.
"""

from __future__ import annotations

import os
from netrc import netrc
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter

from agents.extras import require_extra
from agents.zoo.callbacks import EPISODE_KEYS, EsperMetricsCallback

require_extra("wandb", "agents.zoo.tracking (W&B tracking)")
import stable_baselines3  # noqa: E402
import wandb  # noqa: E402


def wandb_mode() -> str:
    """`WANDB_MODE` if set; else online with an API key, offline without one."""
    if mode := os.environ.get("WANDB_MODE"):
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc_file = Path.home() / ".netrc"
    if netrc_file.is_file() and netrc(netrc_file).authenticators("api.wandb.ai"):
        return "online"
    return "offline"


def start_run(
    *,
    project: str,
    entity: str | None,
    group: str | None,
    tags: list[str],
    name: str,
    config: dict[str, Any],
    sync_tensorboard: bool,
) -> Any:
    """Starts a W&B run as rl-zoo3's `--track` does (tags get the SB3 version).

    Offline, it prints the `wandb sync` command that uploads the run later.
    """
    mode = wandb_mode()
    run = wandb.init(
        project=project,
        entity=entity,
        group=group,
        tags=[*tags, f"v{stable_baselines3.__version__}"],
        name=name,
        config=config,
        sync_tensorboard=sync_tensorboard,
        mode=mode,
    )
    if mode == "offline":
        print(
            "W&B runs offline (no API key, or WANDB_MODE=offline); sync it later with:\n"
            f"  wandb sync {Path(run.dir).parent}"
        )
    return run


class WandbOutputFormat(KVWriter):
    """Sends every SB3 logger dump to a W&B run, for runs without TensorBoard syncing.

    Args:
        run: An active `wandb` run.
    """

    def __init__(self, run: Any) -> None:
        self.run = run

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        """Logs the numeric values of one dump at `step` (SB3's timestep count)."""
        scalars = {
            key: float(value)
            for key, value in key_values.items()
            if isinstance(value, int | float | np.number) and not isinstance(value, bool)
        }
        if scalars:
            self.run.log(scalars, step=step)

    def close(self) -> None:
        """The run is finished by its owner, not here."""


class WandbCallback(BaseCallback):
    """Logs to W&B: SB3's scalars (unless TensorBoard is synced) and a table of episodes.

    Args:
        run: An active `wandb` run.
        metrics: The metrics callback whose episodes fill the table.
        log_scalars: Add `WandbOutputFormat` to the model's logger (set it False when
            `wandb.init(sync_tensorboard=True)` already carries the TensorBoard scalars).
    """

    def __init__(self, run: Any, metrics: EsperMetricsCallback, *, log_scalars: bool) -> None:
        super().__init__()
        self.run = run
        self.metrics = metrics
        self.log_scalars = log_scalars

    def _on_training_start(self) -> None:
        if self.log_scalars:
            self.model.logger.output_formats.append(WandbOutputFormat(self.run))

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.log_episode_table()

    def log_episode_table(self) -> None:
        """Logs `esper/episodes_table`: one row per episode, its lifecycle events as text."""
        columns = ["timestep", "env_index", "return", *EPISODE_KEYS, "lifecycle"]
        table = wandb.Table(columns=columns)
        for episode in self.metrics.episodes:
            events = "; ".join(
                f"e{e['epoch']} {e['slot']} {e['op']}->{e['to_stage']}"
                for e in episode["lifecycle"]
            )
            table.add_data(*(episode[c] for c in columns[:-1]), events)
        self.run.log({"esper/episodes_table": table})
