"""Karn's mutation operators: small edits of a seed blueprint that keep it a seed.

Each operator turns a valid seed `BlueprintIR` ([C, H, W] -> [C, H, W]) into
another one that computes something different (its canonical hash changes):

- `width`: set the output width of a `conv2d`, `pointwise_conv` or `linear` to
  another rung of `WIDTH_LADDER` (C/8, C/4, C/2, C, 2C);
- `activation`: swap a `relu`, `gelu` or `silu` for another of the three;
- `insert_norm`: put a `batch_norm`, `group_norm` or `layer_norm` after a node
  that is not a norm and does not already feed one (after the output node the
  norm starts scaled down, as the catalog's last layers do);
- `remove_norm`: take a norm out and wire its input to its consumers;
- `kernel`: set the kernel size of a `conv2d`, `depthwise_conv` or pool to
  another of 1, 3, 5, 7.

`edits(ir, mutation)` lists every concrete edit of one operator whose result
validates as a seed, in a stable order; `mutate` draws one of them with a numpy
`Generator`, so a mutation is deterministic given the generator's state. An
operator with no valid edit raises `MutationError` naming the blueprint and why.
Whether the result is any good is Urabrask's call (`blueprints.evaluate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from pydantic import ValidationError

from blueprints.ir import (
    BlueprintIR,
    C,
    ConvAttrs,
    DepthwiseConvAttrs,
    IRNodeType,
    LinearAttrs,
    PointwiseConvAttrs,
    PoolAttrs,
    SeedContractError,
    Width,
    check_seed_contract,
)


class Mutation(StrEnum):
    """Karn's mutation operators, in the order of Karn's action dimension."""

    WIDTH = "width"
    ACTIVATION = "activation"
    INSERT_NORM = "insert_norm"
    REMOVE_NORM = "remove_norm"
    KERNEL = "kernel"


#: The operators in action order.
MUTATIONS: tuple[Mutation, ...] = tuple(Mutation)

#: Widths a `width` edit may choose from.
WIDTH_LADDER: tuple[Width, ...] = (
    Width(den=8, minimum=4),
    Width(den=4, minimum=4),
    Width(den=2, minimum=4),
    C,
    Width(num=2),
)
ACTIVATIONS = (IRNodeType.RELU, IRNodeType.GELU, IRNodeType.SILU)
NORMS = (IRNodeType.BATCH_NORM, IRNodeType.GROUP_NORM, IRNodeType.LAYER_NORM)
KERNEL_SIZES = (1, 3, 5, 7)
_KERNEL_OPS = (
    IRNodeType.CONV2D,
    IRNodeType.DEPTHWISE_CONV,
    IRNodeType.AVG_POOL,
    IRNodeType.MAX_POOL,
)
# A norm appended after the output starts this small, so the seed's output does too.
_OUTPUT_NORM_SCALE = 0.1


class MutationError(ValueError):
    """A mutation that cannot be applied to a blueprint (no valid edit, or an invalid one)."""


@dataclass(frozen=True)
class Edit:
    """One concrete mutation: which operator, on which node, to what value.

    Attributes:
        mutation: The operator.
        node: Id of the node edited (for `insert_norm`, the node the norm follows).
        value: The new width, op or kernel size (None for `remove_norm`).
    """

    mutation: Mutation
    node: str
    value: Width | IRNodeType | int | None = None

    def describe(self) -> str:
        """A short human-readable account, e.g. "kernel: conv2d_2 -> 5"."""
        if self.value is None:
            return f"{self.mutation.value}: {self.node}"
        return f"{self.mutation.value}: {self.node} -> {self.value}"


def _width_attr(attrs: Any) -> str | None:
    if isinstance(attrs, ConvAttrs | PointwiseConvAttrs):
        return "out_channels"
    if isinstance(attrs, LinearAttrs):
        return "out_features"
    return None


def _proposals(ir: BlueprintIR, mutation: Mutation) -> list[Edit]:
    """Every edit of `mutation` in a stable order, before checking that it validates."""
    order = ir.canonical_order()
    consumers: dict[str, list[str]] = {n: [] for n in order}
    for edge in ir.edges:
        if edge.src in consumers:
            consumers[edge.src].append(edge.dst)
    found: list[Edit] = []
    for node_id in order:
        node = ir.node(node_id)
        if mutation is Mutation.WIDTH:
            attr = _width_attr(node.attrs)
            if attr is not None:
                current = getattr(node.attrs, attr)
                found += [Edit(mutation, node_id, w) for w in WIDTH_LADDER if w != current]
        elif mutation is Mutation.ACTIVATION and node.op in ACTIVATIONS:
            found += [Edit(mutation, node_id, op) for op in ACTIVATIONS if op != node.op]
        elif mutation is Mutation.INSERT_NORM:
            feeds_norm = any(ir.node(c).op in NORMS for c in consumers[node_id])
            if node.op not in NORMS and not feeds_norm:
                found += [Edit(mutation, node_id, op) for op in NORMS]
        elif mutation is Mutation.REMOVE_NORM and node.op in NORMS:
            found.append(Edit(mutation, node_id))
        elif mutation is Mutation.KERNEL and node.op in _KERNEL_OPS:
            assert isinstance(node.attrs, ConvAttrs | DepthwiseConvAttrs | PoolAttrs)
            size = node.attrs.kernel_size
            found += [Edit(mutation, node_id, k) for k in KERNEL_SIZES if k != size]
    return found


def _edited_doc(ir: BlueprintIR, edit: Edit) -> dict[str, Any]:
    doc = ir.model_dump(mode="json")
    nodes = {n["id"]: n for n in doc["nodes"]}
    if edit.node not in nodes:
        raise MutationError(f"blueprint {ir.metadata.name!r} has no node {edit.node!r}")
    target = nodes[edit.node]
    m = edit.mutation
    if m is Mutation.WIDTH:
        attr = _width_attr(ir.node(edit.node).attrs)
        if attr is None or not isinstance(edit.value, Width):
            raise MutationError(f"width edit needs a width on a conv/linear node, got {edit}")
        target["attrs"][attr] = edit.value.model_dump(mode="json")
    elif m is Mutation.ACTIVATION:
        if target["op"] not in ACTIVATIONS or edit.value not in ACTIVATIONS:
            raise MutationError(f"activation edit needs an activation node and op, got {edit}")
        target["op"] = IRNodeType(edit.value).value
        target["attrs"] = {}
    elif m is Mutation.KERNEL:
        if target["op"] not in _KERNEL_OPS or not isinstance(edit.value, int):
            raise MutationError(f"kernel edit needs a conv/pool node and a size, got {edit}")
        target["attrs"]["kernel_size"] = edit.value
    elif m is Mutation.INSERT_NORM:
        if edit.value not in NORMS:
            raise MutationError(f"insert_norm needs a norm op, got {edit}")
        op = IRNodeType(edit.value)
        taken = set(nodes) | set(doc["inputs"])
        new_id = next(
            f"{op.value}_{k}" for k in range(len(taken) + 1) if f"{op.value}_{k}" not in taken
        )
        is_output = edit.node in doc["outputs"]
        attrs: dict[str, Any] = {"weight_init": _OUTPUT_NORM_SCALE} if is_output else {}
        doc["nodes"].append({"id": new_id, "op": op.value, "attrs": attrs})
        for e in doc["edges"]:
            if e["src"] == edit.node:
                e["src"] = new_id
        doc["edges"].append({"src": edit.node, "dst": new_id})
        doc["outputs"] = [new_id if o == edit.node else o for o in doc["outputs"]]
    else:
        if target["op"] not in NORMS:
            raise MutationError(f"remove_norm needs a norm node, got {target['op']!r}")
        (source,) = ir.predecessors(edit.node)
        doc["nodes"] = [n for n in doc["nodes"] if n["id"] != edit.node]
        doc["edges"] = [e for e in doc["edges"] if e["dst"] != edit.node]
        for e in doc["edges"]:
            if e["src"] == edit.node:
                e["src"] = source
        doc["outputs"] = [source if o == edit.node else o for o in doc["outputs"]]
    meta = doc["metadata"]
    tags = meta["tags"] if "mutant" in meta["tags"] else [*meta["tags"], "mutant"]
    note = f"{edit.describe()} (from {meta['name']} v{meta['version']})"
    doc["metadata"] = {
        **meta,
        "version": meta["version"] + 1,
        "tags": tags,
        "description": note[:500],
    }
    return doc


def apply_edit(ir: BlueprintIR, edit: Edit) -> BlueprintIR:
    """Applies one edit and validates the result as a seed.

    Args:
        ir: A seed blueprint.
        edit: The edit, e.g. one of `edits(ir, mutation)`.

    Returns:
        The mutant: name and tags kept (plus "mutant"), version bumped, the edit in
        its description.

    Raises:
        MutationError: The edit does not fit `ir`, or its result is not a valid seed.
    """
    doc = _edited_doc(ir, edit)
    try:
        mutant = BlueprintIR.model_validate(doc)
        check_seed_contract(mutant)
    except (ValidationError, SeedContractError) as err:
        raise MutationError(
            f"{edit.describe()} on blueprint {ir.metadata.name!r} gives no valid seed: {err}"
        ) from err
    return mutant


def edits(ir: BlueprintIR, mutation: Mutation) -> list[Edit]:
    """Every edit of one operator that yields a valid seed, in a stable order.

    Raises:
        SeedContractError: `ir` is not a seed blueprint.
    """
    check_seed_contract(ir)
    valid = []
    for edit in _proposals(ir, Mutation(mutation)):
        try:
            apply_edit(ir, edit)
        except MutationError:
            continue  # e.g. a width that no longer matches the other operand of an add
        valid.append(edit)
    return valid


def mutate(ir: BlueprintIR, mutation: Mutation, rng: np.random.Generator) -> BlueprintIR:
    """Applies one operator at a site and value drawn from `rng` among its valid edits.

    Args:
        ir: A seed blueprint.
        mutation: The operator.
        rng: Source of the choice; the same state gives the same mutant.

    Raises:
        MutationError: The operator has no valid edit on `ir` (e.g. `kernel` on a
            blueprint without convolutions or pools).
        SeedContractError: `ir` is not a seed blueprint.
    """
    options = edits(ir, mutation)
    if not options:
        raise MutationError(
            f"mutation {Mutation(mutation).value!r} has no valid edit on blueprint "
            f"{ir.metadata.name!r}; ops there: {sorted({n.op.value for n in ir.nodes})}"
        )
    return apply_edit(ir, options[int(rng.integers(len(options)))])
