"""Hypothesis strategies for blueprint tests: random valid seed IRs and their variants."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from blueprints.ir import BlueprintIR, C, TensorSchema, Width

WIDTHS = [C, Width(den=2), Width(den=4, minimum=4), Width(num=2), Width(num=0, minimum=8)]
SAME_SHAPE_OPS = [
    "relu",
    "gelu",
    "silu",
    "sigmoid",
    "identity",
    "batch_norm",
    "layer_norm",
    "group_norm",
    "depthwise_conv",
    "avg_pool",
    "max_pool",
]


@st.composite
def _attrs(draw: st.DrawFn, op: str) -> dict[str, Any]:
    init_scale = draw(st.sampled_from([0.1, 0.5, 1.0]))
    if op == "conv2d":
        return {
            "out_channels": draw(st.sampled_from(WIDTHS)),
            "kernel_size": draw(st.sampled_from([1, 3, 5])),
            "dilation": draw(st.sampled_from([1, 2])),
            "bias": draw(st.booleans()),
            "init_scale": init_scale,
        }
    if op == "depthwise_conv":
        return {"kernel_size": draw(st.sampled_from([1, 3])), "bias": draw(st.booleans())}
    if op == "pointwise_conv":
        return {"out_channels": draw(st.sampled_from(WIDTHS)), "init_scale": init_scale}
    if op == "linear":
        return {"out_features": draw(st.sampled_from(WIDTHS)), "bias": draw(st.booleans())}
    if op in ("batch_norm", "layer_norm"):
        return {"weight_init": draw(st.sampled_from([0.5, 1.0]))}
    if op == "group_norm":
        return {"groups": draw(st.sampled_from([1, 2, 8]))}
    if op in ("avg_pool", "max_pool"):
        return {"kernel_size": draw(st.sampled_from([1, 3]))}
    return {}


@st.composite
def seed_irs(draw: st.DrawFn, max_nodes: int = 7) -> BlueprintIR:
    """A random valid seed blueprint: a DAG over all primitives, closed to [C, H, W]."""
    schemas: dict[str, TensorSchema] = {"x": TensorSchema()}
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []
    used: set[str] = set()

    def add(op: str, attrs: dict[str, Any], *sources: str) -> str:
        node_id = f"{op}_{len(nodes)}"
        nodes.append({"id": node_id, "op": op, "attrs": attrs})
        edges.extend({"src": s, "dst": node_id} for s in sources)
        used.update(sources)
        first = schemas[sources[0]]
        if op in ("conv2d", "pointwise_conv"):
            schemas[node_id] = first.model_copy(update={"channels": attrs["out_channels"]})
        elif op == "linear":
            schemas[node_id] = first.model_copy(update={"channels": attrs["out_features"]})
        elif op == "global_avg_pool":
            schemas[node_id] = first.model_copy(update={"height": 1, "width": 1})
        elif op in ("add", "mul"):
            # Height and width are both symbolic or both 1, so they broadcast together.
            full = "H" in (first.height, schemas[sources[1]].height)
            spatial: dict[str, Any] = {"height": "H", "width": "W"} if full else {}
            schemas[node_id] = first.model_copy(update=spatial)
        else:
            schemas[node_id] = first
        return node_id

    for _ in range(draw(st.integers(1, max_nodes))):
        names = list(schemas)
        src = draw(st.sampled_from(names))
        kind = draw(st.sampled_from(["same", "same", "conv2d", "pointwise_conv", "gap", "binary"]))
        if kind == "same":
            op = draw(st.sampled_from(SAME_SHAPE_OPS))
            add(op, draw(_attrs(op)), src)
        elif kind in ("conv2d", "pointwise_conv"):
            add(kind, draw(_attrs(kind)), src)
        elif kind == "gap":
            pooled = add("global_avg_pool", {}, src)
            add("linear", draw(_attrs("linear")), pooled)
        else:
            partners = [n for n in names if schemas[n].channels == schemas[src].channels]
            add(draw(st.sampled_from(["add", "mul"])), {}, src, draw(st.sampled_from(partners)))

    # Close the graph: project every unused value to C channels and sum them.
    total = None
    for sink in [n for n in schemas if n not in used and n != "x"]:
        term = sink
        if schemas[sink].channels != C:
            term = add("pointwise_conv", {"out_channels": C, "init_scale": 0.1}, sink)
        total = term if total is None else add("add", {}, total, term)
    assert total is not None
    if schemas[total].height == 1:
        total = add("add", {}, total, "x")
    return BlueprintIR.model_validate(
        {
            "metadata": {"name": "random", "tags": ["hypothesis"]},
            "inputs": {"x": {}},
            "nodes": nodes,
            "edges": edges,
            "outputs": [total],
        }
    )


@st.composite
def renamed_and_shuffled(draw: st.DrawFn, ir: BlueprintIR) -> tuple[BlueprintIR, dict[str, str]]:
    """The same graph with new node names and nodes/edges listed in another order."""
    ids = [n.id for n in ir.nodes]
    new_names = draw(st.permutations([f"m{i}" for i in range(len(ids))]))
    mapping = dict(zip(ids, new_names, strict=True))
    rename = {**mapping, **{name: name for name in ir.inputs}}
    doc = json.loads(ir.to_json())
    for node in doc["nodes"]:
        node["id"] = rename[node["id"]]
    for edge in doc["edges"]:
        edge["src"], edge["dst"] = rename[edge["src"]], rename[edge["dst"]]
    doc["outputs"] = [rename[o] for o in doc["outputs"]]
    doc["nodes"] = draw(st.permutations(doc["nodes"]))
    doc["edges"] = draw(st.permutations(doc["edges"]))
    return BlueprintIR.model_validate(doc), mapping


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 300)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.extend(_paths(v, (*prefix, i)))
    return out


@st.composite
def mutated_json(draw: st.DrawFn, ir: BlueprintIR) -> str:
    """`ir`'s JSON with one random edit: a value replaced, a key deleted or an unknown key added."""
    doc = json.loads(ir.to_json())
    path = draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    edit = draw(st.sampled_from(["replace", "delete", "unknown_key"]))
    if edit == "replace":
        parent[path[-1]] = draw(json_values)
    elif edit == "delete":
        del parent[path[-1]]
    else:
        target = parent if isinstance(parent, dict) else doc
        target["surplus_" + draw(st.text("abc", min_size=1, max_size=3))] = draw(json_values)
    return json.dumps(doc)
