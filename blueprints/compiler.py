"""Tezzeret: builds seed modules from blueprints, and compiles them without blocking training.

`Compiler` caches lowered plans (see `blueprints.lowering`) by (canonical hash,
input schema, device, dtype), with hit/miss counters. With `compile=True`, a
module runs the eager graph at once; its first training forward starts a
`torch.compile` of the plan for that input layout on a background thread, and
later forwards use the compiled graph once the worker has finished it (compile
plus a forward/backward warm-up). The compiled graph is called in dynamo's
run-only mode, so an input it was not compiled for (another shape, eval mode)
runs eagerly instead of recompiling: a training step never waits. A compile that
fails leaves the eager graph in place and records why.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

import torch
from torch import fx, nn

from blueprints.ir import BlueprintIR
from blueprints.lowering import Plan, lower

log = logging.getLogger(__name__)

#: `compile_fn(graph, example_args)` returns a callable with the graph's signature
#: that is ready to run on inputs like `example_args` without compiling anything
#: on the caller's thread. It runs on the compiler's worker thread.
CompileFn = Callable[[fx.GraphModule, tuple[Any, ...]], Callable[..., torch.Tensor]]

#: What a compiled graph is specialised for: input shape, strides and requires_grad
#: (host activations are detached while a seed trains, not while it blends).
Layout = tuple[tuple[int, ...], tuple[int, ...], bool]


def torch_compile(graph: fx.GraphModule, example: tuple[Any, ...]) -> Callable[..., torch.Tensor]:
    """Default `CompileFn`: inductor with static shapes, warmed up by one forward/backward.

    Returns the graph wrapped in dynamo's run-only mode: it uses the compiled
    code when the guards hold and runs eagerly otherwise, never recompiling.
    Static shapes, because inductor's convolutions specialise dynamic spatial
    dims anyway.
    """
    compiled = torch.compile(graph.forward, fullgraph=True, dynamic=False)
    compiled(*example).float().square().mean().backward()
    return torch._dynamo.run(compiled)


class CompileState(StrEnum):
    """Where a module's background compile stands."""

    EAGER = "eager"  # no compile requested
    WAITING = "waiting"  # requested; starts at the first training forward
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class CompileStatus:
    """A compile's state and, when it failed, why."""

    state: CompileState
    reason: str | None = None


class CompileHandle:
    """The outcome of one background compile (one plan, one input layout)."""

    def __init__(self, future: Future[Callable[..., torch.Tensor]], label: str) -> None:
        self._label = label
        self._fn: Callable[..., torch.Tensor] | None = None
        self._status = CompileStatus(CompileState.PENDING)
        self._done = threading.Event()
        future.add_done_callback(self._finish)

    def _finish(self, future: Future[Callable[..., torch.Tensor]]) -> None:
        if future.cancelled():
            self._status = CompileStatus(CompileState.FAILED, "cancelled: compiler closed")
        elif (err := future.exception()) is not None:
            self._status = CompileStatus(CompileState.FAILED, f"{type(err).__name__}: {err}")
            log.warning("compile of %s failed, staying eager: %s", self._label, err)
        else:
            self._fn = future.result()
            self._status = CompileStatus(CompileState.READY)
        self._done.set()

    @property
    def fn(self) -> Callable[..., torch.Tensor] | None:
        """The compiled graph once ready, else None."""
        return self._fn

    @property
    def status(self) -> CompileStatus:
        """Current state and failure reason."""
        return self._status

    def wait(self, timeout: float | None = None) -> CompileStatus:
        """Blocks until the compile finishes or `timeout` seconds pass (for benchmarks, tools)."""
        self._done.wait(timeout)
        return self._status


class CompileGroup:
    """Background compiles of one cached plan: one per input layout seen in training.

    Shared by every module built from the plan, so each layout compiles once.
    """

    def __init__(self, compiler: Compiler, plan: Plan, key: CacheKey, max_layouts: int) -> None:
        self._compiler = compiler
        self._plan = plan
        self._key = key
        self._max_layouts = max_layouts
        self._handles: dict[Layout, CompileHandle] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> CompileGroup:
        # Shared by design: a copied module keeps using the same compiles.
        return self

    def runner(self, x: torch.Tensor) -> Callable[..., torch.Tensor] | None:
        """The compiled graph for `x`'s layout if ready; else None, starting its compile if new."""
        layout = (tuple(x.shape), x.stride(), x.requires_grad)
        handle = self._handles.get(layout)
        if handle is None:
            with self._lock:
                if layout not in self._handles and len(self._handles) < self._max_layouts:
                    submitted = self._compiler.submit(self._plan, self._key, layout)
                    if submitted is not None:
                        self._handles[layout] = submitted
            return None
        return handle.fn

    def handles(self) -> dict[Layout, CompileHandle]:
        """Compiles started so far, by input layout."""
        with self._lock:
            return dict(self._handles)

    @property
    def status(self) -> CompileStatus:
        """READY if any layout is compiled, else PENDING if one is running, else FAILED/WAITING."""
        states = [h.status for h in self.handles().values()]
        for wanted in (CompileState.READY, CompileState.PENDING):
            if any(s.state == wanted for s in states):
                return CompileStatus(wanted)
        if states:
            return CompileStatus(CompileState.FAILED, "; ".join(str(s.reason) for s in states))
        return CompileStatus(CompileState.WAITING)


