"""The scripted single-agent policies, on hand-built observations."""

from __future__ import annotations

import numpy as np
import pytest

from agents.policies import FixedSchedule, HeuristicTamiyo
from esper_env.contracts import LifecycleConfig, Op, SeedStage, SlotReport
from esper_env.kasmina.lifecycle import ALLOWED_OPS
from esper_env.observation import GlobalSignals, ObservationLayout

SLOTS = ("slot0", "slot1", "slot2")
EPOCHS = 10
LAYOUT = ObservationLayout(slots=SLOTS, blueprints=("a", "b"), episode_epochs=EPOCHS)
SIGNALS = GlobalSignals(
    epoch=3,
    train_loss=1.5,
    train_accuracy=0.4,
    val_loss=1.6,
    val_accuracy=0.38,
    delta_val_loss=-0.1,
    delta_val_accuracy=0.02,
    plateau=0,
    best_val_accuracy=0.39,
    added_param_fraction=0.1,
    param_budget_left=0.9,
)


def _report(name: str, stage: SeedStage, **kw: float) -> SlotReport:
    values: dict[str, float] = dict(
        alpha=0.0,
        age=0,
        epochs_in_stage=0,
        params=0 if stage is SeedStage.DORMANT else 10,
        contribution=0.0,
        contribution_se=0.0,
        improvement=0.0,
        improvement_se=0.0,
        seed_loss_trend=0.0,
    )
    values.update(kw)
    blueprint = None if stage is SeedStage.DORMANT else "a"
    return SlotReport(name=name, stage=stage, blueprint=blueprint, **values)


def _step(
    stages: list[SeedStage], epoch: int = 3, **features: dict[str, float]
) -> tuple[np.ndarray, dict]:
    """An observation and info for slots in `stages`; `features` by slot name."""
    reports = [
        _report(name, stage, **features.get(name, {}))
        for name, stage in zip(SLOTS, stages, strict=True)
    ]
    mask = np.zeros((len(Op), len(SLOTS)), dtype=bool)
    for index, stage in enumerate(stages):
        for op in ALLOWED_OPS[stage]:
            mask[op, index] = True
    obs = LAYOUT.encode(SIGNALS, reports, base_params=1000)
    return obs, {"epoch": epoch, "op_slot_mask": mask}


D, G, T, B, H, F = (
    SeedStage.DORMANT,
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
)


def _op(action: np.ndarray) -> tuple[Op, int]:
    return Op(int(action[0])), int(action[1])


# --- FixedSchedule ----------------------------------------------------------------------


def test_fixed_schedule_germinates_into_the_deepest_dormant_slot_on_its_timetable() -> None:
    policy = FixedSchedule(LAYOUT, germinate_epochs=(1, 2, 3), blueprint=1, speed=2)
    action = policy.act(*_step([D, D, D], epoch=1))
    assert action.tolist() == [int(Op.GERMINATE), 2, 1, 2]
    assert _op(policy.act(*_step([D, D, T], epoch=2))) == (Op.GERMINATE, 1)
    assert _op(policy.act(*_step([D, F, T], epoch=3))) == (Op.GERMINATE, 0)
    assert _op(policy.act(*_step([D, D, D], epoch=4))) == (Op.WAIT, 0)


def test_fixed_schedule_round_robins_over_live_seeds() -> None:
    policy = FixedSchedule(LAYOUT, germinate_epochs=())
    stages = [T, F, H]
    picks = [_op(policy.act(*_step(stages))) for _ in range(4)]
    # Slot 1 is fossilized (not live); slot 2 is HOLDING, so it is fossilized, not advanced.
    assert picks == [(Op.ADVANCE, 0), (Op.FOSSILIZE, 2), (Op.ADVANCE, 0), (Op.FOSSILIZE, 2)]
    policy.reset()
    assert _op(policy.act(*_step(stages))) == (Op.ADVANCE, 0)
    assert _op(policy.act(*_step([F, F, F]))) == (Op.WAIT, 0)


# --- HeuristicTamiyo --------------------------------------------------------------------


def test_heuristic_germinates_deepest_first_and_only_without_a_germinated_seed() -> None:
    policy = HeuristicTamiyo(
        LAYOUT, lifecycle=LifecycleConfig(significance=2.0), first_epoch=1, blueprint=1
    )
    assert _op(policy.act(*_step([D, D, D], epoch=0))) == (Op.WAIT, 0)
    assert policy.act(*_step([D, D, D], epoch=1)).tolist()[:3] == [int(Op.GERMINATE), 2, 1]
    # A TRAINING seed that does not yet pass G2 does not block germination elsewhere ...
    assert _op(policy.act(*_step([D, D, T], epoch=2))) == (Op.GERMINATE, 1)
    # ... a GERMINATED one does (it is advanced first).
    assert _op(policy.act(*_step([D, G, T], epoch=2))) == (Op.ADVANCE, 1)


