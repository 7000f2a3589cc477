"""The lifecycle table, its gates G0..G5, the embargo and the alpha ramps."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from esper_env.contracts import BlendSchedule, HostConfig, LifecycleConfig, Op, SeedStage
from esper_env.kasmina import TRANSITIONS, MorphogeneticModel, blend_alpha, build_host

REQUESTED = ("germinate", "advance", "fossilize", "prune", "remove")
REACHABLE = [s for s in SeedStage if s is not SeedStage.RESETTING]


def _model(**lifecycle: object) -> MorphogeneticModel:
    torch.manual_seed(0)
    # significance is explicit: the reason strings below spell it out.
    config = {
        "min_training_epochs": 0,
        "holding_epochs": 0,
        "embargo_epochs": 2,
        "significance": 2.0,
        "fossilize_significance": 2.0,
        **lifecycle,
    }
    return build_host(HostConfig(widths=(4, 8)), LifecycleConfig(**config))


def _request(model: MorphogeneticModel, op: str, slot: str, seed: nn.Module):
    if op == "germinate":
        return model.germinate(slot, seed, "conv", 1)
    return getattr(model, op)(slot)


def _illegal_pairs() -> list[tuple[str, SeedStage]]:
    return [(op, s) for s in REACHABLE for op in REQUESTED if (op, s) not in TRANSITIONS]


@pytest.mark.parametrize(("op", "stage"), _illegal_pairs())
def test_every_illegal_transition_is_refused_with_a_reason(
    op: str, stage: SeedStage, drive_to, make_seed
) -> None:
    model = _model()
    drive_to(model, "slot1", stage)
    before = model.slots["slot1"].lifecycle_state()
    result = _request(model, op, "slot1", make_seed(8))
    assert not result.ok
    assert result.gate == "lifecycle"
    assert result.from_stage is result.to_stage is stage
    assert op in result.reason and stage.name in result.reason
    assert model.slots["slot1"].lifecycle_state() == before


@pytest.mark.parametrize("op", REQUESTED)
def test_resetting_slot_refuses_every_operation(op: str, make_seed) -> None:
    model = _model()
    state = model.slots["slot0"].lifecycle_state()
    model.slots["slot0"].load_lifecycle_state({**state, "stage": int(SeedStage.RESETTING)})
    result = _request(model, op, "slot0", make_seed(4))
    assert not result.ok
    assert result.gate == "lifecycle"
    assert model.slots["slot0"].stage is SeedStage.RESETTING


def test_table_has_the_documented_main_line() -> None:
    line = [
        SeedStage.DORMANT,
        SeedStage.GERMINATED,
        SeedStage.TRAINING,
        SeedStage.BLENDING,
        SeedStage.HOLDING,
        SeedStage.FOSSILIZED,
    ]
    assert TRANSITIONS[("germinate", line[0])].to_stage is line[1]
    for here, there in itertools.pairwise(line[1:]):
        assert TRANSITIONS[("advance", here)].to_stage is there
    gates = [TRANSITIONS[("advance", s)].gate for s in line[1:-1]]
    assert gates == ["G1", "G2", "G3", "G4"]


@pytest.mark.parametrize(
    "stage", [SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING]
)
def test_prune_is_legal_from_every_live_stage(stage: SeedStage, drive_to) -> None:
    model = _model()
    drive_to(model, "slot0", stage)
    result = model.prune("slot0")
    assert result.ok and result.to_stage is SeedStage.PRUNED
    assert model.slots["slot0"].seed is None
    assert model.seed_param_count() == 0


# --- G0 ---------------------------------------------------------------------------------


class _Widen(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, h], dim=1)


class _Inf(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h / 0.0


class _InPlace(nn.Module):
    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul_(2.0)


@pytest.mark.parametrize(
    ("seed", "words"),
    [
        (_Widen(), "output shape (2, 8, 32, 32) != input shape (2, 4, 32, 32)"),
        (_Inf(), "non-finite"),
        (_InPlace(), "in place"),
    ],
)
def test_g0_refuses_bad_seeds(seed: nn.Module, words: str) -> None:
    model = _model()
    result = model.germinate("slot0", seed, "bad", 1)
    assert not result.ok and result.gate == "G0"
    assert words in result.reason
    assert model.slots["slot0"].stage is SeedStage.DORMANT
    assert model.slots["slot0"].seed is None


def test_g0_passes_a_shape_keeping_finite_seed(make_seed) -> None:
    model = _model()
    result = model.germinate("slot1", make_seed(8), "conv", 2)
    assert result.ok and result.gate == "G0" and result.to_stage is SeedStage.GERMINATED
    report = model.slots["slot1"].report()
    assert report.blueprint == "conv" and report.params > 0 and report.alpha == 0.0


def test_germinate_rejects_bad_arguments(make_seed) -> None:
    model = _model()
    with pytest.raises(ValueError, match="blend_epochs"):
        model.germinate("slot0", make_seed(4), "conv", 0)
    with pytest.raises(KeyError, match="no slot named 'slot9'"):
        model.germinate("slot9", make_seed(4), "conv", 1)


# --- G1 ---------------------------------------------------------------------------------


def test_g1_refuses_non_finite_seed_parameters(drive_to) -> None:
    model = _model()
    drive_to(model, "slot0", SeedStage.GERMINATED)
    seed = model.slots["slot0"].seed
    assert seed is not None
    with torch.no_grad():
        next(seed.parameters())[0].fill_(math.nan)
    result = model.advance("slot0")
    assert not result.ok and result.gate == "G1" and "non-finite" in result.reason
    with torch.no_grad():
        next(seed.parameters())[0].fill_(0.0)
    assert model.advance("slot0").ok


# --- G2 ---------------------------------------------------------------------------------


def test_g2_needs_min_training_epochs_and_a_fresh_improvement(drive_to) -> None:
    model = _model(min_training_epochs=2, min_improvement=0.05)
    slot = model.slots["slot0"]
    drive_to(model, "slot0", SeedStage.GERMINATED)
    slot.record_measurement(0.0, -1.0, 1.0)  # measured before TRAINING: stale for G2
    assert model.advance("slot0").ok
    model.end_epoch()
    model.end_epoch()
    refused = model.advance("slot0")
    assert not refused.ok and "not measured in TRAINING" in refused.reason
    slot.record_measurement(0.0, -0.01, 1.0)
    refused = model.advance("slot0")
    assert not refused.ok and refused.reason == (
        "val loss change at alpha=1 -0.0100 + 2 x se 0.0000 = -0.0100 >= -min_improvement -0.0500"
    )
    # The bound must lie strictly below -min_improvement: equality is refused.
    slot.record_measurement(0.0, -0.05, 1.0)
    refused = model.advance("slot0")
    assert not refused.ok and "= -0.0500 >= -min_improvement -0.0500" in refused.reason
    slot.record_measurement(0.0, -0.06, 1.0)
    result = model.advance("slot0")
    assert result.ok and result.gate == "G2" and result.to_stage is SeedStage.BLENDING
    assert "= -0.0600 < -min_improvement -0.0500" in result.reason


@pytest.mark.parametrize(
    ("significance", "improvement_se", "ok", "words"),
    [
        (2.0, 0.04, True, "-0.1000 + 2 x se 0.0400 = -0.0200 < -min_improvement -0.0100"),
        (2.0, 0.05, False, "-0.1000 + 2 x se 0.0500 = +0.0000 >= -min_improvement -0.0100"),
        (0.0, 0.05, True, "-0.1000 + 0 x se 0.0500 = -0.1000 < -min_improvement -0.0100"),
        (1.0, 0.05, True, "-0.1000 + 1 x se 0.0500 = -0.0500 < -min_improvement -0.0100"),
    ],
)
def test_g2_widens_the_improvement_by_significance_standard_errors(
    significance: float, improvement_se: float, ok: bool, words: str, drive_to
) -> None:
    model = _model(min_improvement=0.01, significance=significance)
    slot = model.slots["slot0"]
    drive_to(model, "slot0", SeedStage.TRAINING)
    slot.record_measurement(0.0, -0.1, 1.0, improvement_se=improvement_se)
    result = model.advance("slot0")
    assert result.ok is ok and result.gate == "G2"
    assert words in result.reason
    assert slot.stage is (SeedStage.BLENDING if ok else SeedStage.TRAINING)


def test_g2_accepts_a_negative_min_improvement(drive_to) -> None:
    # A negative threshold lets a seed that (slightly) hurts at alpha 1 still blend.
    model = _model(min_improvement=-0.5, significance=0.0)
    slot = model.slots["slot0"]
    drive_to(model, "slot0", SeedStage.TRAINING)
    slot.record_measurement(0.0, 0.6, 1.0)
    refused = model.advance("slot0")
    assert not refused.ok and "= +0.6000 >= -min_improvement +0.5000" in refused.reason
    slot.record_measurement(0.0, 0.2, 1.0)
    assert model.advance("slot0").ok


def test_g2_counts_epochs_in_training(drive_to) -> None:
    model = _model(min_training_epochs=2)
    slot = model.slots["slot0"]
    drive_to(model, "slot0", SeedStage.TRAINING)
    slot.record_measurement(0.0, -1.0, 1.0)
    model.end_epoch()
    refused = model.advance("slot0")
    assert not refused.ok and refused.gate == "G2"
    assert "trained 1 epoch(s) < min_training_epochs 2" in refused.reason
    model.end_epoch()
    assert model.advance("slot0").ok


# --- G3 ---------------------------------------------------------------------------------


def test_g3_waits_for_alpha_one(drive_to, make_seed) -> None:
    model = _model()
    slot = model.slots["slot0"]
    assert model.germinate("slot0", make_seed(4), "conv", 2).ok
    assert model.advance("slot0").ok
    slot.record_measurement(0.0, -1.0, 1.0)
    assert model.advance("slot0").ok
    model.step_blend()
    refused = model.advance("slot0")
    assert not refused.ok and refused.gate == "G3" and "0.5000 has not reached 1" in refused.reason
    model.step_blend()
    assert slot.alpha == 1.0
    assert model.advance("slot0").ok


# --- G4 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["advance", "fossilize"])
def test_g4_needs_holding_epochs_and_positive_contribution(op: str, drive_to) -> None:
    model = _model(holding_epochs=1, min_contribution=0.01)
    slot = model.slots["slot0"]
    drive_to(model, "slot0", SeedStage.HOLDING)
    slot.record_measurement(0.5, -1.0, 1.0)
    refused = getattr(model, op)("slot0")
    assert not refused.ok and refused.gate == "G4" and "held 0 epoch(s)" in refused.reason
    model.end_epoch()
    slot.record_measurement(0.01, -1.0, 1.0)
    refused = getattr(model, op)("slot0")
    assert not refused.ok and refused.reason == (
        "contribution +0.0100 - 2 x se 0.0000 = +0.0100 <= min_contribution +0.0100"
    )
    slot.record_measurement(0.02, -1.0, 1.0)
    result = getattr(model, op)("slot0")
    assert result.ok and result.to_stage is SeedStage.FOSSILIZED
    assert result.reason == (
        "contribution +0.0200 - 2 x se 0.0000 = +0.0200 > min_contribution +0.0100"
    )


@pytest.mark.parametrize(
    ("significance", "contribution_se", "ok", "words"),
    [
        (2.0, 0.04, True, "+0.1000 - 2 x se 0.0400 = +0.0200 > min_contribution +0.0000"),
        (2.0, 0.05, False, "+0.1000 - 2 x se 0.0500 = +0.0000 <= min_contribution +0.0000"),
        (0.0, 0.05, True, "+0.1000 - 0 x se 0.0500 = +0.1000 > min_contribution +0.0000"),
    ],
)
def test_g4_narrows_the_contribution_by_significance_standard_errors(
    significance: float, contribution_se: float, ok: bool, words: str, drive_to
) -> None:
    model = _model(min_contribution=0.0, fossilize_significance=significance)
    slot = model.slots["slot0"]
    drive_to(model, "slot0", SeedStage.HOLDING)
    slot.record_measurement(0.1, -1.0, 1.0, contribution_se=contribution_se)
    result = model.fossilize("slot0")
    assert result.ok is ok and result.gate == "G4"
    assert words in result.reason
    assert slot.stage is (SeedStage.FOSSILIZED if ok else SeedStage.HOLDING)


def test_g4_accepts_a_negative_min_contribution(drive_to) -> None:
    model = _model(min_contribution=-0.05, fossilize_significance=0.0)
    slot = model.slots["slot0"]
    drive_to(model, "slot0", SeedStage.HOLDING)
    slot.record_measurement(-0.06, -1.0, 1.0)
    assert not model.fossilize("slot0").ok
    slot.record_measurement(-0.01, -1.0, 1.0)
    result = model.fossilize("slot0")
    assert result.ok and "-0.0100 - 0 x se 0.0000 = -0.0100 > min_contribution -0.0500" in (
        result.reason
    )


def test_g4_refuses_a_contribution_measured_before_holding(drive_to) -> None:
    model = _model()
    drive_to(model, "slot0", SeedStage.BLENDING)
    model.slots["slot0"].record_measurement(0.5, -1.0, 1.0)
    while model.slots["slot0"].alpha < 1.0:
        model.step_blend()
    assert model.advance("slot0").ok
    refused = model.fossilize("slot0")
    assert not refused.ok and "not measured in HOLDING" in refused.reason


# --- G5 ---------------------------------------------------------------------------------


def test_g5_removes_only_a_seed_that_no_longer_contributes(drive_to) -> None:
    model = _model(min_contribution=0.0)
    slot = model.slots["slot1"]
    drive_to(model, "slot1", SeedStage.FOSSILIZED)
    fossil_params = model.host_param_count()
    refused = model.remove("slot1")
    assert not refused.ok and "not measured since fossilization" in refused.reason
    slot.record_measurement(0.03, -1.0, 1.0)
    refused = model.remove("slot1")
    assert not refused.ok and refused.gate == "G5"
    assert refused.reason == (
        "contribution +0.0300 - 2 x se 0.0000 = +0.0300 > min_contribution +0.0000"
    )
    slot.record_measurement(0.0, 0.0, 1.0)
    result = model.remove("slot1")
    assert result.ok and result.to_stage is SeedStage.PRUNED and result.gate == "G5"
    assert model.host_param_count() < fossil_params == model.base_param_count() + 8 * 8 * 9 + 8 + 16


# --- embargo ----------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [0, 1, 3])
def test_embargo_blocks_germination_for_exactly_n_epochs(epochs: int, make_seed) -> None:
    model = _model(embargo_epochs=epochs)
    assert model.germinate("slot0", make_seed(4), "conv", 1).ok
    assert model.prune("slot0").ok
    results = model.end_epoch()  # the epoch in which the prune happened
    assert results[0].to_stage is SeedStage.EMBARGOED
    blocked = 0
    while not model.germinate("slot0", make_seed(4), "conv", 1).ok:
        assert model.slots["slot0"].stage is SeedStage.EMBARGOED
        blocked += 1
        results = model.end_epoch()
        assert blocked <= epochs
    assert blocked == epochs
    stages = [r.to_stage for r in results]
    assert stages[-2:] == [SeedStage.RESETTING, SeedStage.DORMANT]


def test_embargo_refusal_says_how_long(make_seed) -> None:
    model = _model(embargo_epochs=3)
    assert model.germinate("slot0", make_seed(4), "conv", 1).ok
    model.prune("slot0")
    model.end_epoch()
    refused = model.germinate("slot0", make_seed(4), "conv", 1)
    assert not refused.ok and "3 epoch(s) of embargo left" in refused.reason


def test_reset_wipes_the_slot(make_seed) -> None:
    model = _model(embargo_epochs=0)
    slot = model.slots["slot0"]
    assert model.germinate("slot0", make_seed(4), "conv", 1).ok
    slot.record_measurement(0.2, -1.0, 1.0)
    model.end_epoch()
    model.prune("slot0")
    model.end_epoch()
    report = slot.report()
    assert report.stage is SeedStage.DORMANT and report.blueprint is None
    assert (report.age, report.params, report.contribution) == (0, 0, 0.0)


# --- counters and masks -----------------------------------------------------------------


def test_age_and_epochs_in_stage(drive_to) -> None:
    model = _model()
    drive_to(model, "slot0", SeedStage.TRAINING)
    model.end_epoch()
    model.end_epoch()
    report = model.reports()[0]
    assert (report.age, report.epochs_in_stage) == (2, 2)
    model.slots["slot0"].record_measurement(0.0, -1.0, 1.0)
    assert model.advance("slot0").ok
    report = model.reports()[0]
    assert (report.age, report.epochs_in_stage) == (2, 0)
    assert model.reports()[1].age == 0


def test_seed_loss_trend_is_the_change_since_the_last_measurement(drive_to) -> None:
    model = _model()
    drive_to(model, "slot0", SeedStage.TRAINING)
    slot = model.slots["slot0"]
    slot.record_measurement(0.0, -0.1, 2.0)
    assert slot.report().seed_loss_trend == 0.0
    slot.record_measurement(0.0, -0.1, 1.5)
    assert slot.report().seed_loss_trend == -0.5


@pytest.mark.parametrize(
    ("stage", "ops"),
    [
        (SeedStage.DORMANT, {Op.WAIT, Op.GERMINATE}),
        (SeedStage.GERMINATED, {Op.WAIT, Op.ADVANCE, Op.PRUNE}),
        (SeedStage.TRAINING, {Op.WAIT, Op.ADVANCE, Op.PRUNE}),
        (SeedStage.BLENDING, {Op.WAIT, Op.ADVANCE, Op.PRUNE}),
        (SeedStage.HOLDING, {Op.WAIT, Op.ADVANCE, Op.PRUNE, Op.FOSSILIZE}),
        (SeedStage.FOSSILIZED, {Op.WAIT}),
        (SeedStage.PRUNED, {Op.WAIT}),
        (SeedStage.EMBARGOED, {Op.WAIT}),
    ],
)
def test_allowed_ops_follow_the_stage(stage: SeedStage, ops: set[Op], drive_to) -> None:
    model = _model()
    drive_to(model, "slot0", stage)
    assert model.allowed_ops("slot0") == frozenset(ops)


# --- alpha ramps ------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", list(BlendSchedule))
def test_ramps_run_from_zero_to_one_monotonically(schedule: BlendSchedule) -> None:
    values = [blend_alpha(schedule, i / 20) for i in range(21)]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(values))


def test_ramp_shapes_differ() -> None:
    at = {s: blend_alpha(s, 0.25) for s in BlendSchedule}
    assert at[BlendSchedule.SIGMOID] < at[BlendSchedule.COSINE] < at[BlendSchedule.LINEAR] == 0.25


@pytest.mark.parametrize("blend_epochs", [1, 2, 4])
def test_blend_speed_sets_the_number_of_steps_to_alpha_one(blend_epochs: int, make_seed) -> None:
    model = _model(blend_schedule=BlendSchedule.COSINE)
    model.set_steps_per_epoch(3)
    slot = model.slots["slot0"]
    assert model.germinate("slot0", make_seed(4), "conv", blend_epochs).ok
    assert model.advance("slot0").ok
    slot.record_measurement(0.0, -1.0, 1.0)
    assert model.advance("slot0").ok
    steps = 0
    while slot.alpha < 1.0:
        model.step_blend()
        steps += 1
    assert steps == 3 * blend_epochs


@pytest.mark.parametrize(("contribution_se", "removed"), [(0.01, False), (0.05, True)])
def test_g5_removes_a_fossil_whose_contribution_is_within_its_noise(
    contribution_se: float, removed: bool, drive_to
) -> None:
    # G5 passes exactly when G4's test fails: a contribution within 2 standard errors of
    # min_contribution no longer earns its parameters.
    model = _model(min_contribution=0.0)
    slot = model.slots["slot1"]
    drive_to(model, "slot1", SeedStage.FOSSILIZED)
    slot.record_measurement(0.1, -1.0, 1.0, contribution_se=contribution_se)
    result = model.remove("slot1")
    assert result.ok is removed and result.gate == "G5"
    assert slot.stage is (SeedStage.PRUNED if removed else SeedStage.FOSSILIZED)
    assert ("<= min_contribution" if removed else "> min_contribution") in result.reason


def test_record_measurement_stores_the_standard_errors(drive_to) -> None:
    model = _model()
    slot = model.slots["slot0"]
    drive_to(model, "slot0", SeedStage.TRAINING)
    unmeasured = slot.report()
    assert (unmeasured.improvement, unmeasured.improvement_se) == (0.0, 0.0)
    assert slot.improvement is None
    slot.record_measurement(0.25, -0.5, 1.5, contribution_se=0.125, improvement_se=0.0625)
    report = slot.report()
    assert (report.contribution, report.contribution_se) == (0.25, 0.125)
    assert (report.improvement, report.improvement_se) == (-0.5, 0.0625)
    state = slot.lifecycle_state()
    assert (state["contribution_se"], state["improvement_se"]) == (0.125, 0.0625)
    other = _model().slots["slot0"]
    other.load_lifecycle_state(state)
    assert other.lifecycle_state() == state


# --- graft (static baselines) -----------------------------------------------------------


def test_graft_installs_a_seed_fossilized_at_alpha_one_through_g0(make_seed) -> None:
    model = _model()
    seed = make_seed(8)
    result = model.graft("slot1", seed, "conv")
    assert result.ok and result.gate == "G0" and result.op == "graft"
    assert (result.from_stage, result.to_stage) == (SeedStage.DORMANT, SeedStage.FOSSILIZED)
    slot = model.slots["slot1"]
    assert slot.stage is SeedStage.FOSSILIZED and slot.alpha == 1.0 and slot.seed is seed
    assert slot.blueprint == "conv" and slot.seed_uid == 1
    assert model.host_param_count() == model.base_param_count() + slot.seed_params()
    assert model.seed_param_count() == 0 and model.live_seed_parameters() == []
    assert {id(p) for p in seed.parameters()} <= {id(p) for p in model.host_parameters()}
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with model.force_alpha({"slot1": 0.0}):
            bare = model(x)
        grafted = model(x)
        with model.force_alpha({"slot1": 1.0}):
            assert torch.equal(model(x), grafted)
    assert not torch.equal(grafted, bare)
    assert model.allowed_ops("slot1") == frozenset({Op.WAIT})


def test_graft_is_refused_outside_dormant_and_for_bad_seeds(drive_to, make_seed) -> None:
    model = _model()
    drive_to(model, "slot0", SeedStage.TRAINING)
    refused = model.graft("slot0", make_seed(4), "conv")
    assert not refused.ok and refused.gate == "lifecycle" and "graft is illegal" in refused.reason
    assert model.slots["slot0"].stage is SeedStage.TRAINING
    bad = model.graft("slot1", _Widen(), "wide")
    assert not bad.ok and bad.gate == "G0" and "output shape" in bad.reason
    assert model.slots["slot1"].stage is SeedStage.DORMANT and model.slots["slot1"].seed is None
    with pytest.raises(TypeError, match=r"nn\.Module"):
        model.graft("slot1", "conv", "conv")  # type: ignore[arg-type]