class BlueprintModule(nn.Module):
    """A seed built from a blueprint: owns its parameters, runs its plan's graph.

    Parameters live under `nodes.<canonical name>.<attr>`, so state dicts of two
    modules of the same blueprint line up however the IR names its nodes.
    """

    def __init__(
        self, plan: Plan, values: list[torch.Tensor], compiles: CompileGroup | None = None
    ) -> None:
        super().__init__()
        self.plan = plan
        self._compiles = compiles
        owners = dict.fromkeys(t.node for t in plan.tensors)
        self.nodes = nn.ModuleDict({name: nn.Module() for name in owners})
        for spec, value in zip(plan.tensors, values, strict=True):
            holder = self.nodes[spec.node]
            if spec.is_buffer:
                holder.register_buffer(spec.attr, value)
            else:
                holder.register_parameter(spec.attr, nn.Parameter(value))

    @property
    def blueprint_hash(self) -> str:
        """Canonical hash of the blueprint this module was built from."""
        return self.plan.ir.canonical_hash

    @property
    def compiles(self) -> CompileGroup | None:
        """The plan's background compiles, or None when built without `compile`."""
        return self._compiles

    @property
    def compile_status(self) -> CompileStatus:
        """State of the background compile (EAGER when none was requested)."""
        if self._compiles is None:
            return CompileStatus(CompileState.EAGER)
        return self._compiles.status

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the seed's output for host activations `x` (N, C, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.plan.channels:
            raise ValueError(
                f"blueprint {self.plan.ir.metadata.name!r} built for {self.plan.channels} "
                f"channels expects (N, {self.plan.channels}, H, W), got {tuple(x.shape)}"
            )
        args = (x, self.training, *(getattr(self.nodes[t.node], t.attr) for t in self.plan.tensors))
        # Compiles cover training steps only; inside an outer torch.compile region
        # dynamo traces the eager graph into the outer graph.
        if self._compiles is None or not (self.training and torch.is_grad_enabled()):
            return self.plan.graph(*args)
        if torch.compiler.is_dynamo_compiling():
            return self.plan.graph(*args)
        fn = self._compiles.runner(x)
        return self.plan.graph(*args) if fn is None else fn(*args)

    def extra_repr(self) -> str:
        """Blueprint name, width, hash prefix and compile state, for `print(module)`."""
        return (
            f"blueprint={self.plan.ir.metadata.name!r}, channels={self.plan.channels}, "
            f"hash={self.blueprint_hash[:12]}, compile={self.compile_status.state.value}"
        )


