"""Kasmina's export: a morphogenetic model as a plain static network, seeds baked in."""

from __future__ import annotations

import copy

import torch
from torch import nn

from blueprints.kernels import blend
from esper_env.kasmina.model import MorphogeneticModel, SlotHook


class BakedSeed(nn.Module):
    """A host submodule followed by its seed at a fixed alpha: `y + alpha * seed(y)`.

    Args:
        module: The host submodule.
        seed: The seed that followed it.
        alpha: The seed's alpha at export time.
    """

    def __init__(self, module: nn.Module, seed: nn.Module, alpha: float) -> None:
        super().__init__()
        self.module = module
        self.seed = seed
        self.alpha = alpha

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        """Runs the submodule, then adds its seed's output scaled by alpha."""
        y = self.module(*args)
        return blend(y, self.seed(y), self.alpha)


def export_static(model: MorphogeneticModel) -> nn.Module:
    """Copies the host with every seed that acts on the output baked in, and no slots.

    Fossilized seeds are baked at alpha 1; blending and holding ones at their
    current alpha; seeds at alpha 0 (isolated, sedated) are left out. In eval mode
    the result computes what `model` computes. `model` itself is not changed.

    Args:
        model: The morphogenetic model.

    Returns:
        A plain `nn.Module` (a copy of `model.host` with `BakedSeed` in place of the
        seeded submodules).
    """
    clone = copy.deepcopy(model)
    host = clone.host
    for name, path in clone.slot_paths.items():
        module = host.get_submodule(path)
        hooks = module._forward_hooks
        for key in [k for k, hook in hooks.items() if isinstance(hook, SlotHook)]:
            del hooks[key]
        slot = clone.slots[name]
        if slot.seed is not None and slot.effective_alpha > 0.0:
            host.set_submodule(path, BakedSeed(module, slot.seed, slot.effective_alpha))
    return host
