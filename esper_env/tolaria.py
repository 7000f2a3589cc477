"""Tolaria: the training engine of a morphogenetic model.

`Trainer` trains the host and its seeds (SGD with Nesterov momentum; the host
on a cosine schedule over `TrainConfig.epochs`, each live seed in its own
parameter group on a cosine schedule that starts at `seed_lr` when it is
germinated and ends with the episode), evaluates, measures each seed
counterfactually, and guards the run with a governor that rolls back to the
last good state when a loss turns non-finite or spikes.

A seed training in isolation learns from the task loss of the blended output:
after each training forward, `MorphogeneticModel.seed_logits` reruns the host
after the seed's slot on `h.detach() + s`, and that loss is added to the host's
(it reaches only the seed's parameters). Cost: one forward and backward of the
layers after the slot per isolated seed.

Measurements (contribution, improvement, the gates' inputs) compare a seed at
two alphas with the layers after its slot normalising by the evaluation batch's
own statistics (`MorphogeneticModel.batch_statistics`), so that each alpha is
judged under statistics consistent with it: the running statistics after a slot
have only seen the alpha the host trained with. The layers below the slot and the
seed itself never see the slot's alpha, so they keep their running statistics.
Validation batches are class-balanced (see `esper_env.envs.world.load_splits`),
so batch statistics are those of the data. Standard errors are paired over
validation samples. Cost: per seeded slot, two or three passes of the layers after
it per validation batch (alpha 0, its alpha, 1), and no recalibration pass.

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
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from blueprints.kernels import blend
from esper_env.contracts import EpochMetrics, SeedStage, TrainConfig
from esper_env.kasmina.model import MorphogeneticModel, SeedFactory
from esper_env.kasmina.slot import SeedSlot, SlotState

#: Batches between the governor's looks at the losses (one host-device sync per look).
GOVERNOR_CHECK_EVERY = 16
#: Decay of the governor's running mean of batch losses.
LOSS_EMA_DECAY = 0.9
#: Stages whose seed changes the host's function during an epoch (governor culprit candidates).
_CULPRIT_STAGES = frozenset({SeedStage.BLENDING, SeedStage.HOLDING})
_CHECKPOINT_FORMAT = 2


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

    Both alphas of each difference are evaluated with batch statistics (see the module
    docstring); standard errors are over validation samples, paired.

    Attributes:
        contribution: Accuracy at the seed's current alpha minus with its alpha forced to 0.
        contribution_se: Standard error of `contribution`.
        improvement: Loss with the seed at alpha 1 minus at alpha 0 (negative: it helps).
        improvement_se: Standard error of `improvement`.
        seed_loss: Loss with the seed at alpha 1.
    """

    contribution: float
    contribution_se: float
    improvement: float
    improvement_se: float
    seed_loss: float

    def record(self, slot: SeedSlot) -> None:
        """Stores the measurement on the slot it measured."""
        slot.record_measurement(
            self.contribution,
            self.improvement,
            self.seed_loss,
            contribution_se=self.contribution_se,
            improvement_se=self.improvement_se,
        )


@dataclass
class _Tally:
    loss_sum: float = 0.0
    correct: float = 0.0
    samples: int = 0
    batches: int = 0


@dataclass(frozen=True)
class _Batch:
    """One trained batch awaiting the governor's look (tensors stay on the device until then)."""

    x: torch.Tensor
    y: torch.Tensor
    loss: torch.Tensor
    correct: torch.Tensor
    seed_losses: dict[str, torch.Tensor]
    alphas: dict[str, float]


@dataclass(frozen=True)
class _Failure:
    """What the governor found: why, the batch it happened on, and the seed it blames if known."""

    reason: str
    batch: _Batch | None
    culprit: str | None = None


@dataclass(frozen=True)
class _Snapshot:
    """Everything an epoch changes, as it was at the epoch's start."""

    weights: dict[str, torch.Tensor]
    momenta: dict[torch.Tensor, dict[str, Any]]
    slots: dict[str, SlotState]
    loss_ema: float | None
    good_batches: int
    generator: torch.Tensor


def resolve_device(name: str) -> torch.device:
    """Maps "auto" to CUDA when present, else CPU; other names go to `torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _cosine(step: int, span: int) -> float:
    """Cosine decay factor after `step` of `span` steps (1 at the start, 0 at the end)."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, span) / span))


