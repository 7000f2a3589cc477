"""Kasmina's CIFAR host: a plain conv-BN-ReLU CNN with a seed slot after each stage."""

from __future__ import annotations

import torch
from torch import nn

from esper_env.contracts import HostConfig, LifecycleConfig
from esper_env.kasmina.lifecycle import DEFAULT_LIFECYCLE
from esper_env.kasmina.model import MorphogeneticModel

#: Side of the images the host is probed with (CIFAR-10).
IMAGE_SIZE = 32


def conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """A 3x3 convolution, BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class CifarHost(nn.Module):
    """The bare host CNN: stem, `len(config.widths)` stages, global pool and a linear head.

    A stage whose width differs from the previous one starts with a stride-2 block,
    so the map halves whenever the width changes (32x32 -> 16x16 -> 8x8 for the
    default widths). Stage `i` is the submodule `stages.i`.

    Args:
        config: Widths, blocks per stage, classes and input channels.
    """

    def __init__(self, config: HostConfig) -> None:
        super().__init__()
        widths = config.widths
        self.stem = conv_bn_relu(config.in_channels, widths[0], 1)
        stages = []
        previous = widths[0]
        for width in widths:
            stride = 1 if width == previous else 2
            blocks = [conv_bn_relu(previous, width, stride)]
            blocks += [conv_bn_relu(width, width, 1) for _ in range(config.blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            previous = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], config.num_classes)
        )
        self._stage_index = {f"stages.{i}": i for i in range(len(stages))}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Returns class logits for a batch of images."""
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
        return self.head(h)

    def forward_after(self, module_path: str, y: torch.Tensor) -> torch.Tensor:
        """Returns logits given `y` as the output of stage `module_path` ("stages.i").

        Raises:
            KeyError: if `module_path` is not a stage.
        """
        if module_path not in self._stage_index:
            raise KeyError(f"{module_path!r} is not a stage; stages are {list(self._stage_index)}")
        h = y
        for stage in self.stages[self._stage_index[module_path] + 1 :]:
            h = stage(h)
        return self.head(h)


def build_host(
    config: HostConfig, lifecycle: LifecycleConfig = DEFAULT_LIFECYCLE
) -> MorphogeneticModel:
    """Builds the CIFAR host with slots "slot0".."slotN-1" after its N stages.

    The slots' activation shapes are probed with one zero image of 32x32.

    Args:
        config: The host's shape (see `HOST_PRESETS`).
        lifecycle: Gate timings and thresholds.

    Returns:
        The host as a `MorphogeneticModel`, every slot DORMANT.
    """
    host = CifarHost(config)
    points = {f"slot{i}": f"stages.{i}" for i in range(len(config.widths))}
    probe = torch.zeros(1, config.in_channels, IMAGE_SIZE, IMAGE_SIZE)
    return MorphogeneticModel(host, points, lifecycle, example_input=probe)
