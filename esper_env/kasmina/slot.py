"""Kasmina's seed slot: one point of the host where a seed can grow, with its lifecycle.

A slot's output is `h` (the host activation entering it) while empty and while
the seed trains in isolation, `h + alpha * s` while blending and holding, and
`h + s` once fossilized. An isolated seed still runs on `h.detach()` in every
training forward; its pair `(h.detach(), s)` is kept for Tolaria's seed pass
(`MorphogeneticModel.seed_logits`), in which the layers after the slot run again
on `h.detach() + s` so that the seed learns from the task loss of the blended output
while the host, its gradients and its buffers stay exactly those of a bare host.
"""

from __future__ import annotations

import math
from typing import TypedDict

import torch
from torch import nn

from blueprints.kernels import blend
from esper_env.contracts import (
    ACTIVE_STAGES,
    LifecycleConfig,
    Op,
    SeedStage,
    SlotReport,
    TransitionResult,
)
from esper_env.kasmina.lifecycle import (
    ALLOWED_OPS,
    ISOLATED_STAGES,
    SEEDED_STAGES,
    TRANSITIONS,
    UNGATED,
    blend_alpha,
    contributes,
    improves,
)


class SlotState(TypedDict):
    """A slot's lifecycle state as plain data (what a checkpoint stores besides weights)."""

    stage: int
    blueprint: str | None
    seed_uid: int
    sample_shape: list[int] | None
    alpha: float
    blend_epochs: int
    blend_step: int
    steps_per_epoch: int
    sedated: bool
    age: int
    epochs_in_stage: int
    embargo_left: int
    contribution: float
    contribution_se: float
    improvement: float | None
    improvement_se: float
    seed_loss: float | None
    seed_loss_trend: float
    measured_stage: int | None


# Samples in the G0 probe batch (two, so that seeds with batch statistics see a batch).
_PROBE_BATCH = 2


