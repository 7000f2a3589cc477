import contextlib
import json

import pytest
from blueprint_strategies import mutated_json, renamed_and_shuffled, seed_irs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from blueprints.catalog import CATALOG
from blueprints.ir import (
    BlueprintIR,
    C,
    IRBuilder,
    IRNode,
    IRNodeType,
    SeedContractError,
    TensorSchema,
    Width,
    check_seed_contract,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _doc(nodes, edges, outputs, inputs=None):
    return {
        "metadata": {"name": "t"},
        "inputs": inputs if inputs is not None else {"x": {}},
        "nodes": nodes,
        "edges": edges,
        "outputs": outputs,
    }


def _chain(*ops):
    nodes = [{"id": f"n{i}", "op": op} for i, op in enumerate(ops)]
    edges = [{"src": "x" if i == 0 else f"n{i - 1}", "dst": f"n{i}"} for i in range(len(ops))]
    return _doc(nodes, edges, [f"n{len(ops) - 1}"])


def _rejects(doc, *fragments):
    with pytest.raises(ValidationError) as info:
        BlueprintIR.from_json(json.dumps(doc))
    for fragment in fragments:
        assert fragment in str(info.value)


@FAST
@given(seed_irs())
def test_json_round_trip_keeps_blueprint_and_hash(ir):
    back = BlueprintIR.from_json(ir.to_json())
    assert back == ir
    assert back.canonical_hash == ir.canonical_hash
    check_seed_contract(back)


@FAST
@given(st.data())
def test_hash_invariant_under_renaming_and_reordering(data):
    ir = data.draw(seed_irs())
    other, mapping = data.draw(renamed_and_shuffled(ir))
    assert other.canonical_hash == ir.canonical_hash
    # The canonical order is unique up to automorphisms (interchangeable nodes).
    ops = [ir.node(n).op for n in ir.canonical_order()]
    assert [other.node(n).op for n in other.canonical_order()] == ops
    assert set(other.canonical_order()) == {mapping[n] for n in ir.canonical_order()}


@FAST
@given(st.data())
def test_malformed_json_raises_only_validation_errors(data):
    text = data.draw(mutated_json(data.draw(seed_irs(max_nodes=4))))
    # Rejected as it should be, or (an edit that keeps it valid) parsed; nothing else.
    with contextlib.suppress(ValidationError):
        BlueprintIR.from_json(text)


@FAST
@given(st.text(max_size=60) | st.binary(max_size=60).map(bytes))
def test_random_text_is_rejected_with_validation_error(text):
    with pytest.raises(ValidationError):
        BlueprintIR.from_json(text)


def test_metadata_does_not_enter_the_hash_but_computation_does():
    base = CATALOG["lowrank_adapter"]
    doc = json.loads(base.to_json())
    renamed = json.loads(base.to_json())
    renamed["metadata"] = {"name": "other", "version": 7, "tags": ["x"], "description": "d"}
    assert BlueprintIR.model_validate(renamed).canonical_hash == base.canonical_hash

    changes = [
        ("init_scale", lambda d: d["nodes"][1]["attrs"].update(init_scale=0.2)),
        ("bias", lambda d: d["nodes"][0]["attrs"].update(bias=True)),
        ("width", lambda d: d["nodes"][0]["attrs"]["out_channels"].update(den=4)),
        ("minimum", lambda d: d["nodes"][0]["attrs"]["out_channels"].update(minimum=5)),
        ("dtype", lambda d: [s.update(dtype="float16") for s in d["inputs"].values()]),
    ]
    hashes = {base.canonical_hash}
    for _, change in changes:
        variant = json.loads(json.dumps(doc))
        change(variant)
        hashes.add(BlueprintIR.model_validate(variant).canonical_hash)
    assert len(hashes) == len(changes) + 1


def test_hash_distinguishes_shared_from_parallel_nodes():
    shared = IRBuilder("shared")
    conv = shared.add("pointwise_conv", shared.input, out_channels=C)
    shared_ir = shared.build(shared.add("add", conv, conv))
    parallel = IRBuilder("parallel")
    a = parallel.add("pointwise_conv", parallel.input, out_channels=C)
    b = parallel.add("pointwise_conv", parallel.input, out_channels=C)
    parallel_ir = parallel.build(parallel.add("add", a, b))
    assert shared_ir.canonical_hash != parallel_ir.canonical_hash


def test_hash_distinguishes_operand_wiring():
    def graph(gate_first_on_relu: bool) -> BlueprintIR:
        b = IRBuilder("wiring")
        r = b.add("relu", b.input)
        s = b.add("sigmoid", b.input)
        m = b.add("mul", r, s)
        return b.build(b.add("add", r if gate_first_on_relu else s, m))

    assert graph(True).canonical_hash != graph(False).canonical_hash


def test_topological_order_follows_edges_and_listing_order():
    doc = _doc(
        [{"id": "c", "op": "add"}, {"id": "a", "op": "relu"}, {"id": "b", "op": "gelu"}],
        [
            {"src": "b", "dst": "c"},
            {"src": "a", "dst": "c"},
            {"src": "x", "dst": "a"},
            {"src": "x", "dst": "b"},
        ],
        ["c"],
    )
    ir = BlueprintIR.model_validate(doc)
    assert ir.topological_order() == ("a", "b", "c")


def test_cycle_is_reported_by_its_nodes():
    doc = _doc(
        [
            {"id": "a", "op": "add"},
            {"id": "b", "op": "relu"},
            {"id": "c", "op": "relu"},
            {"id": "d", "op": "relu"},
        ],
        [
            {"src": "x", "dst": "a"},
            {"src": "c", "dst": "a"},
            {"src": "a", "dst": "b"},
            {"src": "b", "dst": "c"},
            {"src": "c", "dst": "d"},
        ],
        ["d"],
    )
    _rejects(doc, "cycle through nodes a -> b -> c -> a")


@pytest.mark.parametrize(
    ("doc", "fragments"),
    [
        (_chain("relu", "frobnicate"), ["node 'n1'", "unknown op 'frobnicate'"]),
        (_chain("__import__('os').system"), ["unknown op"]),
        (
            _doc([{"id": "a", "op": "relu"}], [{"src": "ghost", "dst": "a"}], ["a"]),
            ["dangling edge", "'ghost'"],
        ),
        (
            _doc([{"id": "a", "op": "relu"}], [{"src": "x", "dst": "zed"}], ["a"]),
            ["dangling edge", "'zed'"],
        ),
        (
            _doc(
                [
                    {"id": "down", "op": "pointwise_conv", "attrs": {"out_channels": {"den": 4}}},
                    {"id": "sum", "op": "add"},
                ],
                [
                    {"src": "x", "dst": "down"},
                    {"src": "x", "dst": "sum"},
                    {"src": "down", "dst": "sum"},
                ],
                ["sum"],
            ),
            ["node 'sum' (add)", "do not broadcast"],
        ),
        (
            _doc(
                [{"id": "lin", "op": "linear", "attrs": {"out_features": {}}}],
                [{"src": "x", "dst": "lin"}],
                ["lin"],
            ),
            ["node 'lin' (linear) needs a 1x1 input"],
        ),
        (
            _doc(
                [{"id": "k", "op": "conv2d", "attrs": {"out_channels": {}, "kernel_size": "3"}}],
                [{"src": "x", "dst": "k"}],
                ["k"],
            ),
            ["node 'k' (conv2d): invalid attrs", "kernel_size"],
        ),
        (
            _doc(
                [{"id": "k", "op": "conv2d", "attrs": {"out_channels": {}, "kernel_size": 4}}],
                [{"src": "x", "dst": "k"}],
                ["k"],
            ),
            ["node 'k' (conv2d)", "odd"],
        ),
        (
            _doc(
                [{"id": "p", "op": "pointwise_conv", "attrs": {"out_channels": {}, "bias": 1}}],
                [{"src": "x", "dst": "p"}],
                ["p"],
            ),
            ["node 'p' (pointwise_conv)", "bias"],
        ),
        (
            _doc(
                [{"id": "r", "op": "relu", "attrs": {"alpha": 0.1}}],
                [{"src": "x", "dst": "r"}],
                ["r"],
            ),
            ["node 'r' (relu)", "alpha"],
        ),
        (
            _doc([{"id": "r", "op": "add"}], [{"src": "x", "dst": "r"}], ["r"]),
            ["node 'r' (add) takes 2 input(s), has 1"],
        ),
        (
            _doc(
                [{"id": "r", "op": "relu"}, {"id": "dead", "op": "relu"}],
                [{"src": "x", "dst": "r"}, {"src": "x", "dst": "dead"}],
                ["r"],
            ),
            ["['dead'] do not reach any output"],
        ),
        (
            _doc(
                [{"id": "r", "op": "relu"}, {"id": "r", "op": "gelu"}],
                [{"src": "x", "dst": "r"}],
                ["r"],
            ),
            ["duplicate node ids: ['r']"],
        ),
        (_doc([{"id": "r", "op": "relu"}], [{"src": "x", "dst": "r"}], ["nope"]), ["'nope'"]),
    ],
)
def test_invalid_blueprints_are_rejected_naming_the_problem(doc, fragments):
    _rejects(doc, *fragments)


def test_width_resolves_and_requires_lowest_terms():
    assert Width(den=4, minimum=4).resolve(64) == 16
    assert Width(den=4, minimum=4).resolve(8) == 4
    assert Width(num=0, minimum=8).resolve(100) == 8
    assert str(Width(num=2, den=3, minimum=2)) == "max(2, 2C/3)"
    with pytest.raises(ValidationError, match="lowest terms"):
        Width(num=2, den=4)


def test_seed_contract_requires_same_schema_in_and_out():
    b = IRBuilder("narrow")
    with pytest.raises(SeedContractError, match=r"output .* has schema \[max\(4, C/4\)"):
        check_seed_contract(
            b.build(b.add("pointwise_conv", b.input, out_channels=Width(den=4, minimum=4)))
        )
    pooled = IRBuilder("pooled")
    with pytest.raises(SeedContractError, match=r"\[C, 1, 1\]"):
        check_seed_contract(pooled.build(pooled.add("global_avg_pool", pooled.input)))
    two_inputs = IRBuilder("two", inputs={"x": TensorSchema(), "y": TensorSchema()})
    with pytest.raises(SeedContractError, match="exactly one input"):
        check_seed_contract(two_inputs.build(two_inputs.add("add", "x", "y")))


def test_shape_inference_tracks_symbolic_widths_and_pooling():
    ir = CATALOG["squeeze_excitation"]
    shapes = {ir.node(n).op.value: str(s) for n, s in ir.infer_shapes().items()}
    assert shapes["global_avg_pool"] == "[C, 1, 1] float32"
    assert shapes["mul"] == "[C, H, W] float32"
    assert ir.output_schemas() == (TensorSchema(),)


def test_updated_copies_are_revalidated():
    ir = CATALOG["lowrank_adapter"]
    relu = IRNode(id="r", op="relu")
    bad_node = relu.model_copy(update={"op": IRNodeType.CONV2D})
    with pytest.raises(ValidationError, match=r"node 'r' \(conv2d\): attrs must be ConvAttrs"):
        ir.model_copy(update={"nodes": (*ir.nodes, bad_node)})
    scaled = json.loads(ir.to_json())["nodes"]
    scaled[1]["attrs"]["init_scale"] = 0.3
    changed = ir.model_copy(update={"nodes": scaled})
    assert changed.canonical_hash != ir.canonical_hash
    assert ir.model_copy().canonical_hash == ir.canonical_hash
