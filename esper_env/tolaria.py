"""Tolaria: the training engine of a morphogenetic model.

`Trainer` trains the host and its seeds (SGD with Nesterov momentum; a host
group and a seed group, both on a cosine schedule over `TrainConfig.epochs`),
evaluates, measures each seed counterfactually, and guards the run with a
governor that rolls back to the last good state when the loss turns
non-finite or spikes.

One lifecycle epoch is one call of `train_epoch` (which trains
`ceil(epoch_fraction * batches per pass)` batches); the caller then ends it with
`model.end_epoch()`. Seed parameters join the optimizer when germinated and
leave when pruned: the param groups are re-synchronised at the start of every
`train_epoch` (and before a checkpoint), keeping the momentum of surviving
parameters. A fossilized seed moves to the host group.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from blueprints.kernels import blend
from esper_env.contracts import EpochMetrics, SeedStage, TrainConfig
from esper_env.kasmina.model import MorphogeneticModel, SeedFactory

#: Batches between the governor's looks at the losses (one host-device sync per look).
GOVERNOR_CHECK_EVERY = 16
#: Decay of the governor's running mean of batch losses.
LOSS_EMA_DECAY = 0.9
#: Order in which the governor picks the seed to prune: the one changing the function first.
_CULPRIT_ORDER = (SeedStage.BLENDING, SeedStage.TRAINING, SeedStage.GERMINATED)
_CHECKPOINT_FORMAT = 1


class BatchSource(Protocol):
    """What Tolaria needs from a data split (`esper_env.data.DeviceBatches` is one)."""

    device: torch.device

    def __len__(self) -> int:
        """Batches in one full pass."""
        ...

    def iterate(
        self, generator: torch.Generator | None = None, max_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields `(x, y)` batches on `device`."""
        ...


@dataclass(frozen=True)
class SlotMeasurement:
    """Counterfactual measurement of one seed on a validation split.

    Attributes:
        contribution: Accuracy at the seed's current alpha minus with its alpha forced to 0.
        improvement: Loss with the seed at alpha 1 minus at alpha 0 (negative: it helps).
        seed_loss: Loss with the seed at alpha 1.
    """

    contribution: float
    improvement: float
    seed_loss: float


@dataclass
class _Tally:
    loss_sum: float = 0.0
    correct: float = 0.0
    samples: int = 0
    batches: int = 0