class SeedSlot(nn.Module):
    """One seed slot and its lifecycle state (stage, alpha, counters, measurements).

    Lifecycle operations return a `TransitionResult`; a refusal is a result with
    `ok=False` and a reason, never an exception. Measurements (contribution,
    improvement, seed loss) are written by Tolaria's counterfactual pass through
    `record_measurement`.

    Args:
        name: Slot name.
        lifecycle: Gate timings and thresholds.
        channels: Channel count known before any forward pass (None: learnt from the
            first activation that passes through).
    """

    def __init__(self, name: str, lifecycle: LifecycleConfig, channels: int | None = None) -> None:
        super().__init__()
        self.name = name
        self.lifecycle = lifecycle
        self._declared_channels = channels
        #: Shape of one sample of the activation entering the slot, recorded at the first forward.
        self.sample_shape: tuple[int, ...] | None = None
        self.stage = SeedStage.DORMANT
        self.seed: nn.Module | None = None
        self.blueprint: str | None = None
        #: Identity of the current seed, unique within its model (0: none yet).
        self.seed_uid = 0
        self.alpha = 0.0
        self.blend_epochs = 0
        self.blend_step = 0
        #: Alpha-ramp steps per lifecycle epoch; Tolaria sets it to its batches per epoch.
        self.steps_per_epoch = 1
        self.sedated = False
        self.age = 0
        self.epochs_in_stage = 0
        self.embargo_left = 0
        self.contribution = 0.0
        self.contribution_se = 0.0
        self.improvement: float | None = None
        self.improvement_se = 0.0
        self.seed_loss: float | None = None
        self.seed_loss_trend = 0.0
        #: Stage in which the last measurement was taken (gates only trust fresh ones).
        self.measured_stage: SeedStage | None = None
        #: Set only inside `MorphogeneticModel.force_alpha` (counterfactual evaluation).
        self.forced_alpha: float | None = None
        #: Set only inside `MorphogeneticModel.capture`: keep (h, s) of the last forward.
        self.capturing = False
        self.captured: tuple[torch.Tensor, torch.Tensor] | None = None
        #: `(h.detach(), s)` of the last training forward of an isolated seed (the seed pass).
        self.isolated_pair: tuple[torch.Tensor, torch.Tensor] | None = None
        #: Set only inside another slot's seed pass: an isolated seed then stays out of it.
        self.quiet = False
        #: Set only inside `MorphogeneticModel.inject`: the output, whatever enters the slot.
        self.injected: torch.Tensor | None = None

    # --- forward --------------------------------------------------------------------------

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Returns the slot's output for the host activation `h` (see the module docstring)."""
        if self.sample_shape is None:
            self.sample_shape = tuple(h.shape[1:])
        if self.injected is not None:
            return self.injected
        seed = self.seed
        if seed is None:
            return h
        if self.forced_alpha is not None:
            return h if self.forced_alpha == 0.0 else blend(h, seed(h), self.forced_alpha)
        if self.stage in ISOLATED_STAGES:
            # The host sees exactly h, so a seed that emits inf or NaN cannot reach it.
            if self.quiet:
                return h
            if self.capturing:
                self.captured = (h, seed(h))
            elif self.training and torch.is_grad_enabled():
                h_detached = h.detach()
                self.isolated_pair = (h_detached, seed(h_detached))
            return h
        if self.sedated:
            if not self.capturing:
                return h
            s = seed(h)
            out = h
        else:
            s = seed(h)
            out = blend(h, s, self.alpha)
        if self.capturing:
            self.captured = (h, s)
        return out

    @property
    def effective_alpha(self) -> float:
        """Alpha the slot's output currently carries (0 while isolated, empty or sedated)."""
        if self.seed is None or self.sedated or self.stage in ISOLATED_STAGES:
            return 0.0
        return self.alpha

    @property
    def channels(self) -> int:
        """Channel count (dimension 1) of the activation entering the slot.

        Raises:
            ValueError: if neither a forward pass nor the wrapped module told it.
        """
        if self.sample_shape is not None:
            return self.sample_shape[0]
        if self._declared_channels is None:
            raise ValueError(
                f"slot {self.name!r}: channel count unknown; pass example_input to wrap() "
                "or run one forward pass first"
            )
        return self._declared_channels

    def seed_params(self) -> int:
        """Parameters of the seed in the slot (0 when empty)."""
        return 0 if self.seed is None else sum(p.numel() for p in self.seed.parameters())

    # --- operations -----------------------------------------------------------------------

    def _result(
        self, op: str, ok: bool, to_stage: SeedStage, gate: str, reason: str
    ) -> TransitionResult:
        return TransitionResult(
            ok=ok,
            slot=self.name,
            op=op,
            from_stage=self.stage,
            to_stage=to_stage if ok else self.stage,
            gate=gate,
            reason=reason,
        )

    def _illegal(self, op: str) -> TransitionResult:
        detail = ""
        if self.stage is SeedStage.EMBARGOED:
            detail = f" ({self.embargo_left} epoch(s) of embargo left)"
        legal = sorted(name for name, stage in TRANSITIONS if stage is self.stage)
        return self._result(
            op,
            False,
            self.stage,
            UNGATED,
            f"{op} is illegal from {self.stage.name}{detail}; legal here: {legal or 'none'}",
        )

    def _move(self, to_stage: SeedStage) -> None:
        self.stage = to_stage
        self.epochs_in_stage = 0

    def germinate(
        self,
        seed: nn.Module,
        blueprint: str,
        blend_epochs: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> TransitionResult:
        """DORMANT -> GERMINATED through G0 (shape kept, finite output, input untouched).

        Args:
            seed: The seed module, a residual branch: `seed(h)` must have `h`'s shape.
            blueprint: Blueprint name, kept for reports and checkpoints.
            blend_epochs: Length of the later alpha ramp, in lifecycle epochs.
            device: Device of the host; the seed is moved there.
            dtype: Floating dtype of the host; the seed is cast to it.

        Returns:
            The transition result.

        Raises:
            TypeError: if `seed` is not an `nn.Module`.
            ValueError: if `blend_epochs` < 1.
        """
        if not isinstance(seed, nn.Module):
            raise TypeError(f"seed must be an nn.Module, got {type(seed).__name__}")
        if blend_epochs < 1:
            raise ValueError(f"blend_epochs must be >= 1, got {blend_epochs}")
        key = ("germinate", self.stage)
        if key not in TRANSITIONS:
            return self._illegal("germinate")
        seed = seed.to(device=device, dtype=dtype)
        ok, reason = self._g0(seed)
        result = self._result("germinate", ok, TRANSITIONS[key].to_stage, "G0", reason)
        if ok:
            self.seed = seed.train(self.training)
            self.blueprint = blueprint
            self.blend_epochs = blend_epochs
            self._move(SeedStage.GERMINATED)
        return result

    def graft(
        self, seed: nn.Module, blueprint: str, device: torch.device, dtype: torch.dtype
    ) -> TransitionResult:
        """DORMANT -> FOSSILIZED at once through G0: a static architecture, no lifecycle.

        For baselines that train the grown architecture from the start (headroom, the
        seed paper's static-final row); Tamiyo's operations never graft.
        """
        if not isinstance(seed, nn.Module):
            raise TypeError(f"seed must be an nn.Module, got {type(seed).__name__}")
        if self.stage is not SeedStage.DORMANT:
            return self._illegal("graft")
        seed = seed.to(device=device, dtype=dtype)
        ok, reason = self._g0(seed)
        result = self._result("graft", ok, SeedStage.FOSSILIZED, "G0", reason)
        if ok:
            self.seed = seed.train(self.training)
            self.blueprint = blueprint
            self.alpha = 1.0
            self._move(SeedStage.FOSSILIZED)
        return result

    def _g0(self, seed: nn.Module) -> tuple[bool, str]:
        if self.sample_shape is None:
            return False, "slot shape unknown: run one forward pass through the model first"
        # A local generator keeps the global RNG (and so determinism elsewhere) untouched.
        gen = torch.Generator().manual_seed(0)
        first = next(iter(seed.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None else torch.float32
        probe = torch.randn((_PROBE_BATCH, *self.sample_shape), generator=gen).to(device, dtype)
        pristine = probe.clone()
        was_training = seed.training
        seed.eval()
        with torch.no_grad():
            out = seed(probe)
        seed.train(was_training)
        if not isinstance(out, torch.Tensor):
            return False, f"seed returned {type(out).__name__}, not a tensor"
        if tuple(out.shape) != tuple(probe.shape):
            return (
                False,
                f"seed output shape {tuple(out.shape)} != input shape {tuple(probe.shape)}",
            )
        if not torch.equal(probe, pristine):
            return False, "seed modified its input in place"
        bad = int((~torch.isfinite(out)).sum())
        if bad:
            return False, f"seed output has {bad} non-finite value(s) on the probe"
        return True, f"output shape {tuple(out.shape)} kept and finite on the probe"

    def advance(self) -> TransitionResult:
        """Moves one stage along the main line through its gate (G1..G4)."""
        key = ("advance", self.stage)
        if key not in TRANSITIONS:
            return self._illegal("advance")
        return self._gated("advance", TRANSITIONS[key].to_stage, TRANSITIONS[key].gate)

    def fossilize(self) -> TransitionResult:
        """HOLDING -> FOSSILIZED through G4."""
        key = ("fossilize", self.stage)
        if key not in TRANSITIONS:
            return self._illegal("fossilize")
        return self._gated("fossilize", TRANSITIONS[key].to_stage, TRANSITIONS[key].gate)

    def remove(self) -> TransitionResult:
        """FOSSILIZED -> PRUNED through G5 (maintenance: contribution no longer earns its place)."""
        key = ("remove", self.stage)
        if key not in TRANSITIONS:
            return self._illegal("remove")
        result = self._gated("remove", TRANSITIONS[key].to_stage, TRANSITIONS[key].gate)
        if result.ok:
            self._drop_seed()
        return result

    def prune(self) -> TransitionResult:
        """Any live stage -> PRUNED; the seed is dropped at once (output back to the host's)."""
        key = ("prune", self.stage)
        if key not in TRANSITIONS:
            return self._illegal("prune")
        result = self._result(
            "prune", True, SeedStage.PRUNED, UNGATED, f"pruned from {self.stage.name}"
        )
        self._move(SeedStage.PRUNED)
        self._drop_seed()
        return result

    def _drop_seed(self) -> None:
        self.seed = None
        self.alpha = 0.0
        self.sedated = False
        self.captured = None
        self.isolated_pair = None

    def _gated(self, op: str, to_stage: SeedStage, gate: str) -> TransitionResult:
        ok, reason = self._check(gate)
        result = self._result(op, ok, to_stage, gate, reason)
        if ok:
            self._move(to_stage)
            if to_stage is SeedStage.BLENDING:
                self.blend_step = 0
                self.alpha = 0.0
        return result

    def _check(self, gate: str) -> tuple[bool, str]:
        """Measured condition of gates G1..G5."""
        cfg = self.lifecycle
        if gate == "G1":
            assert self.seed is not None  # every stage G1 leaves from holds a seed
            bad = sum(int((~torch.isfinite(p)).sum()) for p in self.seed.parameters())
            if bad:
                return False, f"{bad} non-finite seed parameter value(s)"
            return True, f"all {self.seed_params()} seed parameter values finite"
        if gate == "G2":
            if self.epochs_in_stage < cfg.min_training_epochs:
                return False, (
                    f"trained {self.epochs_in_stage} epoch(s) < min_training_epochs "
                    f"{cfg.min_training_epochs}"
                )
            if self.measured_stage is not SeedStage.TRAINING or self.improvement is None:
                return False, "improvement not measured in TRAINING yet"
            ok, bound = improves(self.improvement, self.improvement_se, cfg)
            return ok, (
                f"val loss change at alpha=1 {self.improvement:+.4f} + {cfg.significance:g} x se "
                f"{self.improvement_se:.4f} = {bound:+.4f} {'<' if ok else '>='} "
                f"-min_improvement {-cfg.min_improvement:+.4f}"
            )
        if gate == "G3":
            ok = self.alpha >= 1.0
            return ok, f"alpha {self.alpha:.4f} {'reached' if ok else 'has not reached'} 1"
        if gate == "G4":
            if self.epochs_in_stage < cfg.holding_epochs:
                return False, (
                    f"held {self.epochs_in_stage} epoch(s) < holding_epochs {cfg.holding_epochs}"
                )
            if self.measured_stage is not SeedStage.HOLDING:
                return False, "contribution not measured in HOLDING yet"
            ok, text = self._contribution_test()
            return ok, text
        if gate == "G5":
            if self.measured_stage is not SeedStage.FOSSILIZED:
                return False, "contribution not measured since fossilization"
            earns, text = self._contribution_test()
            return not earns, text
        raise AssertionError(f"no measured condition for gate {gate!r}")

    def _contribution_test(self) -> tuple[bool, str]:
        """Whether the contribution beats `min_contribution` and its noise (G4; G5 negates)."""
        cfg = self.lifecycle
        ok, bound = contributes(self.contribution, self.contribution_se, cfg)
        return ok, (
            f"contribution {self.contribution:+.4f} - {cfg.fossilize_significance:g} x se "
            f"{self.contribution_se:.4f} = {bound:+.4f} {'>' if ok else '<='} "
            f"min_contribution {cfg.min_contribution:+.4f}"
        )

    def sedate(self) -> TransitionResult:
        """Forces a fossilized seed's alpha to 0, reversibly (its stage stays FOSSILIZED)."""
        return self._set_sedated(True)

    def wake(self) -> TransitionResult:
        """Undoes `sedate`: the fossilized seed's alpha is 1 again."""
        return self._set_sedated(False)

    def _set_sedated(self, value: bool) -> TransitionResult:
        op = "sedate" if value else "wake"
        if self.stage is not SeedStage.FOSSILIZED:
            return self._result(
                op, False, self.stage, UNGATED, f"{op} needs FOSSILIZED, not {self.stage.name}"
            )
        if self.sedated == value:
            state = "sedated" if value else "awake"
            return self._result(op, False, self.stage, UNGATED, f"seed is already {state}")
        self.sedated = value
        return self._result(op, True, self.stage, UNGATED, f"alpha now {self.effective_alpha:.0f}")

    # --- clocks and measurements ----------------------------------------------------------

    def step_blend(self) -> None:
        """Advances the alpha ramp by one training batch (no-op unless BLENDING)."""
        if self.stage is not SeedStage.BLENDING:
            return
        total = self.blend_epochs * self.steps_per_epoch
        self.blend_step = min(self.blend_step + 1, total)
        self.alpha = blend_alpha(self.lifecycle.blend_schedule, self.blend_step / total)

    def end_epoch(self) -> list[TransitionResult]:
        """Ticks the counters and runs the automatic transitions (embargo, reset)."""
        results: list[TransitionResult] = []
        if self.stage in SEEDED_STAGES:
            self.age += 1
        self.epochs_in_stage += 1
        if self.stage is SeedStage.PRUNED:
            n = self.lifecycle.embargo_epochs
            results.append(
                self._result(
                    "embargo", True, SeedStage.EMBARGOED, UNGATED, f"embargo of {n} epoch(s)"
                )
            )
            self._move(SeedStage.EMBARGOED)
            self.embargo_left = n
        elif self.stage is SeedStage.EMBARGOED:
            self.embargo_left -= 1
        if self.stage is SeedStage.EMBARGOED and self.embargo_left <= 0:
            served = f"embargo of {self.lifecycle.embargo_epochs} epoch(s) served"
            results.append(self._result("expire", True, SeedStage.RESETTING, "embargo", served))
            self._move(SeedStage.RESETTING)
            self._reset()
            results.append(self._result("settle", True, SeedStage.DORMANT, UNGATED, "slot wiped"))
            self._move(SeedStage.DORMANT)
        return results

    def _reset(self) -> None:
        self._drop_seed()
        self.blueprint = None
        self.blend_epochs = 0
        self.blend_step = 0
        self.age = 0
        self.embargo_left = 0
        self.contribution = 0.0
        self.contribution_se = 0.0
        self.improvement = None
        self.improvement_se = 0.0
        self.seed_loss = None
        self.seed_loss_trend = 0.0
        self.measured_stage = None

    def record_measurement(
        self,
        contribution: float,
        improvement: float,
        seed_loss: float,
        *,
        contribution_se: float = 0.0,
        improvement_se: float = 0.0,
    ) -> None:
        """Stores Tolaria's counterfactual measurement of the current seed.

        Args:
            contribution: Val accuracy at the current alpha minus at alpha 0.
            improvement: Val loss at alpha 1 minus at alpha 0 (negative: the seed helps).
            seed_loss: Val loss at alpha 1; its change since the last measurement is the trend.
            contribution_se: Standard error of `contribution` (paired over samples).
            improvement_se: Standard error of `improvement` (paired over samples).
        """
        if self.seed_loss is not None and math.isfinite(self.seed_loss):
            self.seed_loss_trend = seed_loss - self.seed_loss
        self.contribution = contribution
        self.contribution_se = contribution_se
        self.improvement = improvement
        self.improvement_se = improvement_se
        self.seed_loss = seed_loss
        self.measured_stage = self.stage

    # --- views ----------------------------------------------------------------------------

    def allowed_ops(self) -> frozenset[Op]:
        """Tamiyo's operations legal from the current stage (measured conditions ignored)."""
        return ALLOWED_OPS[self.stage]

    def is_live(self) -> bool:
        """Whether the slot holds a seed that is not yet part of the host."""
        return self.stage in ACTIVE_STAGES

    def report(self) -> SlotReport:
        """The slot's counters as a typed report."""
        return SlotReport(
            name=self.name,
            stage=self.stage,
            alpha=self.effective_alpha,
            blueprint=self.blueprint,
            age=self.age,
            epochs_in_stage=self.epochs_in_stage,
            params=self.seed_params(),
            contribution=self.contribution,
            contribution_se=self.contribution_se,
            improvement=0.0 if self.improvement is None else self.improvement,
            improvement_se=self.improvement_se,
            seed_loss_trend=self.seed_loss_trend,
        )

    def lifecycle_state(self) -> SlotState:
        """Plain-data lifecycle state (no modules), for checkpoints."""
        return SlotState(
            stage=int(self.stage),
            blueprint=self.blueprint,
            seed_uid=self.seed_uid,
            sample_shape=None if self.sample_shape is None else list(self.sample_shape),
            alpha=self.alpha,
            blend_epochs=self.blend_epochs,
            blend_step=self.blend_step,
            steps_per_epoch=self.steps_per_epoch,
            sedated=self.sedated,
            age=self.age,
            epochs_in_stage=self.epochs_in_stage,
            embargo_left=self.embargo_left,
            contribution=self.contribution,
            contribution_se=self.contribution_se,
            improvement=self.improvement,
            improvement_se=self.improvement_se,
            seed_loss=self.seed_loss,
            seed_loss_trend=self.seed_loss_trend,
            measured_stage=None if self.measured_stage is None else int(self.measured_stage),
        )

    def load_lifecycle_state(self, state: SlotState) -> None:
        """Restores what `lifecycle_state` returned (the seed module is installed separately)."""
        shape, measured = state["sample_shape"], state["measured_stage"]
        self.stage = SeedStage(state["stage"])
        self.blueprint = state["blueprint"]
        self.seed_uid = state["seed_uid"]
        self.sample_shape = None if shape is None else tuple(shape)
        self.alpha = state["alpha"]
        self.blend_epochs = state["blend_epochs"]
        self.blend_step = state["blend_step"]
        self.steps_per_epoch = state["steps_per_epoch"]
        self.sedated = state["sedated"]
        self.age = state["age"]
        self.epochs_in_stage = state["epochs_in_stage"]
        self.embargo_left = state["embargo_left"]
        self.contribution = state["contribution"]
        self.contribution_se = state["contribution_se"]
        self.improvement = state["improvement"]
        self.improvement_se = state["improvement_se"]
        self.seed_loss = state["seed_loss"]
        self.seed_loss_trend = state["seed_loss_trend"]
        self.measured_stage = None if measured is None else SeedStage(measured)
