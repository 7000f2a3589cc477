"""Gradient isolation and the slot's forward in every stage."""

from __future__ import annotations

import copy

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


@pytest.mark.parametrize("stage", [SeedStage.GERMINATED, SeedStage.TRAINING])
def test_alpha_zero_is_bit_identical_to_the_bare_host(
    tiny_model: MorphogeneticModel, batch, drive_to, stage: SeedStage
) -> None:
    bare = copy.deepcopy(tiny_model)
    drive_to(tiny_model, "slot1", stage)
    out_bare, grads_bare = _loss_and_grads(bare, batch)
    out_seed, grads_seed = _loss_and_grads(tiny_model, batch)
    assert torch.equal(out_seed, out_bare)
    assert grads_seed.keys() == grads_bare.keys()
    for name, grad in grads_bare.items():
        assert torch.equal(grads_seed[name], grad), name
    # BatchNorm statistics of the host are untouched as well.
    seeded_state = tiny_model.host.state_dict()
    for name, value in bare.host.state_dict().items():
        assert torch.equal(seeded_state[name], value), name
    seed = tiny_model.slots["slot1"].seed
    assert seed is not None
    seed_grads = [p.grad for p in seed.parameters()]
    assert all(g is not None for g in seed_grads)
    assert any(g.abs().sum() > 0 for g in seed_grads)


def test_training_seed_runs_the_host_forward_once(
    tiny_model: MorphogeneticModel, batch, drive_to
) -> None:
    drive_to(tiny_model, "slot1", SeedStage.TRAINING)
    calls = []
    tiny_model.host.stem.register_forward_hook(lambda *args: calls.append(1))
    _loss_and_grads(tiny_model, batch)
    assert len(calls) == 1


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
    tiny_model.eval()(x)
    assert seed.calls == calls_after_probe + 1
    assert tiny_model.prune("slot1").ok
    assert torch.equal(tiny_model(x), bare(x))
    assert seed.calls == calls_after_probe + 1
    assert tiny_model.seed_param_count() == 0


def _seed_output_grad(model: MorphogeneticModel, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient reaching the seed's output `s` in one backward pass, and `s` itself."""
    seen: dict[str, torch.Tensor] = {}
    seed = model.slots["slot1"].seed
    assert seed is not None

    def keep_output(module: nn.Module, args: tuple[torch.Tensor, ...], s: torch.Tensor) -> None:
        seen["s"] = s.detach()

    def keep_grad(module: nn.Module, grad_in: object, grad_out: tuple[torch.Tensor]) -> None:
        seen["grad"] = grad_out[0]

    handles = [seed.register_forward_hook(keep_output), seed.register_full_backward_hook(keep_grad)]
    _loss_and_grads(model, batch)
    for handle in handles:
        handle.remove()
    return seen["grad"], seen["s"]


def test_training_seed_output_is_damped_towards_a_functional_gradient_step(
    tiny_model: MorphogeneticModel, batch, drive_to
) -> None:
    drive_to(tiny_model, "slot1", SeedStage.TRAINING)
    undamped = copy.deepcopy(tiny_model)
    damping = 0.5
    for model, value in ((tiny_model, damping), (undamped, 0.0)):
        slot = model.slots["slot1"]
        slot.lifecycle = slot.lifecycle.model_copy(update={"training_damping": value})
    grad_damped, s = _seed_output_grad(tiny_model, batch)
    grad_plain, s_plain = _seed_output_grad(undamped, batch)
    assert torch.equal(s, s_plain)
    # The seed's backward sees the task gradient plus exactly the damping term.
    torch.testing.assert_close(grad_damped - grad_plain, damping / s.numel() * s)
    assert grad_plain.abs().sum() > 0