def resolve_device(name: str) -> torch.device:
    """Maps "auto" to CUDA when present, else CPU; other names go to `torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _clone(tree: Any) -> Any:
    """Deep copy of nested dicts/lists whose tensors are cloned (detached)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {key: _clone(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_clone(value) for value in tree]
    return tree


class Trainer:
    """Trains a `MorphogeneticModel` one lifecycle epoch at a time.

    Args:
        model: The host with its slots; moved to the trainer's device.
        train: Training batches (shuffled/augmented from the trainer's generator).
        val: Validation batches (neither shuffled nor augmented).
        config: Optimiser, schedule, governor and device settings.
        seed: Seed of the trainer's batch generator.

    Raises:
        ValueError: if a batch source lives on another device than `config.device`.
    """

    def __init__(
        self,
        model: MorphogeneticModel,
        train: BatchSource,
        val: BatchSource,
        config: TrainConfig,
        *,
        seed: int,
    ) -> None:
        self.device = resolve_device(config.device)
        for what, source in (("train", train), ("val", val)):
            if source.device.type != self.device.type:
                raise ValueError(
                    f"{what} batches live on {source.device} but the trainer runs on "
                    f"{self.device}; build them with device={str(self.device)!r}"
                )
        self.model = model.to(self.device)
        self.train_batches = train
        self.val_batches = val
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)
        self.batches_per_epoch = max(1, math.ceil(len(train) * config.epoch_fraction))
        model.set_steps_per_epoch(self.batches_per_epoch)
        self.optimizer = torch.optim.SGD(
            [
                {"params": model.host_parameters(), "lr": config.lr, "base_lr": config.lr},
                {
                    "params": model.live_seed_parameters(),
                    "lr": config.seed_lr,
                    "base_lr": config.seed_lr,
                },
            ],
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
        #: Lifecycle epochs trained so far.
        self.epoch = 0
        self._loss_ema: float | None = None
        self._good_batches = 0

    # --- training -------------------------------------------------------------------------

    def train_epoch(self) -> EpochMetrics:
        """Trains one lifecycle epoch, evaluates on val and measures every seed.

        The governor screens each batch loss; a non-finite loss, a spike above
        `governor_spike_factor` times the running mean (once `governor_warmup_batches`
        good batches have passed) or a non-finite validation loss restores host,
        seeds and optimizer to their state at the start of this epoch (the end of
        the last good one), prunes the seed that was changing (BLENDING before
        TRAINING before GERMINATED, first slot first) and ends the epoch there.

        Returns:
            Training (over the good batches; val figures when there were none) and
            validation metrics, and what the governor did.
        """
        model = self.model
        self.sync_param_groups()
        self._set_learning_rates()
        snapshot = self._snapshot()
        model.train()
        tally = _Tally()
        pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        failure: str | None = None
        for x, y in self.train_batches.iterate(self.generator, self.batches_per_epoch):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            model.step_blend()
            pending.append((loss.detach(), (logits.argmax(1) == y).sum(), y.shape[0]))
            if len(pending) == GOVERNOR_CHECK_EVERY:
                failure = self._screen(pending, tally)
                pending = []
                if failure is not None:
                    break
        if failure is None and pending:
            failure = self._screen(pending, tally)
        val_loss, val_accuracy, measured = (math.nan, 0.0, {})
        if failure is None:
            val_loss, val_accuracy, measured = self._measure(self.val_batches, counterfactual=True)
            if not math.isfinite(val_loss):
                failure = f"non-finite validation loss {val_loss}"
        pruned: str | None = None
        if failure is not None:
            self._restore(snapshot)
            pruned = self._prune_culprit()
            self.sync_param_groups()
            val_loss, val_accuracy, measured = self._measure(self.val_batches, counterfactual=True)
        for name, measurement in measured.items():
            model.slots[name].record_measurement(
                measurement.contribution, measurement.improvement, measurement.seed_loss
            )
        self.epoch += 1
        if tally.samples:
            train_loss, train_accuracy = (
                tally.loss_sum / tally.samples,
                tally.correct / tally.samples,
            )
        else:
            train_loss, train_accuracy = val_loss, val_accuracy
        return EpochMetrics(
            epoch=self.epoch,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            rolled_back=failure is not None,
            rollback_reason=failure,
            rollback_pruned=pruned,
        )

    def _screen(
        self, pending: list[tuple[torch.Tensor, torch.Tensor, int]], tally: _Tally
    ) -> str | None:
        """The governor's look at a run of batch losses, in order; returns a failure or None."""
        losses = torch.stack([loss for loss, _, _ in pending]).tolist()
        corrects = torch.stack([correct for _, correct, _ in pending]).tolist()
        factor = self.config.governor_spike_factor
        for loss, correct, (_, _, size) in zip(losses, corrects, pending, strict=True):
            batch = tally.batches + 1
            if not math.isfinite(loss):
                return f"non-finite training loss {loss} at batch {batch}"
            ema = self._loss_ema
            armed = self._good_batches >= self.config.governor_warmup_batches
            if armed and ema is not None and loss > factor * ema:
                return (
                    f"loss spike {loss:.4g} > {factor:g} x running mean {ema:.4g} at batch {batch}"
                )
            self._loss_ema = (
                loss if ema is None else LOSS_EMA_DECAY * ema + (1 - LOSS_EMA_DECAY) * loss
            )
            self._good_batches += 1
            tally.loss_sum += loss * size
            tally.correct += correct
            tally.samples += size
            tally.batches = batch
        return None

    def _snapshot(self) -> tuple[dict[str, torch.Tensor], dict[torch.Tensor, dict[str, Any]]]:
        weights = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
        momenta = {param: _clone(dict(state)) for param, state in self.optimizer.state.items()}
        return weights, momenta

    def _restore(
        self, snapshot: tuple[dict[str, torch.Tensor], dict[torch.Tensor, dict[str, Any]]]
    ) -> None:
        weights, momenta = snapshot
        self.model.load_state_dict(weights)
        self.optimizer.state.clear()
        for param, state in momenta.items():
            self.optimizer.state[param] = state

    def _prune_culprit(self) -> str | None:
        for stage in _CULPRIT_ORDER:
            for name, slot in self.model.slots.items():
                if slot.stage is stage:
                    self.model.prune(name)
                    return name
        return None

    def sync_param_groups(self) -> None:
        """Puts host (+ fossilized) and live seed parameters in their groups; drops stale state."""
        host = self.model.host_parameters()
        seeds = self.model.live_seed_parameters()
        self.optimizer.param_groups[0]["params"] = host
        self.optimizer.param_groups[1]["params"] = seeds
        current = {id(p) for p in host} | {id(p) for p in seeds}
        for param in [p for p in self.optimizer.state if id(p) not in current]:
            del self.optimizer.state[param]

    def _set_learning_rates(self) -> None:
        horizon = self.config.epochs
        factor = 0.5 * (1.0 + math.cos(math.pi * min(self.epoch, horizon) / horizon))
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    # --- evaluation -----------------------------------------------------------------------

    def evaluate(self, batches: BatchSource) -> tuple[float, float]:
        """Mean loss and accuracy on `batches`, in eval mode."""
        loss, accuracy, _ = self._measure(batches, counterfactual=False)
        return loss, accuracy

    def counterfactual(
        self, batches: BatchSource, *, reuse_prefix: bool = True
    ) -> dict[str, SlotMeasurement]:
        """Measures every slot holding a seed and records the measurements on the slots.

        Each seed is evaluated with its alpha forced to 0 and to 1 (whichever differ
        from its current alpha), others as they are. With `reuse_prefix` and a
        `ResumableHost`, one forward pass per batch keeps each slot's `(h, s)` and
        only the host after the slot is re-run; otherwise each variant is a full forward.

        Args:
            batches: Evaluation batches (not shuffled, not augmented).
            reuse_prefix: Reuse the activations below each slot when the host allows it.

        Returns:
            Measurement per seeded slot, in slot order.
        """
        _, _, measured = self._measure(batches, counterfactual=True, reuse_prefix=reuse_prefix)
        for name, measurement in measured.items():
            self.model.slots[name].record_measurement(
                measurement.contribution, measurement.improvement, measurement.seed_loss
            )
        return measured

    def _measure(
        self, batches: BatchSource, *, counterfactual: bool, reuse_prefix: bool = True
    ) -> tuple[float, float, dict[str, SlotMeasurement]]:
        """One pass: loss and accuracy as the model is, and the counterfactual variants."""
        model = self.model
        variants: dict[str, tuple[float, ...]] = {}
        if counterfactual:
            for name, slot in model.slots.items():
                if slot.seed is not None:
                    current = slot.effective_alpha
                    variants[name] = tuple(a for a in (0.0, 1.0) if a != current)
        reuse = reuse_prefix and model.resumable
        keys = ["base"] + [(name, a) for name, alphas in variants.items() for a in alphas]
        loss_sums: dict[object, torch.Tensor] = {}
        correct_sums: dict[object, torch.Tensor] = {}
        samples = 0

        def add(key: object, logits: torch.Tensor, y: torch.Tensor) -> None:
            loss = F.cross_entropy(logits, y, reduction="sum")
            correct = (logits.argmax(1) == y).sum()
            loss_sums[key] = loss_sums[key] + loss if key in loss_sums else loss
            correct_sums[key] = correct_sums[key] + correct if key in correct_sums else correct

        was_training = model.training
        model.eval()
        with torch.no_grad(), model.capture(list(variants) if reuse else []) as capturing:
            for x, y in batches.iterate(None, None):
                add("base", model(x), y)
                # Later suffix passes overwrite the captures of later slots: take them now.
                taps = {name: slot.captured for name, slot in capturing.items()}
                for name, alphas in variants.items():
                    for alpha in alphas:
                        if reuse:
                            tap = taps[name]
                            assert tap is not None  # a seeded slot captures on every forward
                            h, s = tap
                            y_slot = h if alpha == 0.0 else blend(h, s, alpha)
                            add((name, alpha), model.forward_after(name, y_slot), y)
                        else:
                            with model.force_alpha({name: alpha}):
                                add((name, alpha), model(x), y)
                samples += y.shape[0]
        model.train(was_training)
        if samples == 0:
            raise ValueError("evaluation batches are empty")
        losses = torch.stack([loss_sums[k] for k in keys]).double().div(samples).tolist()
        accuracies = torch.stack([correct_sums[k] for k in keys]).double().div(samples).tolist()
        loss_of = dict(zip(keys, losses, strict=True))
        accuracy_of = dict(zip(keys, accuracies, strict=True))
        measured: dict[str, SlotMeasurement] = {}
        for name in variants:
            current = model.slots[name].effective_alpha

            def loss_at(alpha: float, name: str = name, current: float = current) -> float:
                return loss_of["base"] if alpha == current else loss_of[(name, alpha)]

            accuracy_at_zero = accuracy_of["base"] if current == 0.0 else accuracy_of[(name, 0.0)]
            measured[name] = SlotMeasurement(
                contribution=accuracy_of["base"] - accuracy_at_zero,
                improvement=loss_at(1.0) - loss_at(0.0),
                seed_loss=loss_at(1.0),
            )
        return loss_of["base"], accuracy_of["base"], measured

    # --- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Full training state (cloned): weights, lifecycle, optimizer, RNGs, governor.

        Seed modules are stored as weights plus their blueprint name; `load_state_dict`
        rebuilds them with a seed factory. Everything loads with `weights_only=True`.
        """
        self.sync_param_groups()
        state: dict[str, Any] = {
            "format": _CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "batches_per_epoch": self.batches_per_epoch,
            "model": self.model.state_dict(),
            "lifecycle": self.model.lifecycle_state(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "governor": {"loss_ema": self._loss_ema, "good_batches": self._good_batches},
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return _clone(state)

    def load_state_dict(self, state: dict[str, Any], seed_factory: SeedFactory) -> None:
        """Restores `state_dict()` into this trainer and its model.

        The trainer must have been built like the saved one (same host, data and
        config). The global torch RNG is restored too, so seeds built afterwards
        match an uninterrupted run.

        Args:
            state: What `state_dict()` returned.
            seed_factory: `(blueprint, channels) -> nn.Module` building a seed of the
                saved architecture; its weights are then overwritten.

        Raises:
            ValueError: on an unknown format or a different number of batches per epoch.
        """
        if state["format"] != _CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state['format']} != {_CHECKPOINT_FORMAT}")
        if state["batches_per_epoch"] != self.batches_per_epoch:
            raise ValueError(
                f"checkpoint trained {state['batches_per_epoch']} batches per epoch, this trainer "
                f"{self.batches_per_epoch}: build it with the same data and epoch_fraction"
            )
        self.model.load_lifecycle_state(state["lifecycle"], seed_factory)
        self.model.load_state_dict(state["model"])
        self.sync_param_groups()
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.epoch = state["epoch"]
        self._loss_ema = state["governor"]["loss_ema"]
        self._good_batches = state["governor"]["good_batches"]

    def save(self, path: str | Path) -> None:
        """Writes `state_dict()` with `torch.save`."""
        torch.save(self.state_dict(), path)

    def load(self, path: str | Path, seed_factory: SeedFactory) -> None:
        """Reads a checkpoint written by `save` (`weights_only=True`) and restores it."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.load_state_dict(state, seed_factory)
