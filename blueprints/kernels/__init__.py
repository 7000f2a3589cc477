"""Fused kernels for seed slots: the Triton blend on CUDA, the PyTorch expression elsewhere."""

import torch

from blueprints.kernels.blend import BlendFunction


def blend(host: torch.Tensor, seed: torch.Tensor, alpha: float) -> torch.Tensor:
    """Returns `host + alpha * seed`, the slot's blended output.

    CUDA tensors of one shape and dtype go through the fused Triton kernels
    (`BlendFunction`); anything else (CPU, or shapes/dtypes that need
    broadcasting or promotion, e.g. under autocast) uses the PyTorch expression.
    Both give the same values and gradients.
    """
    if host.is_cuda and seed.is_cuda and host.shape == seed.shape and host.dtype == seed.dtype:
        return BlendFunction.apply(host, seed, alpha)
    return host + alpha * seed
