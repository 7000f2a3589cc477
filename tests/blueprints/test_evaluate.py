import math

import torch

from blueprints.catalog import CATALOG
from blueprints.evaluate import MAX_PARAMS_PER_C2, EvaluationReport, estimate_flops, evaluate
from blueprints.ir import BlueprintIR, C, IRBuilder, Width
from blueprints.lowering import lower
from blueprints.mutate import Edit, Mutation, apply_edit


def test_report_measures_params_flops_and_init_scale():
    report = evaluate(CATALOG["lowrank_adapter"], 16, height=8, width=8, latency_repeats=1)
    assert report.passed and report.reasons == ()
    assert report.params == 2 * 16 * 4
    assert report.flops == 2 * (16 * 4 + 4 * 16) * 8 * 8
    assert report.init_output_ratio == 0.0  # zero-initialised last layer
    assert report.latency_ms > 0 and report.device == "cpu"
    assert report.ir_hash == CATALOG["lowrank_adapter"].canonical_hash


def test_flops_of_pooled_branch_use_1x1_maps():
    plan = lower(CATALOG["squeeze_excitation"], 16)
    # gap 16*8*8; linear 2*16*4 + relu 4; linear 2*4*16 + sigmoid 4*16; mul 16*64; 1x1 2*16*16*64
    expected = 16 * 64 + 2 * 16 * 4 + 4 + 2 * 4 * 16 + 4 * 16 + 16 * 64 + 2 * 16 * 16 * 64
    assert estimate_flops(plan, 8, 8) == expected


def test_evaluation_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = evaluate(CATALOG["bottleneck"], 8, latency_repeats=1)
    b = evaluate(CATALOG["bottleneck"], 8, latency_repeats=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.model_dump(exclude={"latency_ms"}) == b.model_dump(exclude={"latency_ms"})


def test_zero_initialised_last_norm_passes_once_gradient_flows_in_the_sgd_steps():
    # At init only the norm's weight gets gradient; the conv below it gets some from step 2.
    b = IRBuilder("zero_start")
    ir = b.build(
        b.add("group_norm", b.add("pointwise_conv", b.input, out_channels=C), weight_init=0.0)
    )
    report = evaluate(ir, 8)
    assert report.passed, report.reasons
    assert report.init_output_ratio == 0.0
    # With a single step the conv never sees a gradient: flow is judged over the steps.
    one_step = evaluate(ir, 8, sgd_steps=1)
    assert not one_step.passed
    assert one_step.reasons == (
        "zero gradient for nodes.n0_pointwise_conv.weight in 1 SGD steps (no gradient flow)",
    )


def test_two_stacked_zero_initialised_convs_are_rejected_for_dead_gradients():
    b = IRBuilder("dead_start")
    h = b.add("pointwise_conv", b.input, out_channels=C, init_scale=0.0)
    ir = b.build(b.add("pointwise_conv", h, out_channels=C, init_scale=0.0))
    report = evaluate(ir, 8)
    assert not report.passed
    assert report.reasons == (
        "zero gradient for nodes.n0_pointwise_conv.weight in 3 SGD steps (no gradient flow)",
        "zero gradient for nodes.n1_pointwise_conv.weight in 3 SGD steps (no gradient flow)",
    )


def test_large_output_at_init_is_rejected():
    b = IRBuilder("loud")
    ir = b.build(b.add("pointwise_conv", b.input, out_channels=C, init_scale=4.0))
    report = evaluate(ir, 16)
    assert not report.passed
    assert any(r.startswith("output scale at init") for r in report.reasons)


def test_overflowing_blueprint_is_rejected_and_report_survives_json():
    b = IRBuilder("overflow")
    h = b.add("pointwise_conv", b.input, out_channels=C, init_scale=4.0)
    for _ in range(9):
        h = b.add("mul", h, h)  # squares: |h| ** 512 overflows float32
    report = evaluate(b.build(h), 16)
    assert "non-finite output at init" in report.reasons
    assert report.init_output_ratio == float("inf")
    assert EvaluationReport.model_validate_json(report.model_dump_json()) == report


def _giant() -> BlueprintIR:
    """Two 7x7 convolutions at 64 C wide: 3.3 billion parameters (13 GB) at C = 128."""
    b = IRBuilder("giant")
    wide = b.add("conv2d", b.input, out_channels=Width(num=64), kernel_size=7)
    wider = b.add("conv2d", wide, out_channels=Width(num=64), kernel_size=7)
    return b.build(b.add("pointwise_conv", wider, out_channels=C, init_scale=0.01))


def test_a_design_over_the_size_budget_is_refused_from_its_plan_without_being_built():
    report = evaluate(_giant(), 128)
    assert not report.passed and report.params == lower(_giant(), 128).param_count
    assert report.params > 3_000_000_000
    (reason,) = report.reasons
    assert reason.startswith("too big to build at 128 channels: 3,")
    assert math.isnan(report.latency_ms) and math.isnan(report.init_output_ratio)
    assert EvaluationReport.model_validate_json(report.model_dump_json()).params == report.params


def test_every_builtin_and_the_widest_karn_kernel_fit_the_size_budget():
    for channels in (8, 16, 32, 64, 128):
        for ir in CATALOG.values():
            plan = lower(ir, channels)
            assert plan.param_count <= MAX_PARAMS_PER_C2 * channels**2, ir.metadata.name
            assert estimate_flops(plan, 8, 8) <= 2 * MAX_PARAMS_PER_C2 * channels**2 * 64
    residual = CATALOG["residual_block"]
    for node in residual.nodes:
        if node.op == "conv2d":
            residual = apply_edit(residual, Edit(Mutation.KERNEL, node.id, 7))
    assert evaluate(residual, 16).passed  # 98 C^2: inside the budget
