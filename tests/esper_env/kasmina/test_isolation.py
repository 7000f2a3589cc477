"""Gradient isolation, the isolated seed's own pass, and the slot's forward in every stage."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from esper_env.contracts import SeedStage
from esper_env.kasmina import MorphogeneticModel


def _loss_and_grads(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x, y = batch
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, y).backward()
    grads = {name: p.grad.clone() for name, p in model.host.named_parameters()}
    return out.detach(), grads


def _train_step(
    model: MorphogeneticModel, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Tolaria's step: host loss plus each isolated seed's loss on its own pass, one backward.

    Returns the host logits, the host parameters' gradients and the seed-pass logits.
    """
    x, y = batch
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(x)
    seed_logits = model.seed_logits(x)
    loss = F.cross_entropy(out, y) + sum(F.cross_entropy(v, y) for v in seed_logits.values())
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.host.named_parameters()}
    return out.detach(), grads, {k: v.detach() for k, v in seed_logits.items()}


def _assert_host_identical(
    model: MorphogeneticModel,
    bare: MorphogeneticModel,
    outs: tuple[torch.Tensor, torch.Tensor],
    grads: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
) -> None:
    assert torch.equal(outs[0], outs[1])
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[1].items():
        assert torch.equal(grads[0][name], grad), name
    # Every host buffer (BatchNorm running_mean, running_var, num_batches_tracked) too.
    seeded_state = model.host.state_dict()
    bare_state = bare.host.state_dict()
    assert seeded_state.keys() == bare_state.keys()
    assert any(name.endswith("num_batches_tracked") for name in bare_state)
    for name, value in bare_state.items():
        assert torch.equal(seeded_state[name], value), name


@pytest.mark.parametrize("slot", ["slot0", "slot1", "slot2"])
@pytest.mark.parametrize("stage", [SeedStage.GERMINATED, SeedStage.TRAINING])
def test_isolated_seed_leaves_the_host_bit_identical_and_still_learns(
    tiny_model: MorphogeneticModel, batch, drive_to, stage: SeedStage, slot: str
) -> None:
    bare = copy.deepcopy(tiny_model)
    drive_to(tiny_model, slot, stage)
    seed = tiny_model.slots[slot].seed
    assert seed is not None
    opt_bare = torch.optim.SGD(bare.host.parameters(), lr=0.1, momentum=0.9)
    opt_seed = torch.optim.SGD(tiny_model.parameters(), lr=0.1, momentum=0.9)
    seed_before = [p.detach().clone() for p in seed.parameters()]
    for _ in range(2):  # the second step starts from the weights the first one left
        out_bare, grads_bare, none = _train_step(bare, batch)
        assert none == {}  # a bare host has no seed pass
        out_seed, grads_seed, seed_logits = _train_step(tiny_model, batch)
        _assert_host_identical(tiny_model, bare, (out_seed, out_bare), (grads_seed, grads_bare))
        assert list(seed_logits) == [slot]
        assert not torch.equal(seed_logits[slot], out_seed)  # the seed's pass sees h + s
        seed_grads = [p.grad for p in seed.parameters()]
        assert all(g is not None for g in seed_grads)
        assert any(g.abs().sum() > 0 for g in seed_grads)
        opt_bare.step()
        opt_seed.step()
    for name, p in bare.host.named_parameters():
        assert torch.equal(dict(tiny_model.host.named_parameters())[name], p), name
    assert any(not torch.equal(a, p) for a, p in zip(seed_before, seed.parameters(), strict=True))


def test_two_isolated_seeds_each_get_their_own_pass(
    tiny_model: MorphogeneticModel, batch, drive_to
) -> None:
    bare = copy.deepcopy(tiny_model)
    drive_to(tiny_model, "slot0", SeedStage.TRAINING)
    drive_to(tiny_model, "slot1", SeedStage.GERMINATED)
    out_bare, grads_bare, _ = _train_step(bare, batch)
    out_seed, grads_seed, seed_logits = _train_step(tiny_model, batch)
    _assert_host_identical(tiny_model, bare, (out_seed, out_bare), (grads_seed, grads_bare))
    assert list(seed_logits) == ["slot0", "slot1"]
    for name in ("slot0", "slot1"):
        seed = tiny_model.slots[name].seed
        assert seed is not None
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in seed.parameters()), name
    # The pairs are consumed: a second call without a new forward has nothing to run.
    assert tiny_model.seed_logits(batch[0]) == {}


