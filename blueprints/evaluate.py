"""Urabrask: measures a blueprint before it may be offered to a seed slot.

Reports parameters, a FLOPs estimate, latency on the given device, numerical
safety (finite outputs and gradients on random inputs at init and after a few
SGD steps, output scale at init) and gradient flow to every parameter. A
blueprint passes when every check holds; `reasons` lists the ones that did not.
A blueprint over the size budget (`MAX_PARAMS_PER_C2`) is refused from its plan
alone, before anything is built: a design cannot exhaust the memory of the
process that judges it.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict

from blueprints.compiler import instantiate
from blueprints.ir import (
    BlueprintIR,
    ConvAttrs,
    DepthwiseConvAttrs,
    IRNodeType,
    LinearAttrs,
    PointwiseConvAttrs,
    PoolAttrs,
)
from blueprints.lowering import Plan, lower

#: Most parameters a seed may have at width C, as a multiple of C^2: a 3x3 convolution
#: C -> C is 9 C^2, residual_block 18 C^2, and residual_block with 7x7 kernels 98 C^2.
#: The FLOPs budget per pixel is twice that (what convolutions of that size cost).
MAX_PARAMS_PER_C2 = 128

#: FLOPs per output element of the ops without weights (rough, for ranking only).
_ELEMENTWISE_FLOPS = {
    IRNodeType.BATCH_NORM: 4,
    IRNodeType.LAYER_NORM: 8,
    IRNodeType.GROUP_NORM: 8,
    IRNodeType.GELU: 8,
    IRNodeType.SILU: 4,
    IRNodeType.SIGMOID: 4,
    IRNodeType.RELU: 1,
    IRNodeType.ADD: 1,
    IRNodeType.MUL: 1,
    IRNodeType.GLOBAL_AVG_POOL: 1,
    IRNodeType.IDENTITY: 0,
}


class EvaluationReport(BaseModel):
    """What Urabrask measured; stored with the blueprint in the library.

    Attributes:
        ir_hash: Canonical hash of the blueprint.
        name: Blueprint name.
        channels: Width it was evaluated at.
        height: Input height used for FLOPs and latency.
        width: Input width used for FLOPs and latency.
        params: Trainable parameters at this width.
        flops: Estimated forward FLOPs per sample (multiply-add = 2).
        latency_ms: Median forward+backward time of one batch.
        device: Device the latency was measured on.
        init_output_ratio: RMS of the seed's output over RMS of its input, at init.
        passed: Every check held.
        reasons: The checks that failed, with measured values.
    """

    # An infinite ratio (the output overflowed) must survive the JSON round trip.
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")

    ir_hash: str
    name: str
    channels: int
    height: int
    width: int
    params: int
    flops: int
    latency_ms: float
    device: str
    init_output_ratio: float
    passed: bool
    reasons: tuple[str, ...]


def estimate_flops(plan: Plan, height: int, width: int) -> int:
    """Forward FLOPs per sample of a lowered blueprint on a `height` x `width` input."""
    total = 0
    for node in plan.nodes:
        h = 1 if node.schema.height == 1 else height
        w = 1 if node.schema.width == 1 else width
        out = node.out_channels * h * w
        a = node.attrs
        if isinstance(a, ConvAttrs):
            total += 2 * a.kernel_size**2 * node.in_channels * out
        elif isinstance(a, DepthwiseConvAttrs):
            total += 2 * a.kernel_size**2 * out
        elif isinstance(a, PointwiseConvAttrs | LinearAttrs):
            total += 2 * node.in_channels * out
        elif isinstance(a, PoolAttrs):
            total += a.kernel_size**2 * out
        elif node.op == IRNodeType.GLOBAL_AVG_POOL:
            total += node.in_channels * height * width
        else:
            total += _ELEMENTWISE_FLOPS[node.op] * out
    return total


def _rms(t: torch.Tensor) -> float:
    return t.detach().float().pow(2).mean().sqrt().item()


def evaluate(
    ir: BlueprintIR,
    channels: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch: int = 8,
    height: int = 8,
    width: int = 8,
    sgd_steps: int = 3,
    lr: float = 0.05,
    max_init_ratio: float = 0.25,
    latency_repeats: int = 5,
    max_params_per_c2: float = MAX_PARAMS_PER_C2,
) -> EvaluationReport:
    """Evaluates a seed blueprint at one width; deterministic apart from the latency.

    Args:
        ir: A seed blueprint.
        channels: Width to build it at.
        seed: Seed for the parameters and the random inputs (global RNG untouched).
        device: Device to run on.
        batch: Batch size of the random inputs.
        height: Input height.
        width: Input width.
        sgd_steps: SGD steps (regressing h + s onto a random target); every parameter
            must receive a non-zero gradient in one of them, and the output must stay
            finite after them.
        lr: Learning rate of those steps.
        max_init_ratio: Largest allowed RMS(seed output) / RMS(input) at init.
        latency_repeats: Timed forward+backward repeats (after one warm-up).
        max_params_per_c2: Size budget: parameters over C^2, and FLOPs per sample over
            2 C^2 H W. A blueprint over it is not built; its report has no latency
            or output ratio (NaN).
    """
    plan = lower(ir, channels)
    flops = estimate_flops(plan, height, width)
    budget = max_params_per_c2 * channels**2
    if plan.param_count > budget or flops > 2 * budget * height * width:
        return EvaluationReport(
            ir_hash=ir.canonical_hash,
            name=ir.metadata.name,
            channels=channels,
            height=height,
            width=width,
            params=plan.param_count,
            flops=flops,
            latency_ms=math.nan,
            device=str(torch.device(device)),
            init_output_ratio=math.nan,
            passed=False,
            reasons=(
                f"too big to build at {channels} channels: {plan.param_count:,} parameters "
                f"and {flops:,} FLOPs per sample; the budget is {max_params_per_c2:g} C^2 "
                f"= {budget:,.0f} parameters and twice that per pixel in FLOPs",
            ),
        )
    module = instantiate(plan, seed=seed, device=device)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=gen).to(device)
    target = torch.randn(batch, channels, height, width, generator=gen).to(device)
    reasons: list[str] = []

    out = module(x)
    init_ratio = _rms(out) / _rms(x)
    if not torch.isfinite(out).all():
        reasons.append("non-finite output at init")
    if init_ratio > max_init_ratio:
        reasons.append(f"output scale at init {init_ratio:.3g} > {max_init_ratio}")

    # A zero-initialised last layer (function-preserving seeds) leaves the layers below it
    # without gradient until the first step: gradient flow is judged over all the steps.
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    flowed: set[str] = set()
    for step in range(sgd_steps):
        opt.zero_grad()
        loss = (x + module(x) - target).float().square().mean()
        loss.backward()
        for name, p in module.named_parameters():
            if p.grad is None or not torch.isfinite(p.grad).all():
                reasons.append(f"no finite gradient for {name} at SGD step {step + 1}")
            elif p.grad.abs().sum().item() > 0.0:
                flowed.add(name)
        opt.step()
    for name, _ in module.named_parameters():
        if name not in flowed:
            reasons.append(f"zero gradient for {name} in {sgd_steps} SGD steps (no gradient flow)")
    out = module(x)
    out.float().square().mean().backward()
    if not torch.isfinite(out).all():
        reasons.append(f"non-finite output after {sgd_steps} SGD steps")
    if any(p.grad is None or not torch.isfinite(p.grad).all() for p in module.parameters()):
        reasons.append(f"non-finite gradients after {sgd_steps} SGD steps")

    return EvaluationReport(
        ir_hash=ir.canonical_hash,
        name=ir.metadata.name,
        channels=channels,
        height=height,
        width=width,
        params=sum(p.numel() for p in module.parameters()),
        flops=flops,
        latency_ms=_latency_ms(module, x, latency_repeats),
        device=str(torch.device(device)),
        init_output_ratio=init_ratio if math.isfinite(init_ratio) else float("inf"),
        passed=not reasons,
        reasons=tuple(reasons),
    )


def _latency_ms(module: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    def step() -> None:
        module.zero_grad(set_to_none=True)
        module(x).float().sum().backward()

    step()
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        step()
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def evaluate_widths(
    ir: BlueprintIR, widths: Sequence[int], *, device: torch.device | str = "cpu"
) -> EvaluationReport:
    """Evaluates `ir` at each width in turn: the first failing report, else the last one.

    Args:
        ir: A seed blueprint.
        widths: Channel counts of the slots it may grow in (at least one).
        device: Device to run on.
    """
    if not widths:
        raise ValueError("evaluate_widths needs at least one width")
    for channels in sorted(set(widths)):
        report = evaluate(ir, channels, device=device)
        if not report.passed:
            break
    return report
