"""Tolaria: optimizer groups, schedule, counterfactuals, governor, determinism, checkpoints."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from esper_env.contracts import HostConfig, LifecycleConfig, SeedStage, TrainConfig
from esper_env.data import DeviceBatches
from esper_env.kasmina import MorphogeneticModel, build_host
from esper_env.tolaria import Trainer

TINY = HostConfig(widths=(4, 8, 8))
LIFECYCLE = LifecycleConfig(
    min_training_epochs=1,
    min_improvement=-10.0,
    holding_epochs=0,
    min_contribution=-1.0,
    embargo_epochs=0,
)
CONFIG = TrainConfig(
    batch_size=32, eval_batch_size=64, lr=0.05, seed_lr=0.05, epochs=6, device="cpu"
)


def _split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable synthetic images: the class sets which of ten bands is bright."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=gen)
    images = torch.randint(0, 120, (n, 32, 32, 3), generator=gen, dtype=torch.uint8)
    rows = torch.arange(32).view(1, 32) // 3  # ten bands of three rows (and two spare rows)
    band = (rows == labels.view(n, 1)).view(n, 32, 1, 1)
    return images + band.to(torch.uint8) * 120, labels


def _data(train_n: int = 128, val_n: int = 64) -> tuple[DeviceBatches, DeviceBatches]:
    x, y = _split(train_n, 0)
    vx, vy = _split(val_n, 1)
    train = DeviceBatches(x, y, batch_size=32, augment=True, shuffle=True)
    return train, DeviceBatches(vx, vy, batch_size=64)


def _seed(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()
    )


def _factory(blueprint: str, channels: int) -> nn.Module:
    assert blueprint == "conv"
    return _seed(channels)


def _setup(
    init_seed: int = 0, config: TrainConfig = CONFIG, trainer_seed: int = 0
) -> tuple[MorphogeneticModel, Trainer]:
    torch.manual_seed(init_seed)
    model = build_host(TINY, LIFECYCLE)
    train, val = _data()
    return model, Trainer(model, train, val, config, seed=trainer_seed)


def _ops(model: MorphogeneticModel, epoch: int) -> None:
    """A fixed script of lifecycle events, applied before training epoch `epoch`."""
    if epoch == 0:
        assert model.germinate("slot0", _seed(4), "conv", 1).ok
        assert model.advance("slot0").ok
        assert model.germinate("slot2", _seed(8), "conv", 2).ok
    elif epoch == 1:
        assert model.advance("slot0").ok  # TRAINING -> BLENDING
        assert model.prune("slot2").ok
        assert model.germinate("slot1", _seed(8), "conv", 1).ok
    elif epoch == 2:
        assert model.advance("slot0").ok  # BLENDING -> HOLDING
        assert model.advance("slot1").ok
    elif epoch == 3:
        assert model.fossilize("slot0").ok
    elif epoch == 4:
        assert model.germinate("slot2", _seed(8), "conv", 1).ok


def _run(model: MorphogeneticModel, trainer: Trainer, epochs: range) -> list:
    metrics = []
    for epoch in epochs:
        _ops(model, epoch)
        metrics.append(trainer.train_epoch())
        model.end_epoch()
    return metrics


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["model"].keys() == sb["model"].keys()
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    assert sa["lifecycle"] == sb["lifecycle"]
    oa, ob = sa["optimizer"], sb["optimizer"]
    assert oa["param_groups"] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for index, state in oa["state"].items():
        assert torch.equal(state["momentum_buffer"], ob["state"][index]["momentum_buffer"])
    assert torch.equal(sa["generator"], sb["generator"])
    assert sa["governor"] == sb["governor"]


# --- optimizer --------------------------------------------------------------------------


def test_seed_parameters_join_leave_and_move_groups() -> None:
    model, trainer = _setup()
    host, seeds = trainer.optimizer.param_groups
    host_ids = {id(p) for p in model.host.parameters()}
    assert {id(p) for p in host["params"]} == host_ids and seeds["params"] == []
    _ops(model, 0)
    trainer.train_epoch()
    model.end_epoch()
    live = {id(p) for p in model.live_seed_parameters()}
    assert {id(p) for p in seeds["params"]} == live and len(live) > 0
    doomed = list(model.slots["slot2"].seed.parameters())
    assert all(p in trainer.optimizer.state for p in doomed)
    _ops(model, 1)  # prunes slot2
    trainer.train_epoch()
    model.end_epoch()
    assert not any(p in trainer.optimizer.state for p in doomed)
    assert not {id(p) for p in doomed} & {id(p) for p in seeds["params"]}
    _ops(model, 2)
    trainer.train_epoch()
    model.end_epoch()
    _ops(model, 3)  # fossilizes slot0: its parameters join the host group, momentum kept
    fossil = list(model.slots["slot0"].seed.parameters())
    momenta = [trainer.optimizer.state[p]["momentum_buffer"].clone() for p in fossil]
    trainer.sync_param_groups()
    assert {id(p) for p in fossil} <= {id(p) for p in host["params"]}
    assert not {id(p) for p in fossil} & {id(p) for p in seeds["params"]}
    for p, m in zip(fossil, momenta, strict=True):
        assert torch.equal(trainer.optimizer.state[p]["momentum_buffer"], m)


def test_learning_rates_follow_the_cosine_schedule() -> None:
    config = CONFIG.model_copy(update={"lr": 0.1, "seed_lr": 0.02, "epochs": 4})
    _, trainer = _setup(config=config)
    for epoch in range(5):
        trainer.train_epoch()
        factor = 0.5 * (1 + math.cos(math.pi * min(epoch, 4) / 4))
        lrs = [group["lr"] for group in trainer.optimizer.param_groups]
        assert lrs == pytest.approx([0.1 * factor, 0.02 * factor], abs=1e-12)


def test_epoch_fraction_sets_batches_and_the_blend_clock() -> None:
    config = CONFIG.model_copy(update={"epoch_fraction": 0.3})
    model, trainer = _setup(config=config)
    assert trainer.batches_per_epoch == math.ceil(0.3 * 4) == 2
    assert model.germinate("slot1", _seed(8), "conv", 2).ok
    assert model.advance("slot1").ok
    model.slots["slot1"].record_measurement(0.0, -1.0, 1.0)
    model.end_epoch()
    assert model.advance("slot1").ok
    trainer.train_epoch()
    assert model.slots["slot1"].alpha == 0.5
    trainer.train_epoch()
    assert model.slots["slot1"].alpha == 1.0


# --- counterfactual ---------------------------------------------------------------------


def _three_seeds() -> tuple[MorphogeneticModel, Trainer]:
    model, trainer = _setup()
    _run(model, trainer, range(2))  # slot0 BLENDING, slot1 GERMINATED, slot2 pruned
    assert model.germinate("slot2", _seed(8), "conv", 1).ok
    assert model.advance("slot2").ok
    model.slots["slot0"].blend_step = trainer.batches_per_epoch // 2
    model.slots["slot0"].alpha = 0.5
    return model, trainer


def test_counterfactual_reusing_the_prefix_equals_full_forwards() -> None:
    _, trainer = _three_seeds()
    reused = trainer.counterfactual(trainer.val_batches)
    full = trainer.counterfactual(trainer.val_batches, reuse_prefix=False)
    assert list(reused) == ["slot0", "slot1", "slot2"]
    assert reused == full
    assert any(m.improvement != 0.0 for m in reused.values())


def test_contribution_is_accuracy_minus_accuracy_at_alpha_zero() -> None:
    model, trainer = _three_seeds()
    measured = trainer.counterfactual(trainer.val_batches)
    _, accuracy = trainer.evaluate(trainer.val_batches)
    with model.force_alpha({"slot0": 0.0}):
        loss0, accuracy0 = trainer.evaluate(trainer.val_batches)
    with model.force_alpha({"slot0": 1.0}):
        loss1, _ = trainer.evaluate(trainer.val_batches)
    assert measured["slot0"].contribution == accuracy - accuracy0
    assert measured["slot0"].improvement == loss1 - loss0
    assert measured["slot0"].seed_loss == loss1
    # Isolated seeds contribute nothing at their alpha of 0, by construction.
    assert measured["slot1"].contribution == measured["slot2"].contribution == 0.0
    assert model.slots["slot2"].measured_stage is SeedStage.TRAINING


def test_train_epoch_measures_every_seed() -> None:
    model, trainer = _setup()
    _ops(model, 0)
    trainer.train_epoch()
    for name in ("slot0", "slot2"):
        slot = model.slots[name]
        assert slot.measured_stage is slot.stage
        assert slot.improvement is not None and math.isfinite(slot.improvement)
    assert model.slots["slot1"].measured_stage is None


# --- governor ---------------------------------------------------------------------------


class _InfWhenTraining(nn.Module):
    """Finite on G0's eval-mode probe, infinite once it trains."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.weight * (math.inf if self.training else 0.0)


