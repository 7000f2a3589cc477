"""The observation contract: a flat float32 vector any SB3 policy can read.

Layout (version `OBS_VERSION`), in order:

* global block (`GLOBAL_FEATURES`): progress through the episode, train/val loss
  and accuracy, their changes since the last step, plateau length (epochs since
  the best validation accuracy, over the episode length), best validation
  accuracy, parameters added by seeds over the bare host's, and the parameter
  budget left (1 = all of it, 0 = none);
* one block per slot, in slot order (`SLOT_FEATURES` then a blueprint one-hot):
  stage one-hot (one entry per `SeedStage`), alpha, age and epochs in stage (over
  the episode length), the seed's parameters over the bare host's, then Tolaria's
  latest counterfactual measurement of the seed (all with the BatchNorm statistics
  of the alpha measured): its contribution (validation accuracy at its current
  alpha minus at alpha 0, 0..1) and that figure's standard error, its improvement
  (validation loss at alpha 1 minus at alpha 0; negative helps; 0 before the first
  measurement) and its standard error (the gates G2 and G4 compare these), its
  seed loss trend (the change of the validation loss at alpha 1 since the previous
  measurement: negative while the seed is still getting better), then a one-hot of
  the blueprint it holds (all zeros when empty).

`ObservationLayout.names()` gives the name of every index. Any change to the
meaning or order of an entry bumps `OBS_VERSION`.

Version history:
* 2: `contribution_se`, `improvement` and `improvement_se` join each slot block;
  measurements use BatchNorm statistics consistent with the alpha measured.
* 1: the first layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from esper_env.contracts import SeedStage, SlotReport

OBS_VERSION = 2

GLOBAL_FEATURES = (
    "progress",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "delta_val_loss",
    "delta_val_accuracy",
    "plateau",
    "best_val_accuracy",
    "added_param_fraction",
    "param_budget_left",
)

STAGE_FEATURES = tuple(f"stage_{stage.name.lower()}" for stage in SeedStage)

SLOT_FEATURES = (
    *STAGE_FEATURES,
    "alpha",
    "age",
    "epochs_in_stage",
    "param_fraction",
    "contribution",
    "contribution_se",
    "improvement",
    "improvement_se",
    "seed_loss_trend",
)


@dataclass(frozen=True)
class GlobalSignals:
    """The values of the global block, before normalisation."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    delta_val_loss: float
    delta_val_accuracy: float
    plateau: int
    best_val_accuracy: float
    added_param_fraction: float
    param_budget_left: float


@dataclass(frozen=True)
class ObservationLayout:
    """Positions of every feature for a given slot list and blueprint list.

    Attributes:
        slots: Slot names, in observation order.
        blueprints: Blueprint names, in action order.
        episode_epochs: Episode length, used to normalise counters.
    """

    slots: tuple[str, ...]
    blueprints: tuple[str, ...]
    episode_epochs: int

    @property
    def slot_block(self) -> int:
        """Entries per slot."""
        return len(SLOT_FEATURES) + len(self.blueprints)

    @property
    def size(self) -> int:
        """Length of the observation vector."""
        return len(GLOBAL_FEATURES) + len(self.slots) * self.slot_block

    def names(self) -> list[str]:
        """Returns the name of every index, e.g. `slot1.alpha` or `slot0.blueprint.norm`."""
        names = list(GLOBAL_FEATURES)
        for slot in self.slots:
            names += [f"{slot}.{feature}" for feature in SLOT_FEATURES]
            names += [f"{slot}.blueprint.{bp}" for bp in self.blueprints]
        return names

    def slot_offset(self, index: int) -> int:
        """Index of the first entry of slot `index`'s block."""
        return len(GLOBAL_FEATURES) + index * self.slot_block

    def encode(
        self, signals: GlobalSignals, reports: Sequence[SlotReport], base_params: int
    ) -> np.ndarray:
        """Builds the observation vector.

        Args:
            signals: Global training signals.
            reports: One report per slot, in `slots` order.
            base_params: Parameter count of the bare host, the scale of parameter features.

        Returns:
            A float32 vector of length `size`.
        """
        if [r.name for r in reports] != list(self.slots):
            raise ValueError(f"reports for {[r.name for r in reports]}, expected {self.slots}")
        horizon = float(self.episode_epochs)
        obs = np.zeros(self.size, dtype=np.float32)
        obs[: len(GLOBAL_FEATURES)] = (
            signals.epoch / horizon,
            signals.train_loss,
            signals.train_accuracy,
            signals.val_loss,
            signals.val_accuracy,
            signals.delta_val_loss,
            signals.delta_val_accuracy,
            signals.plateau / horizon,
            signals.best_val_accuracy,
            signals.added_param_fraction,
            signals.param_budget_left,
        )
        n_stages = len(STAGE_FEATURES)
        for index, report in enumerate(reports):
            start = self.slot_offset(index)
            obs[start + int(report.stage)] = 1.0
            obs[start + n_stages : start + len(SLOT_FEATURES)] = (
                report.alpha,
                report.age / horizon,
                report.epochs_in_stage / horizon,
                report.params / base_params,
                report.contribution,
                report.contribution_se,
                report.improvement,
                report.improvement_se,
                report.seed_loss_trend,
            )
            if report.blueprint is not None:
                obs[start + len(SLOT_FEATURES) + self.blueprints.index(report.blueprint)] = 1.0
        return obs

    def slot_stages(self, obs: np.ndarray) -> list[SeedStage]:
        """Reads each slot's stage back from an observation."""
        n_stages = len(STAGE_FEATURES)
        return [
            SeedStage(int(np.argmax(obs[self.slot_offset(i) : self.slot_offset(i) + n_stages])))
            for i in range(len(self.slots))
        ]

    def slot_feature(self, obs: np.ndarray, index: int, feature: str) -> float:
        """Reads one named per-slot feature (from `SLOT_FEATURES`) of slot `index`."""
        return float(obs[self.slot_offset(index) + SLOT_FEATURES.index(feature)])

    def global_feature(self, obs: np.ndarray, feature: str) -> float:
        """Reads one named global feature (from `GLOBAL_FEATURES`)."""
        return float(obs[GLOBAL_FEATURES.index(feature)])