@pytest.mark.parametrize(
    ("improvement", "se", "advances"),
    [(-0.1, 0.04, True), (-0.1, 0.05, False), (0.1, 0.0, False)],
)
def test_heuristic_advances_a_training_seed_when_g2_rule_holds(
    improvement: float, se: float, advances: bool
) -> None:
    policy = HeuristicTamiyo(LAYOUT, lifecycle=LifecycleConfig(significance=2.0))
    features = {"slot2": {"improvement": improvement, "improvement_se": se}}
    action = _op(policy.act(*_step([F, F, T], **features)))
    assert action == ((Op.ADVANCE, 2) if advances else (Op.WAIT, 0))


def test_heuristic_reads_significance() -> None:
    features = {"slot2": {"improvement": -0.1, "improvement_se": 0.05}}
    assert _op(
        HeuristicTamiyo(LAYOUT, lifecycle=LifecycleConfig(significance=1.0)).act(
            *_step([F, F, T], **features)
        )
    ) == (
        Op.ADVANCE,
        2,
    )


@pytest.mark.parametrize(
    ("contribution", "se", "fossilizes"),
    [(0.1, 0.04, True), (0.1, 0.05, False), (0.0, 0.0, False)],
)
def test_heuristic_fossilizes_a_holding_seed_when_g4_rule_holds(
    contribution: float, se: float, fossilizes: bool
) -> None:
    policy = HeuristicTamiyo(LAYOUT, lifecycle=LifecycleConfig(fossilize_significance=2.0))
    features = {"slot1": {"contribution": contribution, "contribution_se": se, "alpha": 1.0}}
    action = _op(policy.act(*_step([F, H, F], **features)))
    assert action == ((Op.FOSSILIZE, 1) if fossilizes else (Op.WAIT, 0))


def test_heuristic_prunes_after_patience_failing_measurements() -> None:
    policy = HeuristicTamiyo(LAYOUT, lifecycle=LifecycleConfig(significance=2.0), patience=3)
    failing = {"slot0": {"epochs_in_stage": 2, "improvement": 0.2, "improvement_se": 0.01}}
    step = _step([T, F, F], **failing)
    assert [_op(policy.act(*step)) for _ in range(3)] == [
        (Op.WAIT, 0),
        (Op.WAIT, 0),
        (Op.PRUNE, 0),
    ]
    # A passing measurement resets the count.
    policy.reset()
    policy.act(*step)
    policy.act(*step)
    passing = {"slot0": {"epochs_in_stage": 3, "improvement": -0.2, "improvement_se": 0.01}}
    assert _op(policy.act(*_step([T, F, F], **passing))) == (Op.ADVANCE, 0)
    assert _op(policy.act(*step)) == (Op.WAIT, 0)


def test_heuristic_does_not_count_an_unmeasured_training_seed_as_failing() -> None:
    policy = HeuristicTamiyo(LAYOUT, lifecycle=LifecycleConfig(significance=2.0), patience=1)
    fresh = {"slot0": {"epochs_in_stage": 0, "improvement": 0.0}}
    assert _op(policy.act(*_step([T, F, F], **fresh))) == (Op.WAIT, 0)


def test_heuristic_prunes_a_blending_seed_whose_contribution_is_significantly_negative() -> None:
    policy = HeuristicTamiyo(LAYOUT, lifecycle=LifecycleConfig(significance=2.0), patience=1)
    noisy = {"slot1": {"contribution": -0.05, "contribution_se": 0.03, "alpha": 0.5}}
    assert _op(policy.act(*_step([F, B, F], **noisy))) == (Op.WAIT, 0)
    harmful = {"slot1": {"contribution": -0.05, "contribution_se": 0.02, "alpha": 0.5}}
    assert _op(policy.act(*_step([F, B, F], **harmful))) == (Op.PRUNE, 1)


def test_make_policy_gives_the_heuristic_the_env_lifecycle(tiny_env_kwargs) -> None:
    import gymnasium as gym

    import esper_env  # noqa: F401  (registers the ids)
    from agents.policies import make_policy

    lifecycle = {**tiny_env_kwargs["lifecycle"], "significance": 0.5}
    env = gym.make("Esper-CIFAR-Mini-v0", **{**tiny_env_kwargs, "lifecycle": lifecycle})
    try:
        policy = make_policy("heuristic", env)
        assert isinstance(policy, HeuristicTamiyo)
        assert policy.lifecycle == env.get_wrapper_attr("config").lifecycle
        assert policy.lifecycle.significance == 0.5
    finally:
        env.close()


@pytest.mark.parametrize("make", [FixedSchedule, HeuristicTamiyo])
def test_a_slot_the_budget_refused_is_skipped_for_the_episode(make) -> None:
    policy = make(LAYOUT)
    policy.reset(0)
    dormant = [SeedStage.DORMANT] * 3
    obs, info = _step(dormant, epoch=0)
    assert policy.act(obs, info).tolist()[:2] == [Op.GERMINATE, 2]
    obs, info = _step(dormant, epoch=1)
    info["transition"] = {"op": "germinate", "slot": "slot2", "gate": "budget", "ok": False}
    assert policy.act(obs, info).tolist()[:2] == [Op.GERMINATE, 1]
    policy.reset(1)  # a new episode forgets it
    obs, info = _step(dormant, epoch=0)
    assert policy.act(obs, info).tolist()[:2] == [Op.GERMINATE, 2]