def _resolve_dtype(ir: BlueprintIR, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    (schema,) = ir.inputs.values()
    return getattr(torch, schema.dtype)


def instantiate(
    plan: Plan,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    compiles: CompileGroup | None = None,
) -> BlueprintModule:
    """Makes a module of `plan` with fresh parameters initialised from `seed`.

    Args:
        plan: A lowered blueprint.
        seed: Init seed; the same seed gives the same parameters on every device.
        device: Where the parameters live.
        dtype: Parameter dtype; None means the blueprint input's dtype.
        compiles: Background compiles to use once ready.
    """
    dt = _resolve_dtype(plan.ir, dtype)
    values = [v.to(device=device, dtype=dt) for v in plan.init_tensors(seed)]
    return BlueprintModule(plan, values, compiles)


def build_module(
    ir: BlueprintIR,
    channels: int,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
) -> BlueprintModule:
    """Builds an eager seed module from a blueprint, without caching or compiling.

    Args:
        ir: A seed blueprint ([C, H, W] -> [C, H, W]).
        channels: The slot's channel count C.
        seed: Init seed; the global RNG is not touched.
        device: Where the parameters live.
        dtype: Parameter dtype; None means the blueprint input's dtype.
    """
    return instantiate(lower(ir, channels), seed=seed, device=device, dtype=dtype)


class CacheKey(NamedTuple):
    """What a cached plan depends on: blueprint, input schema (channels), device, dtype."""

    ir_hash: str
    channels: int
    device: str
    dtype: str


@dataclass(frozen=True)
class CacheStats:
    """Plan-cache counters."""

    hits: int
    misses: int
    entries: int

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups (0 before the first lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


@dataclass
class _Entry:
    plan: Plan
    compiles: CompileGroup | None = None


class Compiler:
    """Tezzeret: builds seed modules from blueprints through a plan cache.

    Args:
        compile_fn: How a plan's graph is compiled (default `torch_compile`); it
            runs on the compiler's single worker thread.
        max_layouts: Input layouts compiled per plan; further layouts run eagerly.
    """

    def __init__(self, *, compile_fn: CompileFn = torch_compile, max_layouts: int = 4) -> None:
        if max_layouts < 1:
            raise ValueError(f"max_layouts must be >= 1, got {max_layouts}")
        self._compile_fn = compile_fn
        self._max_layouts = max_layouts
        self._cache: dict[CacheKey, _Entry] = {}
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tezzeret")

    def key(
        self,
        ir: BlueprintIR,
        channels: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> CacheKey:
        """The cache key of a build."""
        dt = str(_resolve_dtype(ir, dtype)).removeprefix("torch.")
        return CacheKey(ir.canonical_hash, channels, str(torch.device(device)), dt)

    def plan(
        self,
        ir: BlueprintIR,
        channels: int,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> Plan:
        """Looks up the plan for a build, lowering it on a miss.

        Calling this ahead of time for the blueprints an environment offers makes
        its later `build` calls cache hits.
        """
        return self._entry(self.key(ir, channels, device, dtype), ir).plan

    def _entry(self, key: CacheKey, ir: BlueprintIR) -> _Entry:
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                self._misses += 1
                entry = self._cache[key] = _Entry(lower(ir, key.channels))
            else:
                self._hits += 1
            return entry

    def build(
        self,
        ir: BlueprintIR,
        channels: int,
        *,
        seed: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        compile: bool = False,
    ) -> BlueprintModule:
        """Builds a seed module; with `compile`, it switches to a compiled graph when ready.

        Args:
            ir: A seed blueprint.
            channels: The slot's channel count C.
            seed: Init seed (global RNG untouched).
            device: Where the parameters live.
            dtype: Parameter dtype; None means the blueprint input's dtype.
            compile: Compile the plan in the background, once per cache key and
                input layout, starting at the module's first training forward.
        """
        key = self.key(ir, channels, device, dtype)
        entry = self._entry(key, ir)
        compiles = None
        if compile:
            with self._lock:
                if entry.compiles is None:
                    entry.compiles = CompileGroup(self, entry.plan, key, self._max_layouts)
                compiles = entry.compiles
        return instantiate(entry.plan, seed=seed, device=device, dtype=dtype, compiles=compiles)

    def submit(self, plan: Plan, key: CacheKey, layout: Layout) -> CompileHandle | None:
        """Queues a compile of `plan` for inputs of `layout`; None once the compiler is closed."""
        if self._closed:
            return None
        device, dtype = torch.device(key.device), getattr(torch, key.dtype)

        def job() -> Callable[..., torch.Tensor]:
            # Each compile gets its own copy of the graph: a new class, so a new code
            # object with a dynamo cache of its own.
            graph = copy.deepcopy(plan.graph)
            gen = torch.Generator().manual_seed(0)  # the global RNG belongs to training
            shape, stride, requires_grad = layout
            x = torch.empty_strided(shape, stride, device=device, dtype=dtype)
            x.copy_(torch.randn(shape, generator=gen)).requires_grad_(requires_grad)
            # Same tensor types as a module's (guards check them): Parameters and plain buffers.
            values = [
                v.to(device=device, dtype=dtype)
                if s.is_buffer
                else nn.Parameter(v.to(device, dtype))
                for s, v in zip(plan.tensors, plan.init_tensors(0), strict=True)
            ]
            return self._compile_fn(graph, (x, True, *values))

        label = (
            f"{plan.ir.metadata.name}[C={plan.channels}, {key.device}, {key.dtype}, {layout[0]}]"
        )
        return CompileHandle(self._executor.submit(job), label)

    @property
    def stats(self) -> CacheStats:
        """Hit/miss counters and number of cached plans."""
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._cache))

    def close(self, *, wait: bool = True) -> None:
        """Stops the worker; queued compiles are cancelled and their modules stay eager."""
        self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> Compiler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
