"""Shared pieces of the Kasmina tests: small seeds and a driver through the lifecycle."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from esper_env.contracts import HostConfig, LifecycleConfig, SeedStage
from esper_env.kasmina import MorphogeneticModel, build_host

#: Tiny host: three slots of 4, 8 and 8 channels (32x32, 16x16, 16x16).
TINY = HostConfig(widths=(4, 8, 8))
#: Lifecycle with no waiting, so that any stage is reached in a few calls.
FAST = LifecycleConfig(
    min_training_epochs=0, holding_epochs=0, embargo_epochs=2, blend_epochs=(1, 2, 4)
)

Drive = Callable[[MorphogeneticModel, str, SeedStage], None]


def conv_seed(channels: int) -> nn.Module:
    """A residual conv seed with non-zero output."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()
    )


def drive(model: MorphogeneticModel, slot: str, stage: SeedStage) -> None:
    """Takes `slot` from DORMANT to `stage` by legal operations and fake measurements."""
    target = model.slots[slot]
    path = [SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING]
    path.append(SeedStage.FOSSILIZED)
    if stage in (SeedStage.PRUNED, SeedStage.EMBARGOED):
        drive(model, slot, SeedStage.TRAINING)
        assert model.prune(slot).ok
        if stage is SeedStage.EMBARGOED:
            model.end_epoch()
        assert target.stage is stage
        return
    if stage is SeedStage.DORMANT:
        return
    assert model.germinate(slot, conv_seed(target.channels), "conv", 1).ok
    for step in path[1 : path.index(stage) + 1]:
        if step is SeedStage.BLENDING:
            target.record_measurement(contribution=0.0, improvement=-1.0, seed_loss=1.0)
        if step is SeedStage.HOLDING:
            while target.alpha < 1.0:
                model.step_blend()
        if step is SeedStage.FOSSILIZED:
            target.record_measurement(contribution=0.1, improvement=-1.0, seed_loss=1.0)
        result = model.advance(slot)
        assert result.ok, result
    assert target.stage is stage


@pytest.fixture
def tiny_model() -> MorphogeneticModel:
    torch.manual_seed(0)
    return build_host(TINY, FAST)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)


@pytest.fixture
def make_seed() -> Callable[[int], nn.Module]:
    return conv_seed


@pytest.fixture
def drive_to() -> Drive:
    return drive
