"""Fused Triton kernels for the seed slot's blend `out = host + alpha * seed`.

Forward reads both inputs once and writes the output; backward returns the
incoming gradient itself as the host's gradient (d out / d host = 1, no copy)
and computes `alpha * grad` for the seed in one pass. Arithmetic is in float32
whatever the storage dtype. Used on CUDA; `blueprints.kernels.blend` keeps the
PyTorch expression elsewhere. Triton is the `[triton]` extra.
"""

from __future__ import annotations

import importlib.util

import torch

if importlib.util.find_spec("triton") is None:
    raise ModuleNotFoundError(
        "the CUDA blend kernel needs Triton, which is not installed: pip install 'esper[triton]'",
        name="triton",
    )
import triton
import triton.language as tl

_BLOCK = 1024


@triton.jit
def _blend_fwd_kernel(host_ptr, seed_ptr, out_ptr, alpha, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    host = tl.load(host_ptr + offsets, mask=mask).to(tl.float32)
    seed = tl.load(seed_ptr + offsets, mask=mask).to(tl.float32)
    out = host + alpha * seed
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _scale_kernel(grad_ptr, out_ptr, alpha, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    grad = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    tl.store(out_ptr + offsets, (alpha * grad).to(out_ptr.dtype.element_ty), mask=mask)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, _BLOCK),)


def _dense(t: torch.Tensor) -> bool:
    # The kernels walk memory linearly: fine for any layout without gaps or overlaps.
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def blend_forward(host: torch.Tensor, seed: torch.Tensor, alpha: float) -> torch.Tensor:
    """Launches the forward kernel: returns `host + alpha * seed` (same shape and dtype).

    Raises:
        ValueError: If shapes, dtypes or devices differ.
    """
    if host.shape != seed.shape or host.dtype != seed.dtype or host.device != seed.device:
        raise ValueError(
            "blend needs host and seed of equal shape, dtype and device, got "
            f"{tuple(host.shape)} {host.dtype} {host.device} and "
            f"{tuple(seed.shape)} {seed.dtype} {seed.device}"
        )
    if not (_dense(host) and host.stride() == seed.stride()):
        host, seed = host.contiguous(), seed.contiguous()
    out = torch.empty_like(host)  # same layout as host (channels_last stays channels_last)
    n = host.numel()
    if n:
        _blend_fwd_kernel[_grid(n)](host, seed, out, float(alpha), n, BLOCK=_BLOCK)
    return out


def blend_backward_seed(grad: torch.Tensor, alpha: float) -> torch.Tensor:
    """Launches the backward kernel: returns `alpha * grad`, the seed's gradient."""
    if not _dense(grad):
        grad = grad.contiguous()
    out = torch.empty_like(grad)
    n = grad.numel()
    if n:
        _scale_kernel[_grid(n)](grad, out, float(alpha), n, BLOCK=_BLOCK)
    return out


class BlendFunction(torch.autograd.Function):
    """`host + alpha * seed` with fused Triton forward and backward (alpha is a constant)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        host: torch.Tensor,
        seed: torch.Tensor,
        alpha: float,
    ) -> torch.Tensor:
        """Blends in one kernel launch."""
        ctx.alpha = alpha
        return blend_forward(host, seed, alpha)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        """Host gets `grad` unchanged; seed gets `alpha * grad`; alpha gets none."""
        grad_host = grad if ctx.needs_input_grad[0] else None
        grad_seed = blend_backward_seed(grad, ctx.alpha) if ctx.needs_input_grad[1] else None
        return grad_host, grad_seed, None