def test_seed_pass_is_the_host_after_the_slot_on_h_plus_s(
    tiny_model: MorphogeneticModel, batch, drive_to
) -> None:
    drive_to(tiny_model, "slot1", SeedStage.TRAINING)
    reference = copy.deepcopy(tiny_model)
    x, y = batch
    _, _, seed_logits = _train_step(tiny_model, batch)
    seed = tiny_model.slots["slot1"].seed
    assert seed is not None
    seed_grads = [p.grad.clone() for p in seed.parameters()]
    # The same function, as a full forward with the seed blended in at alpha 1 under batch
    # statistics: the seed's gradient is the gradient of the blended task loss.
    reference.train()
    reference.zero_grad(set_to_none=True)
    with reference.batch_statistics(), reference.force_alpha({"slot1": 1.0}):
        blended = reference(x)
    torch.testing.assert_close(seed_logits["slot1"], blended.detach())
    F.cross_entropy(blended, y).backward()
    ref_seed = reference.slots["slot1"].seed
    assert ref_seed is not None
    for mine, theirs in zip(seed_grads, ref_seed.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs.grad)


class _Exploding(nn.Module):
    """A residual seed that is finite at germination and emits `value` once armed."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.value = value
        self.armed = False

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        s = self.conv(h)
        return s * self.value if self.armed else s


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_non_finite_training_seed_cannot_reach_the_host(
    tiny_model: MorphogeneticModel, batch, drive_to, value: float
) -> None:
    bare = copy.deepcopy(tiny_model)
    seed = _Exploding(value)
    assert tiny_model.germinate("slot1", seed, "exploding", 1).ok
    assert tiny_model.advance("slot1").ok
    assert tiny_model.slots["slot1"].stage is SeedStage.TRAINING
    seed.armed = True
    out_bare, grads_bare, _ = _train_step(bare, batch)
    out_seed, grads_seed, seed_logits = _train_step(tiny_model, batch)
    assert torch.isfinite(out_seed).all()
    assert all(torch.isfinite(g).all() for g in grads_seed.values())
    _assert_host_identical(tiny_model, bare, (out_seed, out_bare), (grads_seed, grads_bare))
    assert not torch.isfinite(seed_logits["slot1"]).all()


def test_training_seed_runs_the_host_prefix_once(
    tiny_model: MorphogeneticModel, batch, drive_to
) -> None:
    drive_to(tiny_model, "slot1", SeedStage.TRAINING)
    stem_calls: list[int] = []
    after_calls: list[int] = []
    tiny_model.host.stem.register_forward_hook(lambda *args: stem_calls.append(1))
    tiny_model.host.stages[2].register_forward_hook(lambda *args: after_calls.append(1))
    _loss_and_grads(tiny_model, batch)
    assert (len(stem_calls), len(after_calls)) == (1, 1)
    # The seed's pass resumes after its slot: the part below it is not run again.
    _train_step(tiny_model, batch)
    assert (len(stem_calls), len(after_calls)) == (2, 3)


def test_isolated_seed_keeps_no_pair_outside_training_forwards(
    tiny_model: MorphogeneticModel, batch, drive_to
) -> None:
    drive_to(tiny_model, "slot1", SeedStage.TRAINING)
    slot = tiny_model.slots["slot1"]
    x, _ = batch
    tiny_model.eval()
    tiny_model(x)
    assert slot.isolated_pair is None
    tiny_model.train()
    with torch.no_grad():
        tiny_model(x)
    assert slot.isolated_pair is None
    tiny_model(x)
    assert slot.isolated_pair is not None
    h, s = slot.isolated_pair
    assert not h.requires_grad and s.requires_grad
    assert tiny_model.prune("slot1").ok
    assert slot.isolated_pair is None


def test_blending_sends_gradients_both_ways(
    tiny_model: MorphogeneticModel, batch, drive_to
) -> None:
    bare = copy.deepcopy(tiny_model)
    drive_to(tiny_model, "slot1", SeedStage.BLENDING)
    tiny_model.slots["slot1"].steps_per_epoch = 4
    tiny_model.step_blend()
    assert 0.0 < tiny_model.slots["slot1"].alpha < 1.0
    out_bare, grads_bare = _loss_and_grads(bare, batch)
    out_seed, grads_seed = _loss_and_grads(tiny_model, batch)
    assert not torch.equal(out_seed, out_bare)
    # Host parameters below the slot now receive gradient through the seed.
    for name in ("stem.0.weight", "stages.1.0.0.weight"):
        assert not torch.equal(grads_seed[name], grads_bare[name]), name
    seed = tiny_model.slots["slot1"].seed
    assert seed is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in seed.parameters())


def test_blended_output_is_host_plus_alpha_seed(tiny_model: MorphogeneticModel, drive_to) -> None:
    drive_to(tiny_model, "slot0", SeedStage.BLENDING)
    slot = tiny_model.slots["slot0"]
    slot.steps_per_epoch = 4
    tiny_model.step_blend()
    tiny_model.eval()
    x = torch.randn(2, 3, 32, 32)
    h = tiny_model.host.stages[0](tiny_model.host.stem(x))  # the hook already adds the seed
    with tiny_model.capture(["slot0"]):
        tiny_model(x)
        raw_h, s = slot.captured
    assert torch.equal(h, raw_h + slot.alpha * s)


def test_fossilized_seed_acts_at_alpha_one_and_sedation_is_reversible(
    tiny_model: MorphogeneticModel, drive_to
) -> None:
    drive_to(tiny_model, "slot2", SeedStage.FOSSILIZED)
    tiny_model.eval()
    x = torch.randn(2, 3, 32, 32)
    awake = tiny_model(x)
    with tiny_model.force_alpha({"slot2": 1.0}):
        assert torch.equal(tiny_model(x), awake)
    with tiny_model.force_alpha({"slot2": 0.0}):
        without = tiny_model(x)
    assert not torch.equal(without, awake)
    assert tiny_model.sedate("slot2").ok
    assert tiny_model.slots["slot2"].report().alpha == 0.0
    assert torch.equal(tiny_model(x), without)
    assert not tiny_model.sedate("slot2").ok
    assert tiny_model.wake("slot2").ok
    assert torch.equal(tiny_model(x), awake)


def test_force_alpha_is_undone_after_the_block(tiny_model: MorphogeneticModel, drive_to) -> None:
    drive_to(tiny_model, "slot0", SeedStage.HOLDING)
    with tiny_model.force_alpha({"slot0": 0.0}):
        assert tiny_model.slots["slot0"].forced_alpha == 0.0
    assert tiny_model.slots["slot0"].forced_alpha is None


class _Counting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return h * self.scale


def test_pruned_slot_returns_the_host_output_without_calling_the_seed(
    tiny_model: MorphogeneticModel,
) -> None:
    bare = copy.deepcopy(tiny_model).eval()
    seed = _Counting()
    assert tiny_model.germinate("slot1", seed, "count", 1).ok
    calls_after_probe = seed.calls
    x = torch.randn(2, 3, 32, 32)
    # An isolated seed is not run by an eval forward (its output cannot matter there) ...
    assert torch.equal(tiny_model.eval()(x), bare(x))
    assert seed.calls == calls_after_probe
    # ... but a training forward runs it once, for its own pass.
    assert torch.equal(tiny_model.train()(x), bare.train()(x))
    assert seed.calls == calls_after_probe + 1
    assert tiny_model.prune("slot1").ok
    assert torch.equal(tiny_model.train()(x), bare.train()(x))
    assert torch.equal(tiny_model.eval()(x), bare.eval()(x))
    assert seed.calls == calls_after_probe + 1
    assert tiny_model.seed_param_count() == 0


def _norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("training", [True, False])
def test_batch_statistics_leaves_every_buffer_bit_identical_and_restores_the_flags(
    tiny_model: MorphogeneticModel, batch, drive_to, training: bool
) -> None:
    drive_to(tiny_model, "slot1", SeedStage.HOLDING)  # a seed with its own BatchNorm, blended
    x, _ = batch
    tiny_model.train()
    tiny_model(x)  # running statistics that differ from the initial ones
    tiny_model.train(training)
    norms = _norms(tiny_model)
    assert len(norms) == 5  # stem, three stages, the seed's own
    norms[1].track_running_stats = training  # a mixed set of flags, to see each one restored
    flags = [(m.training, m.track_running_stats) for m in norms]
    buffers = {
        k: v.clone() for k, v in tiny_model.state_dict().items() if "running" in k or "num_b" in k
    }
    assert len(buffers) == 15
    reference = copy.deepcopy(tiny_model).train()  # train mode: batch statistics everywhere
    with torch.no_grad():
        expected = reference(x)
    with tiny_model.batch_statistics():
        assert all(m.training and not m.track_running_stats for m in norms)
        inside = tiny_model(x)
        with torch.no_grad():
            tiny_model(x * 3.0)  # another batch: still nothing may be tracked
    assert torch.equal(inside, expected)
    state = tiny_model.state_dict()
    for name, value in buffers.items():
        assert torch.equal(state[name], value), name
    assert [(m.training, m.track_running_stats) for m in norms] == flags
    # Outside the block, a training forward updates the buffers again.
    if training:
        tiny_model(x)
        assert not torch.equal(
            tiny_model.state_dict()["host.stem.1.running_mean"], buffers["host.stem.1.running_mean"]
        )


def test_batch_statistics_restores_the_flags_after_an_error(tiny_model: MorphogeneticModel) -> None:
    tiny_model.eval()
    with pytest.raises(RuntimeError, match="boom"), tiny_model.batch_statistics():
        raise RuntimeError("boom")
    assert all(not m.training and m.track_running_stats for m in _norms(tiny_model))
