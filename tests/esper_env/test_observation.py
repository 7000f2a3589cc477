import numpy as np
import pytest

from esper_env.contracts import SeedStage, SlotReport
from esper_env.observation import (
    GLOBAL_FEATURES,
    OBS_VERSION,
    SLOT_FEATURES,
    GlobalSignals,
    ObservationLayout,
)

LAYOUT = ObservationLayout(slots=("s0", "s1"), blueprints=("a", "b", "c"), episode_epochs=10)


def _report(name, stage, blueprint=None, **kw):
    values = dict(
        alpha=0.0,
        age=0,
        epochs_in_stage=0,
        params=0,
        contribution=0.0,
        contribution_se=0.0,
        improvement=0.0,
        improvement_se=0.0,
        seed_loss_trend=0.0,
    )
    values.update(kw)
    return SlotReport(name=name, stage=stage, blueprint=blueprint, **values)


SIGNALS = GlobalSignals(
    epoch=4,
    train_loss=1.5,
    train_accuracy=0.4,
    val_loss=1.6,
    val_accuracy=0.38,
    delta_val_loss=-0.1,
    delta_val_accuracy=0.02,
    plateau=2,
    best_val_accuracy=0.39,
    added_param_fraction=0.1,
    param_budget_left=0.9,
)


def test_names_cover_every_index_and_are_unique():
    names = LAYOUT.names()
    assert len(names) == LAYOUT.size == len(GLOBAL_FEATURES) + 2 * (len(SLOT_FEATURES) + 3)
    assert len(set(names)) == len(names)
    assert names[LAYOUT.slot_offset(1)] == "s1.stage_dormant"


def test_encode_places_each_value_where_names_say():
    reports = [
        _report(
            "s0",
            SeedStage.BLENDING,
            "b",
            alpha=0.5,
            age=3,
            epochs_in_stage=2,
            params=100,
            contribution=0.02,
            contribution_se=0.005,
            improvement=-0.25,
            improvement_se=0.0625,
            seed_loss_trend=-0.125,
        ),
        _report("s1", SeedStage.DORMANT),
    ]
    obs = LAYOUT.encode(SIGNALS, reports, base_params=1000)
    named = dict(zip(LAYOUT.names(), obs.tolist(), strict=True))
    assert obs.dtype == np.float32
    assert named["progress"] == pytest.approx(0.4)
    assert named["plateau"] == pytest.approx(0.2)
    assert named["s0.stage_blending"] == 1.0 and named["s0.stage_dormant"] == 0.0
    assert named["s0.alpha"] == 0.5
    assert named["s0.age"] == pytest.approx(0.3)
    assert named["s0.param_fraction"] == pytest.approx(0.1)
    assert named["s0.blueprint.b"] == 1.0 and named["s0.blueprint.a"] == 0.0
    assert named["s1.stage_dormant"] == 1.0
    assert LAYOUT.slot_stages(obs) == [SeedStage.BLENDING, SeedStage.DORMANT]
    assert LAYOUT.slot_feature(obs, 0, "contribution") == pytest.approx(0.02)
    assert named["s0.epochs_in_stage"] == pytest.approx(0.2)
    assert named["s0.contribution_se"] == pytest.approx(0.005)
    assert named["s0.improvement"] == -0.25
    assert named["s0.improvement_se"] == 0.0625
    assert named["s0.seed_loss_trend"] == -0.125
    assert LAYOUT.slot_feature(obs, 0, "improvement") == -0.25
    for feature in ("contribution", "contribution_se", "improvement", "improvement_se"):
        assert named[f"s1.{feature}"] == 0.0


def test_reports_in_the_wrong_order_are_rejected():
    reports = [_report("s1", SeedStage.DORMANT), _report("s0", SeedStage.DORMANT)]
    with pytest.raises(ValueError, match="expected"):
        LAYOUT.encode(SIGNALS, reports, base_params=1000)


#: The layout of each observation version; a change of names or order must bump OBS_VERSION.
EXPECTED_LAYOUT = {
    2: (
        "progress",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "delta_val_loss",
        "delta_val_accuracy",
        "plateau",
        "best_val_accuracy",
        "added_param_fraction",
        "param_budget_left",
        "stage_dormant",
        "stage_germinated",
        "stage_training",
        "stage_blending",
        "stage_holding",
        "stage_fossilized",
        "stage_pruned",
        "stage_embargoed",
        "stage_resetting",
        "alpha",
        "age",
        "epochs_in_stage",
        "param_fraction",
        "contribution",
        "contribution_se",
        "improvement",
        "improvement_se",
        "seed_loss_trend",
    ),
}


def test_layout_names_are_tied_to_obs_version():
    assert EXPECTED_LAYOUT[OBS_VERSION] == GLOBAL_FEATURES + SLOT_FEATURES
