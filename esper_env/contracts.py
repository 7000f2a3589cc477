"""Leyline: the shared contracts of Esper.

Enums, typed configs and typed reports that every layer above `blueprints/`
speaks. Configs are frozen pydantic models that reject unknown keys, so a typo
in `gym.make(..., **kwargs)` or a YAML file fails with the key's name instead of
being silently ignored.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: A telemetry name, the stem of an env's event file: ASCII letters, digits, "_" and "-",
#: in parts joined by single dots (e.g. "events", "events.3", "events.eval.0").
TELEMETRY_NAME_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"

TelemetryName = Annotated[str, Field(pattern=TELEMETRY_NAME_PATTERN, max_length=100)]


class StrictModel(BaseModel):
    """Base for every config and report: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedStage(IntEnum):
    """Stages of the seed lifecycle (Kasmina). The integer is the observation one-hot index."""

    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    HOLDING = 4
    FOSSILIZED = 5
    PRUNED = 6
    EMBARGOED = 7
    RESETTING = 8


#: Stages in which a slot holds a live seed that is not yet part of the host.
ACTIVE_STAGES = frozenset(
    {SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING}
)


class Op(IntEnum):
    """Tamiyo's lifecycle operations: the first dimension of the action."""

    WAIT = 0
    GERMINATE = 1
    ADVANCE = 2
    PRUNE = 3
    FOSSILIZE = 4


class BlendSchedule(StrEnum):
    """Shape of the alpha ramp from 0 to 1 during BLENDING."""

    LINEAR = "linear"
    COSINE = "cosine"
    SIGMOID = "sigmoid"


class HostConfig(StrictModel):
    """The host CNN: a stem, `len(widths)` stages each followed by a seed slot, and a head.

    Attributes:
        widths: Output channels of each stage; one seed slot follows each stage.
        blocks_per_stage: Conv-BN-ReLU blocks in each stage.
        num_classes: Classifier outputs.
        in_channels: Image channels.
    """

    widths: tuple[int, ...] = (32, 64, 128)
    blocks_per_stage: int = Field(default=1, ge=1, le=8)
    num_classes: int = Field(default=10, ge=2)
    in_channels: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _check_widths(self) -> HostConfig:
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be non-empty positive ints, got {self.widths}")
        return self


#: Named host presets; `Esper-CIFAR-Impaired-v0` and `-Deep-v0` use these.
HOST_PRESETS: dict[str, HostConfig] = {
    "default": HostConfig(),
    "mini": HostConfig(widths=(8, 16, 16)),
    "impaired": HostConfig(widths=(8, 16, 16)),
    "deep": HostConfig(widths=(32, 32, 64, 64, 128, 128)),
}


class LifecycleConfig(StrictModel):
    """Timings and thresholds of the lifecycle gates (G0..G5).

    Attributes:
        min_training_epochs: G2: epochs a seed must train before it may blend.
        min_improvement: G2: the seed at alpha=1 must lower validation loss by more than this.
        holding_epochs: G4: epochs in HOLDING before fossilization is allowed.
        min_contribution: G4: contribution (accuracy points, 0..1) a holding seed must keep.
        embargo_epochs: Epochs a pruned slot stays EMBARGOED before it resets.
        blend_schedule: Shape of the alpha ramp.
        blend_epochs: Length of the ramp, in epochs, for each blend speed (action index).
        significance: Standard errors (paired over validation samples) that widen G2's
            measured effect into a confidence bound: the val loss change at alpha 1 plus
            `significance` standard errors must lie below `-min_improvement`.
        fossilize_significance: The same for G4, which commits a seed for good, so its bar
            is stricter: the contribution minus `fossilize_significance` standard errors
            must lie above `min_contribution` (at 1, a seed on random labels fossilized
            after three looks in `tests/esper_env/test_default_gates.py`). G5 may remove a
            fossilized seed that no longer passes G4's test.
    """

    min_training_epochs: int = Field(default=1, ge=0)
    min_improvement: float = 0.0
    holding_epochs: int = Field(default=1, ge=0)
    min_contribution: float = 0.0
    embargo_epochs: int = Field(default=2, ge=0)
    blend_schedule: BlendSchedule = BlendSchedule.LINEAR
    blend_epochs: tuple[int, ...] = (1, 2, 4)
    significance: float = Field(default=1.0, ge=0)
    fossilize_significance: float = Field(default=2.0, ge=0)

    @model_validator(mode="after")
    def _check_blend(self) -> LifecycleConfig:
        if not self.blend_epochs or any(e < 1 for e in self.blend_epochs):
            raise ValueError(f"blend_epochs must be positive ints, got {self.blend_epochs}")
        return self


