"""Tolaria: optimizer groups, schedule, counterfactuals, governor, determinism, checkpoints."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esper_env.contracts import HostConfig, LifecycleConfig, SeedStage, TrainConfig
from esper_env.data import DeviceBatches
from esper_env.kasmina import MorphogeneticModel, build_host
from esper_env.tolaria import SlotMeasurement, Trainer

TINY = HostConfig(widths=(4, 8, 8))
LIFECYCLE = LifecycleConfig(
    min_training_epochs=1,
    min_improvement=-10.0,
    holding_epochs=0,
    min_contribution=-1.0,
    embargo_epochs=0,
    significance=0.0,
    fossilize_significance=0.0,
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


def _groups(trainer: Trainer) -> dict[str | None, set[int]]:
    """Parameter ids per optimizer group, keyed by the group's slot (None: the host)."""
    return {g["slot"]: {id(p) for p in g["params"]} for g in trainer.optimizer.param_groups}


def _ids(module: nn.Module | None) -> set[int]:
    assert module is not None
    return {id(p) for p in module.parameters()}


def test_each_live_seed_has_its_own_group_and_leaves_or_moves_it() -> None:
    model, trainer = _setup()
    assert _groups(trainer) == {None: {id(p) for p in model.host.parameters()}}
    _ops(model, 0)
    trainer.train_epoch()
    model.end_epoch()
    assert [g["slot"] for g in trainer.optimizer.param_groups] == [None, "slot0", "slot2"]
    groups = _groups(trainer)
    assert groups["slot0"] == _ids(model.slots["slot0"].seed)
    assert groups["slot2"] == _ids(model.slots["slot2"].seed)
    assert groups[None] == {id(p) for p in model.host.parameters()}
    doomed = list(model.slots["slot2"].seed.parameters())
    assert all(p in trainer.optimizer.state for p in doomed)
    _ops(model, 1)  # prunes slot2, germinates slot1
    trainer.train_epoch()
    model.end_epoch()
    # Groups follow slot order; the pruned seed's group and momentum are gone.
    assert [g["slot"] for g in trainer.optimizer.param_groups] == [None, "slot0", "slot1"]
    assert not any(p in trainer.optimizer.state for p in doomed)
    assert not {id(p) for p in doomed} & set().union(*_groups(trainer).values())
    _ops(model, 2)
    trainer.train_epoch()
    model.end_epoch()
    _ops(model, 3)  # fossilizes slot0: its parameters join the host group, momentum kept
    fossil = list(model.slots["slot0"].seed.parameters())
    momenta = [trainer.optimizer.state[p]["momentum_buffer"].clone() for p in fossil]
    trainer.sync_param_groups()
    assert [g["slot"] for g in trainer.optimizer.param_groups] == [None, "slot1"]
    assert {id(p) for p in fossil} <= _groups(trainer)[None]
    assert not {id(p) for p in fossil} & _groups(trainer)["slot1"]
    for p, m in zip(fossil, momenta, strict=True):
        assert torch.equal(trainer.optimizer.state[p]["momentum_buffer"], m)


def _cosine(step: int, span: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step, span) / span))


def test_host_learning_rate_follows_the_cosine_schedule_over_the_episode() -> None:
    config = CONFIG.model_copy(update={"lr": 0.1, "seed_lr": 0.02, "epochs": 4})
    _, trainer = _setup(config=config)
    for epoch in range(5):
        trainer.train_epoch()
        lrs = [group["lr"] for group in trainer.optimizer.param_groups]
        assert lrs == pytest.approx([0.1 * _cosine(epoch, 4)], abs=1e-12)


