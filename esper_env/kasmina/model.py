"""Kasmina's morphogenetic model: a host network with named seed slots.

Each slot sits after a named submodule of the host and is applied by a forward
hook on that submodule, so the host's own code, parameter names and state dict
stay as they were. A host that can resume its forward pass after a slot (see
`ResumableHost`) lets counterfactual evaluation skip the part below the slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol, TypedDict, runtime_checkable

import torch
from torch import nn

from esper_env.contracts import (
    LifecycleConfig,
    Op,
    SeedStage,
    SlotReport,
    TransitionResult,
)
from esper_env.kasmina.lifecycle import DEFAULT_LIFECYCLE, SEEDED_STAGES
from esper_env.kasmina.slot import SeedSlot, SlotState

#: Builds a seed module from its blueprint name and the slot's channel count (checkpoint loading).
SeedFactory = Callable[[str, int], nn.Module]


class ModelState(TypedDict):
    """A model's lifecycle state as plain data (what a checkpoint stores besides weights)."""

    next_seed_uid: int
    slots: dict[str, SlotState]


@runtime_checkable
class ResumableHost(Protocol):
    """A host that can run the rest of its forward pass from the output of a named submodule."""

    def forward_after(self, module_path: str, y: torch.Tensor) -> torch.Tensor:
        """Returns the host's output given `y` as the output of submodule `module_path`."""
        ...


class SlotHook:
    """Forward hook that passes a host submodule's output through its seed slot."""

    def __init__(self, slot: SeedSlot) -> None:
        self.slot = slot

    def __call__(self, module: nn.Module, args: tuple[object, ...], output: object) -> torch.Tensor:
        """Applies the slot to the submodule's output."""
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"slot {self.slot.name!r}: its submodule returned {type(output).__name__}; "
                "seed slots need a submodule whose output is one tensor"
            )
        return self.slot(output)


