"""Kasmina's `wrap`: seed slots for any `nn.Module`, placed after named submodules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from esper_env.contracts import LifecycleConfig
from esper_env.kasmina.lifecycle import DEFAULT_LIFECYCLE
from esper_env.kasmina.model import MorphogeneticModel


def wrap(
    model: nn.Module,
    slots: Sequence[str],
    lifecycle: LifecycleConfig = DEFAULT_LIFECYCLE,
    *,
    example_input: torch.Tensor | None = None,
) -> MorphogeneticModel:
    """Places a seed slot after each named submodule of `model`.

    While every slot is dormant the output is the model's own. Slots are named by
    their submodule paths (e.g. "layer1", "layer2.0"). Hooks are registered on
    `model` itself: use the returned model from then on.

    A wrapped model cannot resume its forward pass after a slot, so the seed pass of
    an isolated seed (`MorphogeneticModel.seed_logits`) and counterfactual variants run
    the whole model with the slot's output injected: the part below the slot runs
    again (without building a graph, its result discarded), which is correct and costs
    one extra forward of that part.

    Args:
        model: Any network whose named submodules each return one tensor.
        slots: Dotted paths of the submodules to follow with a slot.
        lifecycle: Gate timings and thresholds.
        example_input: A batch to probe the activation shapes (recommended); without
            it, channel counts are read from the submodules and shapes from the
            first forward pass, and germination is refused until then.

    Returns:
        The wrapped model.

    Raises:
        ValueError: if `slots` is empty, repeats a path, or names a missing submodule.
    """
    if len(set(slots)) != len(slots):
        raise ValueError(f"slot paths must be distinct, got {list(slots)}")
    return MorphogeneticModel(
        model, {path: path for path in slots}, lifecycle, example_input=example_input
    )
