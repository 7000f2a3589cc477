import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from blueprint_strategies import seed_irs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blueprints.catalog import CATALOG
from blueprints.compiler import build_module
from blueprints.evaluate import evaluate
from blueprints.ir import C, IRBuilder, IRNodeType, SeedContractError, Width, check_seed_contract
from blueprints.mutate import (
    MUTATIONS,
    Edit,
    Mutation,
    MutationError,
    apply_edit,
    edits,
    mutate,
)


def _runs_as_seed(ir, channels):
    module = build_module(ir, channels, seed=0)
    x = torch.randn(2, channels, 5, 7, generator=torch.Generator().manual_seed(0))
    out = module(x)
    return out.shape == x.shape and bool(torch.isfinite(out).all())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ir=seed_irs(), mutation=st.sampled_from(MUTATIONS), seed=st.integers(0, 2**16))
def test_every_mutation_is_a_valid_seed_or_a_clear_error(ir, mutation, seed):
    try:
        mutant = mutate(ir, mutation, np.random.default_rng(seed))
    except MutationError as err:
        assert mutation.value in str(err) and ir.metadata.name in str(err)
        assert edits(ir, mutation) == []
        return
    check_seed_contract(mutant)
    assert mutant.canonical_hash != ir.canonical_hash
    assert mutant.metadata.version == ir.metadata.version + 1
    assert "mutant" in mutant.metadata.tags
    assert mutation.value in mutant.metadata.description
    for channels in (4, 12):
        assert _runs_as_seed(mutant, channels)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ir=seed_irs(), mutation=st.sampled_from(MUTATIONS))
def test_every_listed_edit_applies(ir, mutation):
    for edit in edits(ir, mutation):
        assert apply_edit(ir, edit).canonical_hash != ir.canonical_hash


@pytest.mark.parametrize("name", list(CATALOG))
def test_mutation_is_deterministic_given_the_generator(name):
    ir = CATALOG[name]
    for mutation in MUTATIONS:
        if not edits(ir, mutation):
            continue
        first = mutate(ir, mutation, np.random.default_rng(7))
        again = mutate(ir, mutation, np.random.default_rng(7))
        assert first.canonical_hash == again.canonical_hash


def test_catalog_edits_are_the_expected_ones():
    counts = {name: {m: len(edits(ir, m)) for m in MUTATIONS} for name, ir in CATALOG.items()}
    # The single group norm has nothing to change: removing it would leave no op.
    assert set(counts["norm"].values()) == {0}
    # Two 3x3 convs, each to 1, 5 or 7.
    assert counts["residual_block"][Mutation.KERNEL] == 6
    assert counts["residual_block"][Mutation.REMOVE_NORM] == 2
    # The squeeze-excitation gate must keep C channels to multiply the input.
    se = CATALOG["squeeze_excitation"]
    widened = {e.node for e in edits(se, Mutation.WIDTH)}
    gate = [n.id for n in se.nodes if n.op == IRNodeType.LINEAR][-1]
    assert gate not in widened


def test_no_valid_edit_is_a_clear_error():
    with pytest.raises(MutationError, match="'kernel' has no valid edit on blueprint 'norm'"):
        mutate(CATALOG["norm"], Mutation.KERNEL, np.random.default_rng(0))


def test_an_edit_that_does_not_fit_is_a_clear_error():
    ir = CATALOG["lowrank_adapter"]
    with pytest.raises(MutationError, match="has no node"):
        apply_edit(ir, Edit(Mutation.KERNEL, "nope", 3))
    pointwise = ir.nodes[0].id
    with pytest.raises(MutationError, match="kernel edit needs a conv/pool node"):
        apply_edit(ir, Edit(Mutation.KERNEL, pointwise, 3))
    # The output must keep C channels: a narrower output is no seed.
    out = ir.outputs[0]
    with pytest.raises(MutationError, match="gives no valid seed"):
        apply_edit(ir, Edit(Mutation.WIDTH, out, Width(den=2, minimum=4)))


def test_a_non_seed_blueprint_is_refused():
    b = IRBuilder("widener")
    not_a_seed = b.build(b.add("pointwise_conv", b.input, out_channels=Width(num=2)))
    with pytest.raises(SeedContractError):
        mutate(not_a_seed, Mutation.WIDTH, np.random.default_rng(0))


def test_insert_norm_after_the_output_starts_small_and_passes_evaluation():
    ir = CATALOG["lowrank_adapter"]
    edit = Edit(Mutation.INSERT_NORM, ir.outputs[0], IRNodeType.GROUP_NORM)
    mutant = apply_edit(ir, edit)
    assert mutant.node(mutant.outputs[0]).attrs.weight_init == pytest.approx(0.1)
    assert evaluate(mutant, 16).passed


def test_removing_the_last_norm_of_a_residual_block_fails_evaluation():
    # The output is then a conv at full init scale: too loud for a new seed.
    ir = CATALOG["residual_block"]
    mutant = apply_edit(ir, Edit(Mutation.REMOVE_NORM, ir.outputs[0]))
    report = evaluate(mutant, 16)
    assert not report.passed
    assert any("output scale at init" in r for r in report.reasons)


def test_width_edit_sets_the_chosen_width():
    ir = CATALOG["bottleneck"]
    first = next(e for e in edits(ir, Mutation.WIDTH) if e.value == C)
    mutant = apply_edit(ir, first)
    assert mutant.node(first.node).attrs.out_channels == C


def test_blueprints_mutate_imports_nothing_above_blueprints():
    tree = ast.parse(Path("blueprints/mutate.py").read_text())
    modules = {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not modules & {"esper_env", "agents"}