class MorphogeneticModel(nn.Module):
    """A host network with seed slots and the lifecycle operations on them.

    Lifecycle operations take a slot name and return a `TransitionResult`; a
    refused operation is a result with `ok=False`, never an exception (an unknown
    slot name is a programming error and raises `KeyError`).

    Args:
        host: The network; hooks are registered on it, in place.
        slot_points: Slot name -> path of the host submodule the slot follows.
        lifecycle: Gate timings and thresholds.
        example_input: A batch to probe the activation shape at each slot (eval
            mode, no gradients); without it, shapes are learnt at the first forward.
    """

    def __init__(
        self,
        host: nn.Module,
        slot_points: Mapping[str, str],
        lifecycle: LifecycleConfig = DEFAULT_LIFECYCLE,
        *,
        example_input: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if not slot_points:
            raise ValueError("a morphogenetic model needs at least one slot point")
        modules = dict(host.named_modules())
        missing = [path for path in slot_points.values() if path not in modules or path == ""]
        if missing:
            children = [name for name, _ in host.named_children()]
            raise ValueError(
                f"no submodule named {missing} in {type(host).__name__}; "
                f"its top-level children are {children} (use dotted paths for deeper ones)"
            )
        if len(set(slot_points.values())) != len(slot_points):
            raise ValueError(f"each submodule may carry one slot, got {dict(slot_points)}")
        for path in slot_points.values():
            if any(isinstance(h, SlotHook) for h in modules[path]._forward_hooks.values()):
                raise ValueError(f"submodule {path!r} already carries a seed slot")
        self.host = host
        self.lifecycle = lifecycle
        self.slot_paths = dict(slot_points)
        slots = [
            SeedSlot(name, lifecycle, _declared_channels(modules[path]))
            for name, path in slot_points.items()
        ]
        self.slot_modules = nn.ModuleList(slots)
        #: Slots by name, in host order of declaration.
        self.slots: dict[str, SeedSlot] = dict(zip(slot_points, slots, strict=True))
        for slot, path in zip(slots, slot_points.values(), strict=True):
            modules[path].register_forward_hook(SlotHook(slot))
        self._base_params = sum(p.numel() for p in host.parameters())
        self._next_seed_uid = 1
        if example_input is not None:
            self._probe(example_input)

    def _probe(self, x: torch.Tensor) -> None:
        modes = {m: m.training for m in self.modules()}
        self.eval()
        with torch.no_grad():
            self(x)
        for module, mode in modes.items():
            module.training = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Runs the host; the slots act through their hooks."""
        return self.host(x)

    # --- structure ------------------------------------------------------------------------

    def _slot(self, name: str) -> SeedSlot:
        if name not in self.slots:
            raise KeyError(f"no slot named {name!r}; slots are {list(self.slots)}")
        return self.slots[name]

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        first = next(self.host.parameters(), None)
        if first is None:
            return torch.device("cpu"), torch.float32
        return first.device, first.dtype

    @property
    def resumable(self) -> bool:
        """Whether the host can resume after a slot (counterfactuals then skip the prefix)."""
        return isinstance(self.host, ResumableHost)

    def forward_after(self, slot: str, y: torch.Tensor) -> torch.Tensor:
        """Runs the host from `y` as slot `slot`'s output (later slots act as usual).

        Raises:
            TypeError: if the host is not a `ResumableHost`.
        """
        if not isinstance(self.host, ResumableHost):
            raise TypeError(
                f"{type(self.host).__name__} cannot resume after a slot; run the full forward"
            )
        self._slot(slot)
        return self.host.forward_after(self.slot_paths[slot], y)

    @contextmanager
    def force_alpha(self, alphas: Mapping[str, float]) -> Iterator[None]:
        """Within the block, the named slots' seeds act with these alphas (counterfactuals)."""
        slots = [(self._slot(name), alpha) for name, alpha in alphas.items()]
        try:
            for slot, alpha in slots:
                slot.forced_alpha = float(alpha)
            yield
        finally:
            for slot, _ in slots:
                slot.forced_alpha = None

    @contextmanager
    def inject(self, name: str, y: torch.Tensor) -> Iterator[None]:
        """Within the block, slot `name` outputs `y` whatever enters it (the rest runs as usual)."""
        slot = self._slot(name)
        try:
            slot.injected = y
            yield
        finally:
            slot.injected = None

    @contextmanager
    def capture(self, names: list[str]) -> Iterator[dict[str, SeedSlot]]:
        """Within the block, the named slots keep `(h, s)` of each forward in `slot.captured`."""
        slots = {name: self._slot(name) for name in names}
        try:
            for slot in slots.values():
                slot.capturing = True
            yield slots
        finally:
            for slot in slots.values():
                slot.capturing = False
                slot.captured = None

    @contextmanager
    def batch_statistics(self) -> Iterator[None]:
        """Within the block every BatchNorm normalises with its batch's own statistics.

        Running statistics are neither used nor updated (buffers stay bit-identical),
        so a measurement at any alpha is judged under statistics of that alpha, not
        under running statistics accumulated at another one.
        """
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(m.training, m.track_running_stats) for m in norms]
        try:
            for m in norms:
                m.training, m.track_running_stats = True, False
            yield
        finally:
            for m, (training, track) in zip(norms, saved, strict=True):
                m.training, m.track_running_stats = training, track

    def seed_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of the blended output for each seed that trained in isolation in the last forward.

        Call right after a training forward of `x`. For each isolated seed, the host
        after its slot runs again on `h.detach() + s` (a `ResumableHost` resumes after
        the slot; another host reruns the part below the slot too, without building a
        graph for it). Only that seed's parameters receive gradient from these logits:
        every other parameter is frozen for the pass, other isolated seeds stay out of
        it, and BatchNorm layers use the pass's batch statistics without touching
        their buffers. So the seed learns what would help once it is blended in, and
        the host stays bit-identical to a host without the seed.

        Args:
            x: The batch of the training forward just run.

        Returns:
            Logits per slot name, for the slots whose seed trained in isolation.
        """
        logits: dict[str, torch.Tensor] = {}
        for name, slot in self.slots.items():
            pair, slot.isolated_pair = slot.isolated_pair, None
            if pair is None or slot.seed is None:
                continue
            h, s = pair
            own = {id(p) for p in slot.seed.parameters()}
            frozen = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
            others = [other for other in self.slots.values() if other is not slot]
            try:
                for p in frozen:
                    p.requires_grad_(False)
                for other in others:
                    other.quiet = True
                with self.batch_statistics():
                    if self.resumable:
                        logits[name] = self.forward_after(name, h + s)
                    else:
                        with self.inject(name, h + s):
                            logits[name] = self(x)
            finally:
                for other in others:
                    other.quiet = False
                for p in frozen:
                    p.requires_grad_(True)
        return logits

    # --- counts ---------------------------------------------------------------------------

    def base_param_count(self) -> int:
        """Parameters of the bare host as constructed."""
        return self._base_params

    def host_param_count(self) -> int:
        """Parameters of the host for rent: the bare host plus fossilized seeds."""
        fossil = sum(
            s.seed_params() for s in self.slots.values() if s.stage is SeedStage.FOSSILIZED
        )
        return self._base_params + fossil

    def seed_param_count(self) -> int:
        """Parameters of live (not yet fossilized) seeds."""
        return sum(s.seed_params() for s in self.slots.values() if s.is_live())

    def host_parameters(self) -> list[nn.Parameter]:
        """Host parameters followed by those of fossilized seeds (Tolaria's host group)."""
        params = list(self.host.parameters())
        for slot in self.slots.values():
            if slot.stage is SeedStage.FOSSILIZED and slot.seed is not None:
                params.extend(slot.seed.parameters())
        return params

    def live_seed_parameters(self) -> list[nn.Parameter]:
        """Parameters of live seeds, in slot order (Tolaria's seed group)."""
        params: list[nn.Parameter] = []
        for slot in self.slots.values():
            if slot.is_live() and slot.seed is not None:
                params.extend(slot.seed.parameters())
        return params

    # --- lifecycle ------------------------------------------------------------------------

    def germinate(
        self, slot: str, seed: nn.Module, blueprint: str, blend_epochs: int
    ) -> TransitionResult:
        """DORMANT -> GERMINATED through G0; the seed is moved to the host's device and dtype.

        Args:
            slot: Slot name.
            seed: Residual seed module: `seed(h)` must have `h`'s shape.
            blueprint: Blueprint name (reports, checkpoints).
            blend_epochs: Lifecycle epochs the alpha ramp will take once BLENDING.
        """
        target = self._slot(slot)
        device, dtype = self._device_dtype()
        result = target.germinate(seed, blueprint, blend_epochs, device, dtype)
        if result.ok:
            target.seed_uid = self._next_seed_uid
            self._next_seed_uid += 1
        return result

    def graft(self, slot: str, seed: nn.Module, blueprint: str) -> TransitionResult:
        """Installs a seed as part of the host at once (FOSSILIZED, alpha 1), through G0.

        A static architecture for baselines (the host with seeds from epoch 0), not a
        lifecycle operation.
        """
        target = self._slot(slot)
        device, dtype = self._device_dtype()
        result = target.graft(seed, blueprint, device, dtype)
        if result.ok:
            target.seed_uid = self._next_seed_uid
            self._next_seed_uid += 1
        return result

    def advance(self, slot: str) -> TransitionResult:
        """One step along GERMINATED -> TRAINING -> BLENDING -> HOLDING -> FOSSILIZED (G1..G4)."""
        return self._slot(slot).advance()

    def fossilize(self, slot: str) -> TransitionResult:
        """HOLDING -> FOSSILIZED through G4."""
        return self._slot(slot).fossilize()

    def prune(self, slot: str) -> TransitionResult:
        """Live seed -> PRUNED (then EMBARGOED at the next `end_epoch`)."""
        return self._slot(slot).prune()

    def remove(self, slot: str) -> TransitionResult:
        """Maintenance: FOSSILIZED -> PRUNED through G5."""
        return self._slot(slot).remove()

    def sedate(self, slot: str) -> TransitionResult:
        """Forces a fossilized seed's alpha to 0, reversibly."""
        return self._slot(slot).sedate()

    def wake(self, slot: str) -> TransitionResult:
        """Restores a sedated fossilized seed's alpha to 1."""
        return self._slot(slot).wake()

    def set_steps_per_epoch(self, steps: int) -> None:
        """Sets the `step_blend` calls per lifecycle epoch (Tolaria's batches per epoch)."""
        if steps < 1:
            raise ValueError(f"steps per epoch must be >= 1, got {steps}")
        for slot in self.slots.values():
            slot.steps_per_epoch = steps

    def step_blend(self) -> None:
        """Advances every BLENDING slot's alpha ramp by one training batch.

        A ramp of `blend_epochs` epochs takes `blend_epochs * steps_per_epoch` calls.
        """
        for slot in self.slots.values():
            slot.step_blend()

    def end_epoch(self) -> list[TransitionResult]:
        """Ends a lifecycle epoch: counters tick, embargoes count down, expired slots reset."""
        return [result for slot in self.slots.values() for result in slot.end_epoch()]

    def reports(self) -> list[SlotReport]:
        """Per-slot reports, in slot order."""
        return [slot.report() for slot in self.slots.values()]

    def allowed_ops(self, slot: str) -> frozenset[Op]:
        """Tamiyo's operations legal for the slot's stage (measured gate conditions ignored)."""
        return self._slot(slot).allowed_ops()

    # --- checkpoints ----------------------------------------------------------------------

    def lifecycle_state(self) -> ModelState:
        """The slots' lifecycle state as plain data; weights are in `state_dict()`."""
        return ModelState(
            next_seed_uid=self._next_seed_uid,
            slots={name: slot.lifecycle_state() for name, slot in self.slots.items()},
        )

    def load_lifecycle_state(self, state: ModelState, seed_factory: SeedFactory) -> None:
        """Restores `lifecycle_state()`, rebuilding seed modules with `seed_factory`.

        Call `load_state_dict` afterwards to restore the weights of host and seeds.

        Args:
            state: What `lifecycle_state()` returned.
            seed_factory: `(blueprint, channels) -> nn.Module`, building an untrained
                seed of the same architecture as the one saved.

        Raises:
            ValueError: if the saved slots differ from this model's.
        """
        saved = state["slots"]
        if list(saved) != list(self.slots):
            raise ValueError(f"checkpoint slots {list(saved)} != model slots {list(self.slots)}")
        device, dtype = self._device_dtype()
        for name, slot_state in saved.items():
            slot = self.slots[name]
            slot.load_lifecycle_state(slot_state)
            slot.seed = None
            blueprint = slot_state["blueprint"]
            if slot.stage in SEEDED_STAGES:
                assert blueprint is not None  # a seeded slot always records its blueprint
                slot.seed = seed_factory(blueprint, slot.channels).to(device=device, dtype=dtype)
                slot.seed.train(slot.training)
        self._next_seed_uid = state["next_seed_uid"]


def _declared_channels(module: nn.Module) -> int | None:
    """Channels a module declares: its last out_channels/num_features/out_features."""
    for sub in reversed(list(module.modules())):
        for attr in ("out_channels", "num_features", "out_features"):
            value = getattr(sub, attr, None)
            if isinstance(value, int):
                return value
    return None
