"""The built-in blueprints: what a seed slot can grow before Karn designs anything.

Every entry is a residual seed: it maps [C, H, W] to [C, H, W] and its last
layer starts scaled down (`init_scale` or `weight_init` well below 1), so a new
seed's output is small while every parameter still receives gradient.
"""

from __future__ import annotations

from blueprints.ir import BlueprintIR, C, IRBuilder, Width

#: Scale of a seed's last layer at init: output ~ a few percent of the input's size.
_SMALL = 0.1


def _norm() -> BlueprintIR:
    b = IRBuilder("norm", tags=("norm",), description="Group norm of the features, scaled down.")
    return b.build(b.add("group_norm", b.input, groups=8, weight_init=_SMALL / 2))


def _depthwise_separable() -> BlueprintIR:
    b = IRBuilder(
        "depthwise_separable", tags=("conv",), description="3x3 depthwise, norm, ReLU, 1x1."
    )
    h = b.add("depthwise_conv", b.input, kernel_size=3)
    h = b.add("relu", b.add("group_norm", h, groups=8))
    return b.build(b.add("pointwise_conv", h, out_channels=C, init_scale=_SMALL))


def _residual_block() -> BlueprintIR:
    b = IRBuilder(
        "residual_block", tags=("conv",), description="Two 3x3 convs with norms (ResNet basic)."
    )
    h = b.add("relu", b.add("batch_norm", b.add("conv2d", b.input, out_channels=C)))
    h = b.add("conv2d", h, out_channels=C)
    return b.build(b.add("batch_norm", h, weight_init=_SMALL))


def _bottleneck() -> BlueprintIR:
    b = IRBuilder(
        "bottleneck", tags=("conv",), description="1x1 down to C/4, 3x3, 1x1 back up (ResNet)."
    )
    narrow = Width(den=4, minimum=4)
    h = b.add("relu", b.add("batch_norm", b.add("pointwise_conv", b.input, out_channels=narrow)))
    h = b.add("relu", b.add("batch_norm", b.add("conv2d", h, out_channels=narrow)))
    return b.build(b.add("pointwise_conv", h, out_channels=C, init_scale=_SMALL))


def _squeeze_excitation() -> BlueprintIR:
    b = IRBuilder(
        "squeeze_excitation",
        tags=("attention",),
        description="Channel attention: pooled gate times features, then 1x1.",
    )
    squeezed = b.add("global_avg_pool", b.input)
    h = b.add("relu", b.add("linear", squeezed, out_features=Width(den=4, minimum=4)))
    gate = b.add("sigmoid", b.add("linear", h, out_features=C))
    gated = b.add("mul", b.input, gate)
    return b.build(b.add("pointwise_conv", gated, out_channels=C, init_scale=_SMALL))


def _lowrank_adapter() -> BlueprintIR:
    b = IRBuilder(
        "lowrank_adapter", tags=("adapter",), description="Rank-C/8 1x1 map (LoRA-style)."
    )
    down = b.add("pointwise_conv", b.input, out_channels=Width(den=8, minimum=4))
    return b.build(b.add("pointwise_conv", down, out_channels=C, init_scale=_SMALL))


#: Built-in blueprints by name, in the stable order the environments index them.
CATALOG: dict[str, BlueprintIR] = {
    ir.metadata.name: ir
    for ir in (
        _norm(),
        _depthwise_separable(),
        _residual_block(),
        _bottleneck(),
        _squeeze_excitation(),
        _lowrank_adapter(),
    )
}