@pytest.mark.parametrize("germinated_at", [0, 2])
def test_a_seed_starts_at_seed_lr_and_decays_to_zero_by_the_episode_end(
    germinated_at: int,
) -> None:
    epochs = 4
    config = CONFIG.model_copy(update={"lr": 0.1, "seed_lr": 0.02, "epochs": epochs})
    model, trainer = _setup(config=config)
    for _ in range(germinated_at):
        trainer.train_epoch()
        model.end_epoch()
    assert model.germinate("slot1", _seed(8), "conv", 1).ok
    seen, host_lrs = [], []
    for epoch in range(germinated_at, epochs + 1):
        assert not trainer.train_epoch().rolled_back
        host, seed = trainer.optimizer.param_groups
        assert seed["slot"] == "slot1"
        assert host["lr"] == pytest.approx(0.1 * _cosine(epoch, epochs), abs=1e-12)
        host_lrs.append(host["lr"])
        seen.append(seed["lr"])
        model.end_epoch()
    # The seed's own cosine runs over the epochs left to it when it was germinated.
    span = epochs - germinated_at
    expected = [0.02 * _cosine(age, span) for age in range(len(seen))]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[0] == 0.02  # its first epoch: the full seed_lr ...
    if germinated_at:  # ... while the host's lr has already decayed
        assert host_lrs[0] < 0.1 - 1e-3
    assert seen[span] == pytest.approx(0.0, abs=1e-12)


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
    assert any(m.improvement != 0.0 for m in reused.values())
    # Reusing the prefix is an optimisation only: both measure under batch statistics.
    for name, measurement in full.items():
        for field in ("contribution", "contribution_se", "improvement", "improvement_se"):
            assert getattr(reused[name], field) == pytest.approx(
                getattr(measurement, field), rel=1e-5, abs=1e-7
            ), (name, field)
        assert reused[name].seed_loss == pytest.approx(measurement.seed_loss, rel=1e-5)