class TrainConfig(StrictModel):
    """Tolaria: how the host and its seeds are trained.

    Attributes:
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size.
        lr: Host learning rate (SGD with Nesterov momentum) at the start of the cosine schedule.
        seed_lr: Learning rate of seed parameters.
        momentum: SGD momentum.
        weight_decay: L2 weight decay on host and seeds.
        epochs: Epochs the cosine learning-rate schedule spans (the episode length).
        epoch_fraction: Fraction of an epoch trained per call of `train_epoch`.
        augment: Random crop (pad 4) and horizontal flip on training batches.
        governor_spike_factor: A batch loss above this multiple of the running mean rolls back.
        governor_warmup_batches: Batches before the spike test is armed.
        device: Torch device string; "auto" picks CUDA when present.
    """

    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=1000, ge=1)
    lr: float = Field(default=0.05, gt=0)
    seed_lr: float = Field(default=0.05, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    epochs: int = Field(default=25, ge=1)
    epoch_fraction: float = Field(default=1.0, gt=0, le=1)
    augment: bool = True
    governor_spike_factor: float = Field(default=5.0, gt=1)
    governor_warmup_batches: int = Field(default=20, ge=1)
    device: str = "auto"


class RewardConfig(StrictModel):
    """Simic: coefficients of the reward economy (every term is reported separately).

    Attributes:
        accuracy_delta: Weight on the change in validation accuracy (0..1 scale).
        contribution: Weight on the summed contribution of live seeds.
        rent: Penalty for holding added parameters (as a fraction of the host's) for a whole
            episode; each step pays its `1 / episode_epochs` share.
        churn: Penalty per pruned seed.
        terminal_accuracy: Weight on final validation accuracy at episode end.
        terminal_size: Penalty on final added-parameter fraction at episode end.
    """

    accuracy_delta: float = 10.0
    contribution: float = 1.0
    rent: float = 0.1
    churn: float = 0.2
    terminal_accuracy: float = 10.0
    terminal_size: float = 0.1


class TransitionResult(StrictModel):
    """What a lifecycle operation did: a refusal is a result, never an exception.

    Attributes:
        ok: Whether the transition happened.
        slot: Slot name.
        op: Operation name, e.g. "germinate", "advance", "prune".
        from_stage: Stage before.
        to_stage: Stage after (equal to `from_stage` when refused).
        gate: Gate that decided, "G0".."G5", or "lifecycle" for an illegal transition.
        reason: Why it passed or was refused, with the measured values.
    """

    ok: bool
    slot: str
    op: str
    from_stage: SeedStage
    to_stage: SeedStage
    gate: str
    reason: str


class SlotReport(StrictModel):
    """Per-seed counters and measurements of one slot, as the observation and telemetry see them.

    `improvement` is 0 until the seed is first measured; `seed_loss_trend` is the change of
    the validation loss at alpha 1 since the previous measurement.
    """

    name: str
    stage: SeedStage
    alpha: float
    blueprint: str | None
    age: int
    epochs_in_stage: int
    params: int
    contribution: float
    contribution_se: float
    improvement: float
    improvement_se: float
    seed_loss_trend: float


class EpochMetrics(StrictModel):
    """One call of Tolaria's `train_epoch`: training and validation signals.

    `rolled_back` says the governor restored the last good snapshot; `rollback_reason`
    says why, and `rollback_pruned` names the slot whose seed it pruned (None: none).
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    rolled_back: bool = False
    rollback_reason: str | None = None
    rollback_pruned: str | None = None


DeviceName = Literal["cpu", "cuda", "auto"]


class EnvConfig(StrictModel):
    """Everything an `Esper-CIFAR-*` environment is made of; `gym.make` kwargs land here.

    Attributes:
        host: A preset name from `HOST_PRESETS` or a full `HostConfig`.
        episode_epochs: Environment steps (training epochs) per episode.
        train_per_class: Training images per class (None: all that the validation split leaves).
        val_per_class: Validation images per class, carved from the training set.
        test_per_class: Test images per class, used once at episode end (None: all).
        split_seed: Seed of the stratified validation split (fixed across episodes).
        blueprints: Blueprint names Tamiyo may germinate, in action order.
        param_budget: Most parameters seeds may add, as a fraction of the bare host's.
        max_rollbacks: Consecutive governor rollbacks after which the host is unrecoverable.
        data_dir: Where CIFAR-10 lives (None: `ESPER_DATA_DIR`, else `~/.cache/esper`).
        library_path: Blueprint library (Urza): a SQLite file, an Urza server's URL
            (`http://127.0.0.1:8765`, see `esper-urza serve`; writes read the token from
            `ESPER_URZA_TOKEN`), or None for an in-memory library of the built-ins.
        telemetry_dir: Directory for the JSONL event log (None: no log).
        telemetry_name: This env's name in telemetry: its events go to
            `<telemetry_dir>/<telemetry_name>.jsonl` and carry it as `env`, so that envs
            sharing a directory each write their own file (`agents.zoo.envs.make_vec_env`
            names env `i` "events.<i>"). A `TELEMETRY_NAME_PATTERN` name.
        compile_seeds: Compile seed modules with `torch.compile` in the background (Tezzeret);
            seeds run eagerly until their compile is ready. Pays off on GPUs, not on small CPUs.
        obs_version: The observation layout the caller expects; must equal the current one.
        train: Tolaria settings.
        lifecycle: Gate timings and thresholds.
        reward: Simic coefficients.
    """

    host: str | HostConfig = "default"
    episode_epochs: int = Field(default=25, ge=1)
    train_per_class: int | None = Field(default=None, ge=1)
    val_per_class: int = Field(default=500, ge=1)
    test_per_class: int | None = Field(default=None, ge=1)
    split_seed: int = 0
    blueprints: tuple[str, ...] = (
        "norm",
        "depthwise_separable",
        "residual_block",
        "bottleneck",
        "squeeze_excitation",
        "lowrank_adapter",
    )
    param_budget: float = Field(default=1.0, gt=0)
    max_rollbacks: int = Field(default=3, ge=1)
    data_dir: str | None = None
    library_path: str | None = None
    telemetry_dir: str | None = None
    telemetry_name: TelemetryName = "events"
    compile_seeds: bool = False
    obs_version: int = 2
    train: TrainConfig = TrainConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    reward: RewardConfig = RewardConfig()

    @model_validator(mode="after")
    def _check(self) -> EnvConfig:
        if isinstance(self.host, str) and self.host not in HOST_PRESETS:
            raise ValueError(f"unknown host preset {self.host!r}; choose from {list(HOST_PRESETS)}")
        if not self.blueprints:
            raise ValueError("blueprints must name at least one blueprint")
        return self

    def host_config(self) -> HostConfig:
        """Returns the host as a `HostConfig`, resolving a preset name."""
        return HOST_PRESETS[self.host] if isinstance(self.host, str) else self.host
