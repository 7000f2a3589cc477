"""Lowering: a validated `BlueprintIR` plus a channel count becomes a `Plan`.

A plan holds the nodes in canonical order with concrete widths, the layout and
initialisation of the parameters and buffers, and a *functional* `torch.fx`
graph `forward(x, training, *tensors)`. Modules built from one plan own their
parameters and share the graph (and so any compiled version of it).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from blueprints.ir import (
    BatchNormAttrs,
    BlueprintIR,
    ConvAttrs,
    DepthwiseConvAttrs,
    GroupNormAttrs,
    IRNodeType,
    LayerNormAttrs,
    LinearAttrs,
    NodeAttrs,
    PointwiseConvAttrs,
    PoolAttrs,
    TensorSchema,
    check_seed_contract,
)


@dataclass(frozen=True)
class TensorSpec:
    """A parameter or buffer of one lowered node.

    Attributes:
        node: Canonical node name, e.g. "n2_conv2d".
        attr: "weight", "bias", "running_mean" or "running_var".
        shape: Concrete shape.
        init: "fan_in" (uniform +-init_scale/sqrt(fan_in)), "fill" (constant `value`).
        value: Init scale ("fan_in") or constant ("fill").
        fan_in: Fan-in for "fan_in" init.
        is_buffer: A buffer (running statistics) rather than a parameter.
    """

    node: str
    attr: str
    shape: tuple[int, ...]
    init: Literal["fan_in", "fill"]
    value: float
    fan_in: int = 1
    is_buffer: bool = False


@dataclass(frozen=True)
class LoweredNode:
    """One IR node with concrete widths, in canonical order.

    Attributes:
        name: Canonical name "n{index}_{op}"; it names the node's parameters.
        node_id: The node's id in the IR.
        op: The primitive.
        attrs: Its attributes.
        sources: Canonical names (or the input name) feeding it, in IR edge order.
        in_channels: Concrete channels of its first input.
        out_channels: Concrete channels of its output.
        schema: Its symbolic output schema.
    """

    name: str
    node_id: str
    op: IRNodeType
    attrs: NodeAttrs
    sources: tuple[str, ...]
    in_channels: int
    out_channels: int
    schema: TensorSchema


@dataclass(frozen=True, eq=False)
class Plan:
    """A blueprint lowered for one channel count: shared, immutable, reused by every build.

    Attributes:
        ir: The blueprint.
        channels: Concrete C.
        nodes: Lowered nodes in canonical topological order.
        tensors: Parameters and buffers, in the order the graph takes them.
        graph: Functional graph `forward(x, training, *tensors) -> Tensor`.
    """

    ir: BlueprintIR
    channels: int
    nodes: tuple[LoweredNode, ...]
    tensors: tuple[TensorSpec, ...]
    graph: fx.GraphModule

    def __deepcopy__(self, memo: dict[int, Any]) -> Plan:
        # Shared by design: deep-copying a module must not copy its plan.
        return self

    @property
    def param_count(self) -> int:
        """Trainable parameters a module of this plan has (counted without building one)."""
        return sum(math.prod(t.shape) for t in self.tensors if not t.is_buffer)

    def init_tensors(self, seed: int) -> list[torch.Tensor]:
        """Initial parameter and buffer values (float32, CPU), deterministic in `seed`.

        Uses its own generator, so the global RNG is untouched; values do not
        depend on the device the module is later moved to.
        """
        gen = torch.Generator().manual_seed(seed)
        values = []
        for spec in self.tensors:
            if spec.init == "fan_in":
                bound = spec.value / math.sqrt(spec.fan_in)
                values.append(torch.empty(spec.shape).uniform_(-bound, bound, generator=gen))
            else:
                values.append(torch.full(spec.shape, spec.value))
        return values


def group_norm(
    x: torch.Tensor,
    groups: int,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """`F.group_norm` that is safe on channels-last inputs without a gradient.

    torch 2.13's CPU channels-last GroupNorm backward segfaults when the input needs
    no gradient, which is what a seed fed `h.detach()` is; a contiguous copy avoids
    that kernel.
    """
    if not x.requires_grad:
        x = x.contiguous()
    return F.group_norm(x, groups, weight, bias, eps)


def lower(ir: BlueprintIR, channels: int) -> Plan:
    """Lowers a seed blueprint for a concrete channel count.

    Args:
        ir: A blueprint satisfying the seed contract ([C, H, W] -> [C, H, W]).
        channels: The slot's channel count C.

    Raises:
        SeedContractError: If `ir` is not a residual seed.
        ValueError: If `channels` is not positive.
    """
    if channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels}")
    check_seed_contract(ir)
    (input_name,) = ir.inputs
    shapes = ir.infer_shapes()
    names = {input_name: input_name}
    names.update(
        {
            node_id: f"n{i}_{ir.node(node_id).op.value}"
            for i, node_id in enumerate(ir.canonical_order())
        }
    )
    concrete = {input_name: channels}
    nodes: list[LoweredNode] = []
    tensors: list[TensorSpec] = []
    for node_id in ir.canonical_order():
        node = ir.node(node_id)
        sources = ir.predecessors(node_id)
        schema = shapes[node_id]
        lowered = LoweredNode(
            name=names[node_id],
            node_id=node_id,
            op=node.op,
            attrs=node.attrs,
            sources=tuple(names[s] for s in sources),
            in_channels=concrete[sources[0]],
            out_channels=schema.channels.resolve(channels),
            schema=schema,
        )
        concrete[node_id] = lowered.out_channels
        nodes.append(lowered)
        tensors.extend(_tensor_specs(lowered))
    graph = _build_graph(ir, input_name, nodes, tensors)
    return Plan(ir=ir, channels=channels, nodes=tuple(nodes), tensors=tuple(tensors), graph=graph)


def _tensor_specs(node: LoweredNode) -> list[TensorSpec]:
    a, cin, cout = node.attrs, node.in_channels, node.out_channels
    specs: list[TensorSpec] = []
    if isinstance(a, ConvAttrs | DepthwiseConvAttrs | PointwiseConvAttrs | LinearAttrs):
        if isinstance(a, ConvAttrs):
            shape: tuple[int, ...] = (cout, cin, a.kernel_size, a.kernel_size)
        elif isinstance(a, DepthwiseConvAttrs):
            shape = (cout, 1, a.kernel_size, a.kernel_size)
        elif isinstance(a, PointwiseConvAttrs):
            shape = (cout, cin, 1, 1)
        else:
            shape = (cout, cin)
        fan_in = math.prod(shape[1:])
        specs.append(TensorSpec(node.name, "weight", shape, "fan_in", a.init_scale, fan_in))
        if a.bias:
            specs.append(TensorSpec(node.name, "bias", (cout,), "fill", 0.0))
    elif isinstance(a, BatchNormAttrs | LayerNormAttrs | GroupNormAttrs):
        specs.append(TensorSpec(node.name, "weight", (cout,), "fill", a.weight_init))
        specs.append(TensorSpec(node.name, "bias", (cout,), "fill", 0.0))
        if isinstance(a, BatchNormAttrs):
            specs.append(
                TensorSpec(node.name, "running_mean", (cout,), "fill", 0.0, is_buffer=True)
            )
            specs.append(TensorSpec(node.name, "running_var", (cout,), "fill", 1.0, is_buffer=True))
    return specs


_ELEMENTWISE: dict[IRNodeType, Callable[..., Any]] = {
    IRNodeType.RELU: F.relu,
    IRNodeType.GELU: F.gelu,
    IRNodeType.SILU: F.silu,
    IRNodeType.SIGMOID: torch.sigmoid,
    IRNodeType.ADD: operator.add,
    IRNodeType.MUL: operator.mul,
}


def _build_graph(
    ir: BlueprintIR, input_name: str, nodes: list[LoweredNode], tensors: list[TensorSpec]
) -> fx.GraphModule:
    g = fx.Graph()
    values: dict[str, fx.Node] = {input_name: g.placeholder("x")}
    training = g.placeholder("training")
    params = {(t.node, t.attr): g.placeholder(f"{t.node}_{t.attr}") for t in tensors}
    for node in nodes:
        args = [values[s] for s in node.sources]
        out = values[node.name] = _emit(g, node, args, params, training)
        # Provenance for inspection (e.g. shape propagation per IR node); a list
        # because `identity` returns its input's fx node.
        out.meta.setdefault("blueprint_nodes", []).append(node.name)
    g.output(values[_output_name(ir, nodes)])
    return fx.GraphModule(nn.Module(), g, class_name=f"Blueprint_{ir.metadata.name}")


def _output_name(ir: BlueprintIR, nodes: list[LoweredNode]) -> str:
    (out,) = ir.outputs
    return next(n.name for n in nodes if n.node_id == out)


def _emit(
    g: fx.Graph,
    node: LoweredNode,
    args: list[fx.Node],
    params: dict[tuple[str, str], fx.Node],
    training: fx.Node,
) -> fx.Node:
    a, x = node.attrs, args[0]
    weight = params.get((node.name, "weight"))
    bias = params.get((node.name, "bias"))
    if node.op in _ELEMENTWISE:
        return g.call_function(_ELEMENTWISE[node.op], tuple(args))
    if isinstance(a, ConvAttrs | DepthwiseConvAttrs):
        groups = node.in_channels if isinstance(a, DepthwiseConvAttrs) else 1
        kwargs = {"padding": a.dilation * (a.kernel_size - 1) // 2, "dilation": a.dilation}
        return g.call_function(F.conv2d, (x, weight, bias), {**kwargs, "groups": groups})
    if isinstance(a, PointwiseConvAttrs):
        return g.call_function(F.conv2d, (x, weight, bias))
    if isinstance(a, LinearAttrs):
        flat = g.call_method("flatten", (x, 1))
        out = g.call_function(F.linear, (flat, weight, bias))
        return g.call_method("reshape", (out, -1, node.out_channels, 1, 1))
    if isinstance(a, BatchNormAttrs):
        stats = (params[(node.name, "running_mean")], params[(node.name, "running_var")])
        return g.call_function(F.batch_norm, (x, *stats, weight, bias, training, a.momentum, a.eps))
    if isinstance(a, LayerNormAttrs):
        last = g.call_method("permute", (x, 0, 2, 3, 1))
        normed = g.call_function(F.layer_norm, (last, (node.out_channels,), weight, bias, a.eps))
        return g.call_method("permute", (normed, 0, 3, 1, 2))
    if isinstance(a, GroupNormAttrs):
        groups = math.gcd(a.groups, node.out_channels)
        return g.call_function(group_norm, (x, groups, weight, bias, a.eps))
    if isinstance(a, PoolAttrs):
        pad = a.kernel_size // 2
        if node.op == IRNodeType.AVG_POOL:
            return g.call_function(
                F.avg_pool2d, (x, a.kernel_size, 1, pad), {"count_include_pad": False}
            )
        return g.call_function(F.max_pool2d, (x, a.kernel_size, 1, pad))
    if node.op == IRNodeType.GLOBAL_AVG_POOL:
        return g.call_method("mean", (x, (2, 3)), {"keepdim": True})
    if node.op == IRNodeType.IDENTITY:
        return x
    raise NotImplementedError(f"node {node.node_id!r}: no lowering for op {node.op}")
