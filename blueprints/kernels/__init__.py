"""Fused kernels for seed slots: the Triton blend on CUDA, the PyTorch expression elsewhere."""

import torch


def blend(host: torch.Tensor, seed: torch.Tensor, alpha: float) -> torch.Tensor:
    """Returns `host + alpha * seed`, the slot's blended output.

    CUDA tensors of one shape and dtype go through the fused Triton kernels
    (`triton_blend.BlendFunction`, the `[triton]` extra, imported on first CUDA use);
    anything else (CPU, or shapes/dtypes that need broadcasting or promotion, e.g.
    under autocast) uses the PyTorch expression. Both give the same values and gradients.

    Raises:
        MissingExtraError: CUDA tensors and no Triton installed.
    """
    if host.is_cuda and seed.is_cuda and host.shape == seed.shape and host.dtype == seed.dtype:
        from blueprints.kernels.triton_blend import BlendFunction  # CUDA only: [triton]

        return BlendFunction.apply(host, seed, alpha)
    return host + alpha * seed