def _mean_se(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of the mean of a 1-D tensor (SE 0 for a single value)."""
    n = values.numel()
    if n < 2:
        return values.mean(), torch.zeros((), dtype=values.dtype, device=values.device)
    return values.mean(), values.std() / math.sqrt(n)


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
            [{"params": model.host_parameters(), "lr": config.lr, "slot": None}],
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,
            weight_decay=config.weight_decay,
        )
        #: Lifecycle epochs trained so far.
        self.epoch = 0
        self._loss_ema: float | None = None
        self._good_batches = 0
        self.sync_param_groups()

    # --- training -------------------------------------------------------------------------

    def train_epoch(self) -> EpochMetrics:
        """Trains one lifecycle epoch, evaluates on val and measures every seed.

        The governor screens each batch's losses: a non-finite host loss, a spike above
        `governor_spike_factor` times the running mean (once `governor_warmup_batches`
        good batches have passed), a non-finite loss of an isolated seed, or a
        non-finite validation loss restores everything the epoch changed (weights,
        buffers, optimizer, the slots' lifecycle state, the governor's statistics and
        the batch generator) to the epoch's start, prunes the seed that caused it and
        ends the epoch there. The culprit of a seed's own loss is that seed; otherwise
        it is measured: the failing batch is rerun on the restored weights, at the
        alphas of the failure, with each blending or holding seed in turn at alpha 0,
        and the seed whose removal lowers the loss most is pruned (none if no removal
        lowers it).

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
        pending: list[_Batch] = []
        failure: _Failure | None = None
        for x, y in self.train_batches.iterate(self.generator, self.batches_per_epoch):
            alphas = {name: slot.alpha for name, slot in model.slots.items()}
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            seed_losses = {
                name: F.cross_entropy(seed_logits, y)
                for name, seed_logits in model.seed_logits(x).items()
            }
            self.optimizer.zero_grad(set_to_none=True)
            (loss + sum(seed_losses.values())).backward()
            self.optimizer.step()
            model.step_blend()
            pending.append(
                _Batch(
                    x,
                    y,
                    loss.detach(),
                    (logits.argmax(1) == y).sum(),
                    {name: value.detach() for name, value in seed_losses.items()},
                    alphas,
                )
            )
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
                failure = _Failure(f"non-finite validation loss {val_loss}", None)
        pruned: str | None = None
        if failure is not None:
            at_failure = {name: slot.alpha for name, slot in model.slots.items()}
            if failure.batch is not None:
                at_failure = failure.batch.alphas
            self._restore(snapshot)
            pruned = failure.culprit or self._measured_culprit(failure.batch, at_failure)
            if pruned is not None:
                model.prune(pruned)
            self.sync_param_groups()
            val_loss, val_accuracy, measured = self._measure(self.val_batches, counterfactual=True)
        for name, measurement in measured.items():
            measurement.record(model.slots[name])
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
            rollback_reason=None if failure is None else failure.reason,
            rollback_pruned=pruned,
        )

    def _screen(self, pending: list[_Batch], tally: _Tally) -> _Failure | None:
        """The governor's look at a run of batches, in order; returns a failure or None."""
        # One host-device transfer for the whole run of batches.
        flat = torch.stack(
            [
                value.to(torch.float32)
                for b in pending
                for value in (b.loss, b.correct, *b.seed_losses.values())
            ]
        ).tolist()
        factor = self.config.governor_spike_factor
        offset = 0
        for batch in pending:
            loss, correct = flat[offset], flat[offset + 1]
            seed_losses = dict(zip(batch.seed_losses, flat[offset + 2 :], strict=False))
            offset += 2 + len(batch.seed_losses)
            index = tally.batches + 1
            if not math.isfinite(loss):
                return _Failure(f"non-finite training loss {loss} at batch {index}", batch)
            for name, seed_loss in seed_losses.items():
                if not math.isfinite(seed_loss):
                    return _Failure(
                        f"non-finite loss {seed_loss} of the seed in {name} at batch {index}",
                        batch,
                        culprit=name,
                    )
            ema = self._loss_ema
            armed = self._good_batches >= self.config.governor_warmup_batches
            if armed and ema is not None and loss > factor * ema:
                return _Failure(
                    f"loss spike {loss:.4g} > {factor:g} x running mean {ema:.4g} at batch {index}",
                    batch,
                )
            self._loss_ema = (
                loss if ema is None else LOSS_EMA_DECAY * ema + (1 - LOSS_EMA_DECAY) * loss
            )
            self._good_batches += 1
            size = batch.y.shape[0]
            tally.loss_sum += loss * size
            tally.correct += correct
            tally.samples += size
            tally.batches = index
        return None

    def _snapshot(self) -> _Snapshot:
        return _Snapshot(
            weights={key: value.detach().clone() for key, value in self.model.state_dict().items()},
            momenta={param: _clone(dict(state)) for param, state in self.optimizer.state.items()},
            slots={name: slot.lifecycle_state() for name, slot in self.model.slots.items()},
            loss_ema=self._loss_ema,
            good_batches=self._good_batches,
            generator=self.generator.get_state(),
        )

    def _restore(self, snapshot: _Snapshot) -> None:
        self.model.load_state_dict(snapshot.weights)
        self.optimizer.state.clear()
        for param, state in snapshot.momenta.items():
            self.optimizer.state[param] = state
        for name, state in snapshot.slots.items():
            self.model.slots[name].load_lifecycle_state(state)
        self._loss_ema = snapshot.loss_ema
        self._good_batches = snapshot.good_batches
        self.generator.set_state(snapshot.generator)

    def _measured_culprit(self, batch: _Batch | None, alphas: dict[str, float]) -> str | None:
        """The blending or holding seed whose removal lowers the failing batch's loss most."""
        model = self.model
        candidates = [
            name
            for name, slot in model.slots.items()
            if slot.stage in _CULPRIT_STAGES and slot.seed is not None and not slot.sedated
        ]
        if not candidates:
            return None
        if batch is None:  # a validation failure: judge on the first validation batch
            x, y = next(iter(self.val_batches.iterate(None, 1)))
        else:
            x, y = batch.x, batch.y
        at_failure = {name: alphas[name] for name in candidates}

        def loss_with(forced: dict[str, float]) -> float:
            with torch.no_grad(), model.batch_statistics(), model.force_alpha(forced):
                value = float(F.cross_entropy(model(x), y))
            return value if math.isfinite(value) else math.inf

        base = loss_with(at_failure)
        harms = {}
        for name in candidates:
            without = loss_with({**at_failure, name: 0.0})
            harms[name] = -math.inf if without == math.inf else base - without
        culprit = max(candidates, key=lambda name: harms[name])
        return culprit if harms[culprit] > 0 else None

    def sync_param_groups(self) -> None:
        """Host (+ fossilized) parameters in group 0, one group per live seed; drops stale state.

        Momentum of parameters that stay is kept; a seed's group is new when it is germinated.
        """
        groups = self.optimizer.param_groups
        seed_lrs = {group["slot"]: group["lr"] for group in groups[1:]}
        groups[0]["params"] = self.model.host_parameters()
        del groups[1:]
        for name, slot in self.model.slots.items():
            if slot.is_live() and slot.seed is not None:
                self.optimizer.add_param_group(
                    {
                        "params": list(slot.seed.parameters()),
                        "lr": seed_lrs.get(name, self.config.seed_lr),
                        "slot": name,
                    }
                )
        current = {id(p) for group in groups for p in group["params"]}
        for param in [p for p in self.optimizer.state if id(p) not in current]:
            del self.optimizer.state[param]

    def _set_learning_rates(self) -> None:
        """Cosine schedules: the host's over the episode, each seed's from its germination on."""
        horizon = self.config.epochs
        groups = self.optimizer.param_groups
        groups[0]["lr"] = self.config.lr * _cosine(self.epoch, horizon)
        for group in groups[1:]:
            age = self.model.slots[group["slot"]].age
            span = max(1, horizon - (self.epoch - age))
            group["lr"] = self.config.seed_lr * _cosine(age, span)

    # --- evaluation -----------------------------------------------------------------------

    def evaluate(
        self, batches: BatchSource, *, batch_statistics: bool = False
    ) -> tuple[float, float]:
        """Mean loss and accuracy on `batches`, in eval mode.

        Args:
            batches: Evaluation batches.
            batch_statistics: Normalise with each batch's own statistics instead of the
                running ones (for comparisons across alphas; see the module docstring).
        """
        loss, accuracy, _ = self._measure(
            batches, counterfactual=False, batch_statistics=batch_statistics
        )
        return loss, accuracy

    def counterfactual(
        self, batches: BatchSource, *, reuse_prefix: bool = True
    ) -> dict[str, SlotMeasurement]:
        """Measures every slot holding a seed and records the measurements on the slots.

        Each seed is evaluated at alpha 0, at its current alpha and at 1, others as
        they are. The eval-mode forward keeps each slot's `(h, s)` (the layers below a
        slot, and the seed itself, never see its alpha, so their running statistics
        hold); the layers after the slot then run on `h + alpha * s` with batch
        statistics (see the module docstring). With `reuse_prefix` and a
        `ResumableHost` only those layers run; otherwise each variant is a full forward
        with the slot's output injected. Both give the same figures.

        Args:
            batches: Evaluation batches (not shuffled, not augmented, class-balanced).
            reuse_prefix: Reuse the activations below each slot when the host allows it.

        Returns:
            Measurement per seeded slot, in slot order.
        """
        _, _, measured = self._measure(batches, counterfactual=True, reuse_prefix=reuse_prefix)
        for name, measurement in measured.items():
            measurement.record(self.model.slots[name])
        return measured

    def _measure(
        self,
        batches: BatchSource,
        *,
        counterfactual: bool,
        reuse_prefix: bool = True,
        batch_statistics: bool = False,
    ) -> tuple[float, float, dict[str, SlotMeasurement]]:
        """One pass: loss and accuracy as the model is (eval mode), and the counterfactuals."""
        model = self.model
        variants: dict[str, tuple[float, ...]] = {}
        if counterfactual:
            for name, slot in model.slots.items():
                if slot.seed is not None:
                    variants[name] = tuple(sorted({0.0, slot.effective_alpha, 1.0}))
        reuse = reuse_prefix and model.resumable
        base_loss: list[torch.Tensor] = []
        base_correct: list[torch.Tensor] = []
        # Per (slot, alpha): per-sample losses and correctness, one tensor per batch.
        losses: dict[tuple[str, float], list[torch.Tensor]] = {}
        corrects: dict[tuple[str, float], list[torch.Tensor]] = {}
        samples = 0

        def add(key: tuple[str, float], logits: torch.Tensor, y: torch.Tensor) -> None:
            losses.setdefault(key, []).append(F.cross_entropy(logits, y, reduction="none"))
            corrects.setdefault(key, []).append(logits.argmax(1) == y)

        was_training = model.training
        model.eval()
        with torch.no_grad(), model.capture(list(variants)) as capturing:
            for x, y in batches.iterate(None, None):
                with model.batch_statistics() if batch_statistics else nullcontext():
                    logits = model(x)
                base_loss.append(F.cross_entropy(logits, y, reduction="sum"))
                base_correct.append((logits.argmax(1) == y).sum())
                samples += y.shape[0]
                # Later variant passes overwrite the captures of later slots: take them now.
                taps = {name: slot.captured for name, slot in capturing.items()}
                with model.batch_statistics():
                    for name, alphas in variants.items():
                        tap = taps[name]
                        assert tap is not None  # a seeded slot captures on every forward
                        h, s = tap
                        for alpha in alphas:
                            y_slot = h if alpha == 0.0 else blend(h, s, alpha)
                            if reuse:
                                add((name, alpha), model.forward_after(name, y_slot), y)
                            else:
                                with model.inject(name, y_slot):
                                    add((name, alpha), model(x), y)
        model.train(was_training)
        if samples == 0:
            raise ValueError("evaluation batches are empty")
        stats = [torch.stack(base_loss).sum().double(), torch.stack(base_correct).sum().double()]
        for name in variants:
            current = model.slots[name].effective_alpha
            loss_at_one = torch.cat(losses[(name, 1.0)]).double()
            loss_gap = loss_at_one - torch.cat(losses[(name, 0.0)]).double()
            hit_gap = (
                torch.cat(corrects[(name, current)]).double()
                - torch.cat(corrects[(name, 0.0)]).double()
            )
            stats += [*_mean_se(hit_gap), *_mean_se(loss_gap), loss_at_one.mean()]
        values = torch.stack(stats).tolist()  # one host-device transfer
        measured = {
            name: SlotMeasurement(*values[2 + 5 * i : 7 + 5 * i]) for i, name in enumerate(variants)
        }
        return values[0] / samples, values[1] / samples, measured

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
