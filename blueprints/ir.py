"""BlueprintIR: the typed graph that describes a seed module.

A blueprint is a small DAG of primitive ops over NCHW tensors. Channel counts
are symbolic: every width is a function of the blueprint's channel count `C`
(see `Width`), so one IR serves every slot width; spatial dims are `H`/`W` or 1
(after a global average pool). All primitives preserve resolution (stride 1,
"same" padding), which is what a residual seed needs.

Validation runs when a `BlueprintIR` is constructed or read from JSON, and
rejects unknown ops, wrong attribute types, dangling edges, cycles, dead nodes
and shape mismatches with a message that names the node. Reading JSON only
builds pydantic models: it never imports or runs code.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SkipValidation,
    ValidationError,
    model_validator,
)

#: Bumped when the canonical serialisation (and so every hash) changes meaning.
HASH_FORMAT = "esper-blueprint-ir/1"
MAX_NODES = 128
MAX_EDGES = 512

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Strict(_Model):
    # strict: a wrong JSON type ("3" for 3, 1 for true) is an error, never coerced.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Width(_Strict):
    """A channel count as a function of the blueprint's channel count C.

    Resolves to `max(minimum, C * num // den)`. `num=0` gives the fixed width
    `minimum`. The fraction must be in lowest terms so that equal widths have
    one spelling (shapes are compared symbolically).

    Attributes:
        num: Numerator of the multiple of C.
        den: Denominator of the multiple of C.
        minimum: Lower bound, so narrow slots keep at least this many channels.
    """

    num: int = Field(default=1, ge=0, le=64)
    den: int = Field(default=1, ge=1, le=1024)
    minimum: int = Field(default=1, ge=1, le=4096)

    @model_validator(mode="after")
    def _lowest_terms(self) -> Width:
        if self.num == 0 and self.den != 1:
            raise ValueError(f"a fixed width (num=0) needs den=1, got den={self.den}")
        if self.num > 0 and math.gcd(self.num, self.den) != 1:
            g = math.gcd(self.num, self.den)
            raise ValueError(
                f"width C*{self.num}/{self.den} is not in lowest terms; "
                f"write num={self.num // g}, den={self.den // g}"
            )
        return self

    def resolve(self, channels: int) -> int:
        """Returns the concrete width for a blueprint built with `channels`."""
        return max(self.minimum, channels * self.num // self.den)

    def __str__(self) -> str:
        if self.num == 0:
            return str(self.minimum)
        expr = "C" if self.num == 1 else f"{self.num}C"
        if self.den != 1:
            expr += f"/{self.den}"
        return expr if self.minimum == 1 else f"max({self.minimum}, {expr})"


#: The blueprint's own channel count.
C = Width()

DType = Literal["float32", "float16", "bfloat16"]


class TensorSchema(_Strict):
    """Shape (batch dim implicit) and dtype of an NCHW tensor, with symbolic dims.

    Attributes:
        channels: Channel count as a function of C.
        height: "H" (the slot's height) or 1.
        width: "W" (the slot's width) or 1.
        dtype: Element type.
    """

    channels: Width = C
    height: Literal["H", 1] = "H"
    width: Literal["W", 1] = "W"
    dtype: DType = "float32"

    def __str__(self) -> str:
        return f"[{self.channels}, {self.height}, {self.width}] {self.dtype}"


class IRNodeType(StrEnum):
    """The primitive ops a blueprint is made of."""

    CONV2D = "conv2d"
    DEPTHWISE_CONV = "depthwise_conv"
    POINTWISE_CONV = "pointwise_conv"
    BATCH_NORM = "batch_norm"
    LAYER_NORM = "layer_norm"
    GROUP_NORM = "group_norm"
    RELU = "relu"
    GELU = "gelu"
    SILU = "silu"
    SIGMOID = "sigmoid"
    ADD = "add"
    MUL = "mul"
    AVG_POOL = "avg_pool"
    MAX_POOL = "max_pool"
    GLOBAL_AVG_POOL = "global_avg_pool"
    LINEAR = "linear"
    IDENTITY = "identity"


_KernelSize = Annotated[int, Field(ge=1, le=7)]
# init_scale multiplies PyTorch's default weight init: < 1 makes a seed start small, 0 at zero.
_InitScale = Annotated[float, Field(default=1.0, ge=0.0, le=4.0)]
_Eps = Annotated[float, Field(default=1e-5, gt=0.0, le=0.1)]
_WeightInit = Annotated[float, Field(default=1.0, ge=0.0, le=4.0)]


def _check_odd(kernel_size: int) -> None:
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd to keep the resolution, got {kernel_size}")


class NoAttrs(_Strict):
    """Attributes of parameter-free elementwise ops (activations, add, mul, identity)."""


class ConvAttrs(_Strict):
    """Attributes of `conv2d` (stride 1, "same" padding)."""

    out_channels: Width
    kernel_size: _KernelSize = 3
    dilation: int = Field(default=1, ge=1, le=4)
    bias: bool = False
    init_scale: _InitScale = 1.0

    @model_validator(mode="after")
    def _odd(self) -> ConvAttrs:
        _check_odd(self.kernel_size)
        return self


class DepthwiseConvAttrs(_Strict):
    """Attributes of `depthwise_conv` (one filter per channel, stride 1, "same" padding)."""

    kernel_size: _KernelSize = 3
    dilation: int = Field(default=1, ge=1, le=4)
    bias: bool = False
    init_scale: _InitScale = 1.0

    @model_validator(mode="after")
    def _odd(self) -> DepthwiseConvAttrs:
        _check_odd(self.kernel_size)
        return self


class PointwiseConvAttrs(_Strict):
    """Attributes of `pointwise_conv` (1x1 convolution)."""

    out_channels: Width
    bias: bool = False
    init_scale: _InitScale = 1.0


class LinearAttrs(_Strict):
    """Attributes of `linear` (over channels of a 1x1 map, e.g. after global pooling)."""

    out_features: Width
    bias: bool = True
    init_scale: _InitScale = 1.0


class BatchNormAttrs(_Strict):
    """Attributes of `batch_norm` (running statistics kept as buffers)."""

    eps: _Eps = 1e-5
    momentum: float = Field(default=0.1, gt=0.0, le=1.0)
    weight_init: _WeightInit = 1.0


class LayerNormAttrs(_Strict):
    """Attributes of `layer_norm` (over channels at each position, as in ConvNeXt)."""

    eps: _Eps = 1e-5
    weight_init: _WeightInit = 1.0


class GroupNormAttrs(_Strict):
    """Attributes of `group_norm`.

    `groups` is an upper bound: the built module uses gcd(groups, channels), so
    one blueprint is valid at every width.
    """

    groups: int = Field(default=8, ge=1, le=1024)
    eps: _Eps = 1e-5
    weight_init: _WeightInit = 1.0


class PoolAttrs(_Strict):
    """Attributes of `avg_pool` / `max_pool` (stride 1, "same" padding)."""

    kernel_size: _KernelSize = 3

    @model_validator(mode="after")
    def _odd(self) -> PoolAttrs:
        _check_odd(self.kernel_size)
        return self


NodeAttrs = (
    NoAttrs
    | ConvAttrs
    | DepthwiseConvAttrs
    | PointwiseConvAttrs
    | LinearAttrs
    | BatchNormAttrs
    | LayerNormAttrs
    | GroupNormAttrs
    | PoolAttrs
)

ATTRS_BY_OP: dict[IRNodeType, type[NodeAttrs]] = {
    IRNodeType.CONV2D: ConvAttrs,
    IRNodeType.DEPTHWISE_CONV: DepthwiseConvAttrs,
    IRNodeType.POINTWISE_CONV: PointwiseConvAttrs,
    IRNodeType.BATCH_NORM: BatchNormAttrs,
    IRNodeType.LAYER_NORM: LayerNormAttrs,
    IRNodeType.GROUP_NORM: GroupNormAttrs,
    IRNodeType.RELU: NoAttrs,
    IRNodeType.GELU: NoAttrs,
    IRNodeType.SILU: NoAttrs,
    IRNodeType.SIGMOID: NoAttrs,
    IRNodeType.ADD: NoAttrs,
    IRNodeType.MUL: NoAttrs,
    IRNodeType.AVG_POOL: PoolAttrs,
    IRNodeType.MAX_POOL: PoolAttrs,
    IRNodeType.GLOBAL_AVG_POOL: NoAttrs,
    IRNodeType.LINEAR: LinearAttrs,
    IRNodeType.IDENTITY: NoAttrs,
}

#: Number of inputs each op takes.
ARITY: dict[IRNodeType, int] = {op: 2 if op in ("add", "mul") else 1 for op in IRNodeType}


class IRNode(_Model):
    """One op of a blueprint.

    Attributes:
        id: Name, unique within the blueprint; it does not affect the hash.
        op: The primitive.
        attrs: The op's typed attributes (`ATTRS_BY_OP[op]`); omitted means defaults.
    """

    id: Name
    op: IRNodeType
    # Parsed by `_typed_attrs` with the model the op dictates, so a union never guesses.
    attrs: SkipValidation[NodeAttrs] = NoAttrs()

    @model_validator(mode="before")
    @classmethod
    def _typed_attrs(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        node_id, op, attrs = data.get("id"), data.get("op"), data.get("attrs", {})
        if not isinstance(op, str) or op not in {t.value for t in IRNodeType}:
            known = ", ".join(t.value for t in IRNodeType)
            raise ValueError(f"node {node_id!r}: unknown op {op!r}; known ops: {known}")
        model = ATTRS_BY_OP[IRNodeType(op)]
        if isinstance(attrs, BaseModel):
            if type(attrs) is not model:
                raise ValueError(
                    f"node {node_id!r} ({op}): attrs must be {model.__name__}, "
                    f"got {type(attrs).__name__}"
                )
            return data
        try:
            parsed = model.model_validate(attrs, strict=True)
        except ValidationError as err:
            raise ValueError(f"node {node_id!r} ({op}): invalid attrs: {err}") from err
        return {**data, "attrs": parsed}


class Edge(_Model):
    """Data flows from `src` (a node id or graph input name) into node `dst`."""

    src: Name
    dst: Name


class BlueprintMeta(_Model):
    """Descriptive metadata; none of it enters the canonical hash.

    Attributes:
        name: Human-readable name, e.g. "bottleneck".
        version: Version of this design, bumped by its author.
        tags: Free-form labels, e.g. ("attention",).
        description: One line on what the blueprint is for.
    """

    name: Name
    version: int = Field(default=1, ge=1, strict=True)
    tags: tuple[Name, ...] = ()
    description: str = Field(default="", max_length=500)


class BlueprintIR(_Model):
    """A seed module as a validated DAG of primitive ops.

    Attributes:
        metadata: Name, version, tags.
        inputs: Graph inputs by name; a seed has exactly one, of schema [C, H, W].
        nodes: The ops, in any order.
        edges: Data dependencies, in any order; `add`/`mul` are commutative, so an
            edge has no port.
        outputs: Node ids whose values the graph returns, in order.
    """

    metadata: BlueprintMeta
    inputs: dict[Name, TensorSchema] = Field(min_length=1, max_length=8)
    nodes: tuple[IRNode, ...] = Field(min_length=1, max_length=MAX_NODES)
    edges: tuple[Edge, ...] = Field(max_length=MAX_EDGES)
    outputs: tuple[Name, ...] = Field(min_length=1, max_length=8)

    _order: tuple[str, ...] = PrivateAttr(default=())
    _shapes: dict[str, TensorSchema] = PrivateAttr(default_factory=dict)
    _canonical: tuple[str, ...] = PrivateAttr(default=())
    _hash: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _check_graph(self) -> BlueprintIR:
        by_id = {n.id: n for n in self.nodes}
        if len(by_id) != len(self.nodes):
            raise ValueError(f"duplicate node ids: {_duplicates(n.id for n in self.nodes)}")
        clash = sorted(set(by_id) & set(self.inputs))
        if clash:
            raise ValueError(f"names used both as node and input: {clash}")
        preds = _predecessors(self, by_id)
        for node in self.nodes:
            # Nodes passed in as instances (e.g. from `model_copy`) skip `_typed_attrs`.
            if type(node.attrs) is not ATTRS_BY_OP[node.op]:
                raise ValueError(
                    f"node {node.id!r} ({node.op}): attrs must be "
                    f"{ATTRS_BY_OP[node.op].__name__}, got {type(node.attrs).__name__}"
                )
            got, want = len(preds[node.id]), ARITY[node.op]
            if got != want:
                raise ValueError(
                    f"node {node.id!r} ({node.op}) takes {want} input(s), has {got} incoming edges"
                )
        for out in self.outputs:
            if out not in by_id:
                raise ValueError(f"output {out!r} is not a node")
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"duplicate outputs: {_duplicates(self.outputs)}")
        self._order = _kahn_order(self, preds)
        _reject_dead_nodes(self, preds)
        self._shapes = _infer_shapes(self, preds, by_id)
        self._canonical, self._hash = _canonicalise(self, preds, by_id)
        return self

    def model_copy(
        self, *, update: dict[str, Any] | None = None, deep: bool = False
    ) -> BlueprintIR:
        """Copies the blueprint; with `update`, the result is validated (and re-hashed)."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self).model_validate({**dict(self), **update})

    @classmethod
    def from_json(cls, text: str | bytes) -> BlueprintIR:
        """Parses and validates a blueprint; malformed input raises `pydantic.ValidationError`."""
        return cls.model_validate_json(text)

    def to_json(self) -> str:
        """Serialises to JSON that `from_json` reads back to an equal blueprint."""
        return self.model_dump_json()

    def topological_order(self) -> tuple[str, ...]:
        """Node ids in Kahn order (ties broken by listing order)."""
        return self._order

    def canonical_order(self) -> tuple[str, ...]:
        """Node ids in a topological order that does not depend on names or listing order."""
        return self._canonical

    def infer_shapes(self) -> dict[str, TensorSchema]:
        """Output schema of every node, by node id."""
        return dict(self._shapes)

    def output_schemas(self) -> tuple[TensorSchema, ...]:
        """Schemas of the graph outputs, in order."""
        return tuple(self._shapes[o] for o in self.outputs)

    def predecessors(self, node_id: str) -> tuple[str, ...]:
        """Sources feeding `node_id` (node ids or input names), in edge listing order."""
        return tuple(e.src for e in self.edges if e.dst == node_id)

    def node(self, node_id: str) -> IRNode:
        """The node called `node_id`."""
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id!r} in blueprint {self.metadata.name!r}")

    @property
    def canonical_hash(self) -> str:
        """SHA-256 of the canonical form: names, listing order and metadata do not count."""
        return self._hash


class SeedContractError(ValueError):
    """A blueprint that cannot be a residual seed (wrong number or shape of inputs/outputs)."""


def check_seed_contract(ir: BlueprintIR) -> None:
    """Raises `SeedContractError` unless `ir` maps one [C, H, W] input to one [C, H, W] output.

    Args:
        ir: The blueprint to check.
    """
    name = ir.metadata.name
    if len(ir.inputs) != 1 or len(ir.outputs) != 1:
        raise SeedContractError(
            f"blueprint {name!r}: a seed has exactly one input and one output, got "
            f"{len(ir.inputs)} and {len(ir.outputs)}"
        )
    (schema,) = ir.inputs.values()
    if schema.channels != C or schema.height != "H" or schema.width != "W":
        raise SeedContractError(f"blueprint {name!r}: seed input must be [C, H, W], got {schema}")
    (out,) = ir.output_schemas()
    if out != schema:
        raise SeedContractError(
            f"blueprint {name!r}: output {ir.outputs[0]!r} has schema {out}, but a seed "
            f"must return its input's schema {schema}"
        )


def _duplicates(items: Iterable[str]) -> list[str]:
    return sorted(x for x, count in Counter(items).items() if count > 1)


def _predecessors(ir: BlueprintIR, by_id: dict[str, IRNode]) -> dict[str, list[str]]:
    preds: dict[str, list[str]] = {n.id: [] for n in ir.nodes}
    for e in ir.edges:
        if e.src not in by_id and e.src not in ir.inputs:
            raise ValueError(f"edge {e.src}->{e.dst}: dangling edge, no node or input {e.src!r}")
        if e.dst not in by_id:
            what = "an input" if e.dst in ir.inputs else "no node"
            raise ValueError(f"edge {e.src}->{e.dst}: dangling edge, {e.dst!r} is {what}")
        preds[e.dst].append(e.src)
    return preds


def _kahn_order(ir: BlueprintIR, preds: dict[str, list[str]]) -> tuple[str, ...]:
    index = {n.id: i for i, n in enumerate(ir.nodes)}
    succs: dict[str, list[str]] = {n.id: [] for n in ir.nodes}
    indegree = dict.fromkeys(index, 0)
    for dst, srcs in preds.items():
        for src in srcs:
            if src in index:
                succs[src].append(dst)
                indegree[dst] += 1
    ready = [index[n] for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node_id = ir.nodes[heapq.heappop(ready)].id
        order.append(node_id)
        for dst in succs[node_id]:
            indegree[dst] -= 1
            if indegree[dst] == 0:
                heapq.heappush(ready, index[dst])
    if len(order) < len(ir.nodes):
        raise ValueError(f"cycle through nodes {' -> '.join(_find_cycle(indegree, preds))}")
    return tuple(order)


def _find_cycle(indegree: dict[str, int], preds: dict[str, list[str]]) -> list[str]:
    # Every node Kahn could not place has a predecessor that also was not placed, so
    # walking predecessors among them must revisit a node: that loop is a cycle.
    stuck = {n for n, d in indegree.items() if d > 0}
    walk = [min(stuck)]
    position = {walk[0]: 0}
    while True:
        nxt = min(p for p in preds[walk[-1]] if p in stuck)
        if nxt in position:
            cycle = walk[position[nxt] :]
            cycle.reverse()  # walked against the edges
            start = cycle.index(min(cycle))  # one spelling per cycle
            cycle = cycle[start:] + cycle[:start]
            return [*cycle, cycle[0]]
        position[nxt] = len(walk)
        walk.append(nxt)


def _reject_dead_nodes(ir: BlueprintIR, preds: dict[str, list[str]]) -> None:
    live: set[str] = set()
    stack = list(ir.outputs)
    while stack:
        node_id = stack.pop()
        if node_id in live or node_id in ir.inputs:
            continue
        live.add(node_id)
        stack.extend(preds[node_id])
    dead = [n.id for n in ir.nodes if n.id not in live]
    if dead:
        raise ValueError(f"nodes {dead} do not reach any output (dead code)")


def _broadcast(a: str | int, b: str | int) -> str | int | None:
    if a == b or b == 1:
        return a
    return b if a == 1 else None


def _infer_node(node: IRNode, ins: list[TensorSchema]) -> TensorSchema:
    x = ins[0]
    op, attrs = node.op, node.attrs
    if len({s.dtype for s in ins}) > 1:
        raise ValueError(
            f"node {node.id!r} ({op}): inputs differ in dtype: {[str(s) for s in ins]}"
        )
    if isinstance(attrs, ConvAttrs | PointwiseConvAttrs):
        return x.model_copy(update={"channels": attrs.out_channels})
    if isinstance(attrs, LinearAttrs):
        if x.height != 1 or x.width != 1:
            raise ValueError(
                f"node {node.id!r} (linear) needs a 1x1 input (put global_avg_pool before it), "
                f"got {x}"
            )
        return x.model_copy(update={"channels": attrs.out_features})
    if op == IRNodeType.GLOBAL_AVG_POOL:
        return x.model_copy(update={"height": 1, "width": 1})
    if ARITY[op] == 2:
        y = ins[1]
        height, width = _broadcast(x.height, y.height), _broadcast(x.width, y.width)
        if x.channels != y.channels or height is None or width is None:
            raise ValueError(f"node {node.id!r} ({op}): shapes {x} and {y} do not broadcast")
        return x.model_copy(update={"height": height, "width": width})
    return x


def _infer_shapes(
    ir: BlueprintIR, preds: dict[str, list[str]], by_id: dict[str, IRNode]
) -> dict[str, TensorSchema]:
    shapes: dict[str, TensorSchema] = dict(ir.inputs)
    for node_id in ir.topological_order():
        shapes[node_id] = _infer_node(by_id[node_id], [shapes[s] for s in preds[node_id]])
    return {n: s for n, s in shapes.items() if n not in ir.inputs}


def _digest(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonicalise(
    ir: BlueprintIR, preds: dict[str, list[str]], by_id: dict[str, IRNode]
) -> tuple[tuple[str, ...], str]:
    """Canonical node order and hash, by colour refinement over the DAG.

    Colours start from (op, attrs, output positions) and are refined with the
    colour multisets of predecessors and successors until stable; remaining ties
    are broken by individualising one member and refining again. Ties left by
    refinement are (in practice, always for seed-sized graphs) automorphic, so
    the choice does not change the result. The hash covers the full wiring, so
    equal hashes mean the same computation.
    """
    input_pos = {name: i for i, name in enumerate(ir.inputs)}
    out_pos: dict[str, list[int]] = {}
    for i, o in enumerate(ir.outputs):
        out_pos.setdefault(o, []).append(i)
    succs: dict[str, list[str]] = {n: [] for n in by_id}
    for dst, srcs in preds.items():
        for src in srcs:
            if src in by_id:
                succs[src].append(dst)
    fixed = {
        name: _digest(["input", i, ir.inputs[name].model_dump(mode="json")])
        for name, i in input_pos.items()
    }
    colour = {
        n.id: _digest([n.op.value, n.attrs.model_dump(mode="json"), out_pos.get(n.id, [])])
        for n in ir.nodes
    }

    def refine(col: dict[str, str]) -> dict[str, str]:
        while True:
            look = {**fixed, **col}
            new = {
                n: _digest(
                    [col[n], sorted(look[p] for p in preds[n]), sorted(col[s] for s in succs[n])]
                )
                for n in col
            }
            if len(set(new.values())) == len(set(col.values())):
                return new
            col = new

    colour = refine(colour)
    while len(set(colour.values())) < len(colour):
        classes: dict[str, list[str]] = {}
        for n, c in colour.items():
            classes.setdefault(c, []).append(n)
        tied = min(c for c, members in classes.items() if len(members) > 1)
        pick = min(classes[tied])
        colour = refine({**colour, pick: _digest([tied, "individualised"])})

    order = _priority_topological(preds, by_id, colour)
    index = {n: i for i, n in enumerate(order)}

    def ref(src: str) -> list[str | int]:
        return ["in", input_pos[src]] if src in input_pos else ["node", index[src]]

    payload = [
        HASH_FORMAT,
        [ir.inputs[name].model_dump(mode="json") for name in ir.inputs],
        [
            [
                by_id[n].op.value,
                by_id[n].attrs.model_dump(mode="json"),
                sorted(
                    ["in", input_pos[p]] if p in input_pos else ["node", index[p]] for p in preds[n]
                ),
            ]
            for n in order
        ],
        [index[o] for o in ir.outputs],
    ]
    return order, _digest(payload)


def _priority_topological(
    preds: dict[str, list[str]], by_id: dict[str, IRNode], colour: dict[str, str]
) -> tuple[str, ...]:
    indegree = {n: sum(p in by_id for p in ps) for n, ps in preds.items()}
    succs: dict[str, list[str]] = {n: [] for n in by_id}
    for dst, srcs in preds.items():
        for src in srcs:
            if src in by_id:
                succs[src].append(dst)
    ready = [(colour[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for s in succs[n]:
            indegree[s] -= 1
            if indegree[s] == 0:
                heapq.heappush(ready, (colour[s], s))
    return tuple(order)


class IRBuilder:
    """Builds a `BlueprintIR` op by op; each `add` returns the new node's id.

    Example:
        >>> b = IRBuilder("adapter")
        >>> down = b.add("pointwise_conv", b.input, out_channels=Width(den=8, minimum=4))
        >>> ir = b.build(b.add("pointwise_conv", down, out_channels=C, init_scale=0.1))
    """

    def __init__(
        self,
        name: str,
        *,
        version: int = 1,
        tags: tuple[str, ...] = (),
        description: str = "",
        inputs: dict[str, TensorSchema] | None = None,
    ) -> None:
        self._meta = {"name": name, "version": version, "tags": tags, "description": description}
        self._inputs = inputs if inputs is not None else {"x": TensorSchema()}
        self._nodes: list[dict[str, Any]] = []
        self._edges: list[dict[str, str]] = []

    @property
    def input(self) -> str:
        """Name of the first graph input."""
        return next(iter(self._inputs))

    def add(self, op: IRNodeType | str, *sources: str, **attrs: Any) -> str:
        """Appends a node fed by `sources` and returns its id.

        Args:
            op: The primitive.
            *sources: Node ids or input names feeding it, in order.
            **attrs: The op's attributes (see `ATTRS_BY_OP`).
        """
        node_id = f"{IRNodeType(op).value}_{len(self._nodes)}"
        self._nodes.append({"id": node_id, "op": op, "attrs": attrs})
        self._edges.extend({"src": s, "dst": node_id} for s in sources)
        return node_id

    def build(self, *outputs: str) -> BlueprintIR:
        """Validates and returns the blueprint with the given outputs."""
        return BlueprintIR.model_validate(
            {
                "metadata": self._meta,
                "inputs": self._inputs,
                "nodes": self._nodes,
                "edges": self._edges,
                "outputs": outputs,
            }
        )
