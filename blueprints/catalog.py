"""The built-in blueprints: what a seed slot can grow before Karn designs anything.

Every entry is a residual seed: it maps [C, H, W] to [C, H, W] and its last
layer starts at zero (`init_scale=0` or `weight_init=0`), so a new seed outputs
exactly zero and blending starts from the host's own function. The last layer's
input is not zero, so that layer learns from the first step (and the rest of the
seed from the second), as in zero-init residual branches (Goyal et al., 2017).
"""

from __future__ import annotations

from blueprints.ir import BlueprintIR, C, IRBuilder, Width

#: Scale of a seed's last layer at init: zero, so the seed is function-preserving at birth.
_ZERO = 0.0


def _norm() -> BlueprintIR:
    b = IRBuilder("norm", tags=("norm",), description="Group norm of the features, scaled down.")
    return b.build(b.add("group_norm", b.input, groups=8, weight_init=_ZERO))


def _depthwise_separable() -> BlueprintIR:
    b = IRBuilder(
        "depthwise_separable", tags=("conv",), description="3x3 depthwise, norm, ReLU, 1x1."
    )
    h = b.add("depthwise_conv", b.input, kernel_size=3)
    h = b.add("relu", b.add("group_norm", h, groups=8))
    return b.build(b.add("pointwise_conv", h, out_channels=C, init_scale=_ZERO))


def _residual_block() -> BlueprintIR:
    b = IRBuilder(
        "residual_block", tags=("conv",), description="Two 3x3 convs with norms (ResNet basic)."
    )
    h = b.add("relu", b.add("batch_norm", b.add("conv2d", b.input, out_channels=C)))
    h = b.add("conv2d", h, out_channels=C)
    return b.build(b.add("batch_norm", h, weight_init=_ZERO))


def _bottleneck() -> BlueprintIR:
    b = IRBuilder(
        "bottleneck", tags=("conv",), description="1x1 down to C/4, 3x3, 1x1 back up (ResNet)."
    )
    narrow = Width(den=4, minimum=4)
    h = b.add("relu", b.add("batch_norm", b.add("pointwise_conv", b.input, out_channels=narrow)))
    h = b.add("relu", b.add("batch_norm", b.add("conv2d", h, out_channels=narrow)))
    return b.build(b.add("pointwise_conv", h, out_channels=C, init_scale=_ZERO))


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
    return b.build(b.add("pointwise_conv", gated, out_channels=C, init_scale=_ZERO))


def _lowrank_adapter() -> BlueprintIR:
    b = IRBuilder(
        "lowrank_adapter", tags=("adapter",), description="Rank-C/8 1x1 map (LoRA-style)."
    )
    down = b.add("pointwise_conv", b.input, out_channels=Width(den=8, minimum=4))
    return b.build(b.add("pointwise_conv", down, out_channels=C, init_scale=_ZERO))


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