class _Amplifier(nn.Module):
    """Blows activations up by 1e4 in training mode (finite, so only a spike)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * self.weight * (1e4 if self.training else 1.0)


def test_nan_rolls_back_to_the_snapshot_prunes_the_seed_and_training_goes_on() -> None:
    model, trainer = _setup()
    trainer.train_epoch()
    model.end_epoch()
    assert model.germinate("slot1", _InfWhenTraining(), "inf", 1).ok
    assert model.advance("slot1").ok
    trainer.sync_param_groups()
    weights = {k: v.clone() for k, v in model.host.state_dict().items()}
    momenta = {p: s["momentum_buffer"].clone() for p, s in trainer.optimizer.state.items()}
    metrics = trainer.train_epoch()
    assert metrics.rolled_back and metrics.rollback_pruned == "slot1"
    assert "non-finite training loss" in (metrics.rollback_reason or "")
    assert math.isfinite(metrics.val_loss)
    for key, value in model.host.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert trainer.optimizer.state.keys() == momenta.keys()
    for p, m in momenta.items():
        assert torch.equal(trainer.optimizer.state[p]["momentum_buffer"], m)
    assert model.slots["slot1"].stage is SeedStage.PRUNED
    model.end_epoch()
    after = trainer.train_epoch()
    assert not after.rolled_back and math.isfinite(after.train_loss)
    assert not torch.equal(model.host.stem[0].weight, weights["stem.0.weight"])


def test_loss_spike_rolls_back_and_prunes_the_blending_seed() -> None:
    config = CONFIG.model_copy(update={"governor_warmup_batches": 4})
    model, trainer = _setup(config=config)
    trainer.train_epoch()
    model.end_epoch()
    assert model.germinate("slot0", _seed(4), "conv", 1).ok  # a quiet GERMINATED bystander
    assert model.germinate("slot2", _Amplifier(), "amp", 1).ok
    assert model.advance("slot2").ok
    model.slots["slot2"].record_measurement(0.0, -1.0, 1.0)
    model.end_epoch()
    assert model.advance("slot2").ok  # BLENDING: alpha grows after the first batch
    metrics = trainer.train_epoch()
    assert metrics.rolled_back and metrics.rollback_pruned == "slot2"
    assert "loss spike" in (metrics.rollback_reason or "")
    assert model.slots["slot0"].stage is SeedStage.GERMINATED


def test_no_rollback_in_a_healthy_run() -> None:
    model, trainer = _setup()
    assert not any(m.rolled_back for m in _run(model, trainer, range(3)))


# --- determinism and checkpoints --------------------------------------------------------


def test_same_seed_gives_bitwise_identical_runs_across_lifecycle_events() -> None:
    model_a, trainer_a = _setup()
    metrics_a = _run(model_a, trainer_a, range(4))
    model_b, trainer_b = _setup()
    metrics_b = _run(model_b, trainer_b, range(4))
    assert metrics_a == metrics_b
    _assert_same_state(trainer_a, trainer_b)
    model_c, trainer_c = _setup(trainer_seed=1)
    assert _run(model_c, trainer_c, range(4)) != metrics_a


def test_resume_from_checkpoint_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    model_a, trainer_a = _setup()
    metrics_a = _run(model_a, trainer_a, range(5))
    model_b, trainer_b = _setup()
    head = _run(model_b, trainer_b, range(2))
    trainer_b.save(tmp_path / "ckpt.pt")
    model_c, trainer_c = _setup(init_seed=123, trainer_seed=99)
    trainer_c.load(tmp_path / "ckpt.pt", seed_factory=_factory)
    assert [r.stage for r in model_c.reports()] == [r.stage for r in model_b.reports()]
    tail = _run(model_c, trainer_c, range(2, 5))
    assert head + tail == metrics_a
    _assert_same_state(trainer_a, trainer_c)


def test_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    model, trainer = _setup()
    _run(model, trainer, range(1))
    trainer.save(tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert state["lifecycle"]["slots"]["slot0"]["blueprint"] == "conv"


def test_checkpoint_from_other_data_is_refused(tmp_path: Path) -> None:
    _, trainer = _setup()
    trainer.save(tmp_path / "ckpt.pt")
    torch.manual_seed(0)
    other_model = build_host(TINY, LIFECYCLE)
    train, val = _data(train_n=64)
    other = Trainer(other_model, train, val, CONFIG, seed=0)
    with pytest.raises(ValueError, match="batches per epoch"):
        other.load(tmp_path / "ckpt.pt", seed_factory=_factory)


# --- real CIFAR-10 ----------------------------------------------------------------------


@pytest.mark.cifar
def test_cifar_subset_takes_a_seed_through_the_whole_lifecycle() -> None:
    if not os.environ.get("ESPER_DATA_DIR"):
        pytest.skip("set ESPER_DATA_DIR to a directory holding CIFAR-10 to run this test")
    from esper_env.data import cached_cifar10, stratified_subset

    data = cached_cifar10(os.environ["ESPER_DATA_DIR"])
    train_x, train_y = stratified_subset(data.train_images, data.train_labels, per_class=100)
    val_x, val_y = stratified_subset(data.test_images, data.test_labels, per_class=50)
    train = DeviceBatches(train_x, train_y, batch_size=64, augment=True, shuffle=True)
    val = DeviceBatches(val_x, val_y, batch_size=250)
    lifecycle = LifecycleConfig(min_training_epochs=1, min_improvement=-1.0, holding_epochs=1)
    torch.manual_seed(0)
    model = build_host(HostConfig(widths=(16, 32, 32)), lifecycle)
    config = TrainConfig(batch_size=64, lr=0.05, epochs=8, augment=True, device="cpu")
    trainer = Trainer(model, train, val, config, seed=0)
    stages = [model.slots["slot1"].stage]
    accuracies = []
    assert model.germinate("slot1", _seed(32), "conv", 1).ok
    for _ in range(8):
        if model.slots["slot1"].stage is not SeedStage.FOSSILIZED:
            model.advance("slot1")
        stages.append(model.slots["slot1"].stage)
        metrics = trainer.train_epoch()
        assert not metrics.rolled_back
        accuracies.append(metrics.val_accuracy)
        model.end_epoch()
    main_line = [
        SeedStage.DORMANT,
        SeedStage.TRAINING,
        SeedStage.BLENDING,
        SeedStage.HOLDING,
        SeedStage.FOSSILIZED,
    ]
    assert sorted(set(stages)) == main_line
    assert model.host_param_count() > model.base_param_count()
    assert max(accuracies) > 0.2  # well above chance after a few epochs on 1,000 images