def _per_sample(
    model: MorphogeneticModel, trainer: Trainer, alphas: dict[str, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample val losses and hits at `alphas` (at most one slot), as documented: the
    slot's input and seed output from an eval-mode forward (running statistics), the
    layers after the slot on `h + alpha * s` with batch statistics. No slot: the whole
    model under batch statistics."""
    losses, hits = [], []
    model.eval()
    with torch.no_grad():
        for x, y in trainer.val_batches.iterate(None, None):
            if not alphas:
                with model.batch_statistics():
                    logits = model(x)
                losses.append(F.cross_entropy(logits, y, reduction="none"))
                hits.append((logits.argmax(1) == y).double())
                continue
            [(name, alpha)] = alphas.items()
            with model.capture([name]) as captured:
                model(x)
                h, s = captured[name].captured
            with model.batch_statistics():
                logits = model.forward_after(name, h + alpha * s)
            losses.append(F.cross_entropy(logits, y, reduction="none"))
            hits.append((logits.argmax(1) == y).double())
    return torch.cat(losses).double(), torch.cat(hits)


def _mean_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), (values.std() / math.sqrt(values.numel())).item()


@pytest.mark.parametrize("reuse_prefix", [False, True])
def test_measurement_is_paired_over_samples_under_batch_statistics(reuse_prefix: bool) -> None:
    model, trainer = _three_seeds()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    measured = trainer.counterfactual(trainer.val_batches, reuse_prefix=reuse_prefix)
    # Measuring never touches weights or BatchNorm buffers.
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), key
    for name, alpha in (("slot0", 0.5), ("slot1", 0.0), ("slot2", 0.0)):
        loss0, hits0 = _per_sample(model, trainer, {name: 0.0})
        loss1, _ = _per_sample(model, trainer, {name: 1.0})
        _, hits_now = _per_sample(model, trainer, {name: alpha})
        contribution, contribution_se = _mean_se(hits_now - hits0)
        improvement, improvement_se = _mean_se(loss1 - loss0)
        m = measured[name]
        assert m.contribution == pytest.approx(contribution, abs=1e-9), name
        assert m.contribution_se == pytest.approx(contribution_se, abs=1e-9), name
        assert m.improvement == pytest.approx(improvement, rel=1e-5, abs=1e-7), name
        assert m.improvement_se == pytest.approx(improvement_se, rel=1e-4, abs=1e-7), name
        assert m.seed_loss == pytest.approx(loss1.mean().item(), rel=1e-5), name
        # `counterfactual` records what it measured on the slot.
        slot = model.slots[name]
        assert (slot.contribution, slot.contribution_se) == (m.contribution, m.contribution_se)
        assert (slot.improvement, slot.improvement_se) == (m.improvement, m.improvement_se)
        assert slot.seed_loss == m.seed_loss and slot.measured_stage is slot.stage
    assert measured["slot0"].improvement_se > 0.0
    # Isolated seeds contribute nothing at their alpha of 0, by construction.
    assert measured["slot1"].contribution == measured["slot2"].contribution == 0.0
    assert measured["slot1"].contribution_se == measured["slot2"].contribution_se == 0.0
    assert model.slots["slot2"].measured_stage is SeedStage.TRAINING


def test_evaluate_with_batch_statistics_leaves_the_buffers_alone() -> None:
    model, trainer = _three_seeds()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    loss, accuracy = trainer.evaluate(trainer.val_batches, batch_statistics=True)
    assert model.training  # the model's mode is restored
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), key
    losses, hits = _per_sample(model, trainer, {})
    assert loss == pytest.approx(losses.mean().item(), rel=1e-6)
    assert accuracy == pytest.approx(hits.mean().item(), abs=1e-12)
    running = trainer.evaluate(trainer.val_batches)
    assert running != (loss, accuracy)  # running statistics give another figure


def test_slot_measurement_record_stores_every_field() -> None:
    model, _ = _setup()
    assert model.germinate("slot1", _seed(8), "conv", 1).ok
    slot = model.slots["slot1"]
    SlotMeasurement(0.25, 0.125, -0.5, 0.0625, 1.75).record(slot)
    assert (slot.contribution, slot.contribution_se) == (0.25, 0.125)
    assert (slot.improvement, slot.improvement_se, slot.seed_loss) == (-0.5, 0.0625, 1.75)
    assert slot.measured_stage is SeedStage.GERMINATED


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


class _NanAfter(nn.Module):
    """A finite 1x1 conv seed until `fuse` training forwards have run; NaN from then on."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)
        self.fuse: int | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        s = self.conv(h)
        if self.training and self.fuse is not None:
            self.fuse -= 1
            if self.fuse < 0:
                return s * math.nan
        return s


def test_isolated_seeds_leave_the_trained_host_bit_identical_to_a_bare_one() -> None:
    bare_model, bare = _setup()
    model, trainer = _setup()
    assert model.germinate("slot0", _seed(4), "conv", 1).ok
    assert model.germinate("slot2", _seed(8), "conv", 1).ok
    assert model.advance("slot2").ok  # one GERMINATED, one TRAINING seed
    seeds = {name: model.slots[name].seed for name in ("slot0", "slot2")}
    before = {name: [p.detach().clone() for p in s.parameters()] for name, s in seeds.items()}
    for _ in range(2):
        expected = bare.train_epoch()
        got = trainer.train_epoch()
        assert not got.rolled_back
        assert got == expected  # train and val loss and accuracy, bit for bit
        bare_model.end_epoch()
        model.end_epoch()
    bare_state = bare_model.host.state_dict()
    host_state = model.host.state_dict()
    assert host_state.keys() == bare_state.keys()
    for key, value in bare_state.items():  # weights and every BatchNorm buffer
        assert torch.equal(host_state[key], value), key
    bare_params = dict(bare_model.host.named_parameters())
    for name, param in model.host.named_parameters():
        ours = trainer.optimizer.state[param]["momentum_buffer"]
        theirs = bare.optimizer.state[bare_params[name]]["momentum_buffer"]
        assert torch.equal(ours, theirs), name
    # ... while the seeds learnt from their own passes.
    for name, seed in seeds.items():
        moved = [
            not torch.equal(a, b) for a, b in zip(before[name], seed.parameters(), strict=True)
        ]
        assert any(moved), name


@pytest.mark.parametrize("seed_cls", [_InfWhenTraining, _Amplifier])
def test_a_training_seed_cannot_disturb_the_host_loss(seed_cls: type[nn.Module]) -> None:
    config = CONFIG.model_copy(update={"governor_warmup_batches": 1})
    model, trainer = _setup(config=config)
    trainer.train_epoch()
    model.end_epoch()
    assert model.germinate("slot1", seed_cls(), "bad", 1).ok
    assert model.advance("slot1").ok
    metrics = trainer.train_epoch()
    if seed_cls is _Amplifier:  # huge but finite: the host never sees it, no rollback
        assert not metrics.rolled_back and model.slots["slot1"].stage is SeedStage.TRAINING
        assert math.isfinite(metrics.train_loss) and metrics.train_loss < 10.0
    else:  # blamed for its own non-finite loss, not for a host loss
        assert metrics.rolled_back and metrics.rollback_pruned == "slot1"
        assert "of the seed in slot1" in (metrics.rollback_reason or "")


def test_nan_training_seed_rolls_back_to_the_snapshot_prunes_it_and_training_goes_on() -> None:
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
    # The host's loss stayed finite: the seed's own loss is what failed, on the first batch.
    assert metrics.rollback_reason == "non-finite loss nan of the seed in slot1 at batch 1"
    assert math.isfinite(metrics.val_loss)
    for key, value in model.host.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert trainer.optimizer.state.keys() == momenta.keys()
    for p, m in momenta.items():
        assert torch.equal(trainer.optimizer.state[p]["momentum_buffer"], m)
    assert model.slots["slot1"].stage is SeedStage.PRUNED
    assert [g["slot"] for g in trainer.optimizer.param_groups] == [None]
    model.end_epoch()
    after = trainer.train_epoch()
    assert not after.rolled_back and math.isfinite(after.train_loss)
    assert not torch.equal(model.host.stem[0].weight, weights["stem.0.weight"])


_MEASURED = (
    "contribution",
    "contribution_se",
    "improvement",
    "improvement_se",
    "seed_loss",
    "seed_loss_trend",
    "measured_stage",
)


def test_rollback_restores_everything_the_epoch_changed() -> None:
    model, trainer = _setup()
    culprit = _NanAfter(8)
    assert model.germinate("slot0", _seed(4), "conv", 4).ok
    assert model.germinate("slot1", _seed(8), "conv", 1).ok
    assert model.germinate("slot2", culprit, "nan", 4).ok
    for name in model.slots:
        assert model.advance(name).ok  # all TRAINING
    trainer.train_epoch()  # measures them all
    model.end_epoch()
    assert model.advance("slot0").ok and model.advance("slot2").ok  # BLENDING; slot1 TRAINING
    assert not trainer.train_epoch().rolled_back
    model.end_epoch()
    assert model.slots["slot0"].alpha == model.slots["slot2"].alpha == 0.25
    # Two training forwards per batch reach slot2: the host's and slot1's seed pass (which
    # runs the host after slot1 as it is). Batches 1 and 2 train, batch 3 turns NaN.
    culprit.fuse = 4
    trainer.sync_param_groups()
    slots = {name: slot.lifecycle_state() for name, slot in model.slots.items()}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    momenta = {p: s["momentum_buffer"].clone() for p, s in trainer.optimizer.state.items()}
    loss_ema, good_batches = trainer._loss_ema, trainer._good_batches
    generator = trainer.generator.get_state()
    assert loss_ema is not None and good_batches == 8

    metrics = trainer.train_epoch()

    assert metrics.rolled_back and metrics.rollback_pruned == "slot2"
    assert metrics.rollback_reason == "non-finite training loss nan at batch 3"
    assert model.slots["slot2"].stage is SeedStage.PRUNED
    for name in ("slot0", "slot1"):
        state = model.slots[name].lifecycle_state()
        for key, value in slots[name].items():
            if key not in _MEASURED:  # stage, alpha, blend_step, counters ...
                assert state[key] == value, (name, key)
    assert model.slots["slot0"].blend_step == slots["slot0"]["blend_step"] == 4
    culprit_keys = {k for k in weights if k.startswith("slot_modules.2.")}
    assert culprit_keys and model.state_dict().keys() == weights.keys() - culprit_keys
    for key, value in model.state_dict().items():  # weights and BatchNorm buffers
        assert torch.equal(value, weights[key]), key
    doomed = set(culprit.parameters())
    assert trainer.optimizer.state.keys() == momenta.keys() - doomed
    for p, state in trainer.optimizer.state.items():
        assert torch.equal(state["momentum_buffer"], momenta[p])
    assert (trainer._loss_ema, trainer._good_batches) == (loss_ema, good_batches)
    assert torch.equal(trainer.generator.get_state(), generator)
    # The survivors were measured again, on the restored weights, without the culprit.
    recorded = {name: model.slots[name].lifecycle_state() for name in ("slot0", "slot1")}
    again = trainer.counterfactual(trainer.val_batches)
    assert list(again) == ["slot0", "slot1"]
    for name, m in again.items():
        assert recorded[name]["contribution"] == m.contribution
        assert recorded[name]["improvement"] == m.improvement


@pytest.mark.parametrize("harmful_cls", [_InfWhenTraining, _Amplifier])
def test_the_governor_prunes_the_harmful_seed_not_the_earlier_one(
    harmful_cls: type[nn.Module],
) -> None:
    config = CONFIG.model_copy(update={"governor_warmup_batches": 4})
    model, trainer = _setup(config=config)
    trainer.train_epoch()
    model.end_epoch()
    assert model.germinate("slot0", _seed(4), "conv", 1).ok  # harmless, earlier slot
    assert model.germinate("slot1", _Amplifier(), "amp", 1).ok  # TRAINING: never blamed
    assert model.germinate("slot2", harmful_cls(), "bad", 1).ok
    for name in model.slots:
        assert model.advance(name).ok
        model.slots[name].record_measurement(0.0, -1.0, 1.0)
    model.end_epoch()
    assert model.advance("slot2").ok
    while model.slots["slot2"].alpha < 1.0:
        model.step_blend()
    assert model.advance("slot2").ok  # HOLDING at alpha 1
    assert model.advance("slot0").ok  # BLENDING, its alpha growing through the epoch
    assert [s.stage for s in model.slots.values()] == [
        SeedStage.BLENDING,
        SeedStage.TRAINING,
        SeedStage.HOLDING,
    ]
    metrics = trainer.train_epoch()
    assert metrics.rolled_back and metrics.rollback_pruned == "slot2"
    words = "non-finite training loss" if harmful_cls is _InfWhenTraining else "loss spike"
    assert words in (metrics.rollback_reason or "")
    assert model.slots["slot0"].stage is SeedStage.BLENDING
    assert model.slots["slot1"].stage is SeedStage.TRAINING


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


def test_checkpoint_keeps_the_seed_groups_and_refuses_another_format(tmp_path: Path) -> None:
    model, trainer = _setup()
    _run(model, trainer, range(2))
    state = trainer.state_dict()
    assert state["format"] == 2
    groups = state["optimizer"]["param_groups"]
    assert [g["slot"] for g in groups] == [None, "slot0", "slot1"]
    assert [g["lr"] for g in groups] == [g["lr"] for g in trainer.optimizer.param_groups]
    _, other = _setup()
    with pytest.raises(ValueError, match="checkpoint format 1 != 2"):
        other.load_state_dict({**state, "format": 1}, seed_factory=_factory)


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
    lifecycle = LifecycleConfig(
        min_training_epochs=1,
        min_improvement=-1.0,
        holding_epochs=1,
        significance=0.0,
        fossilize_significance=0.0,
    )
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
