from __future__ import annotations

import torch
from torch import nn

from esper_env.contracts import SeedStage
from esper_env.kasmina import BakedSeed, MorphogeneticModel, export_static, wrap
from esper_env.kasmina.model import SlotHook


def test_export_bakes_in_acting_seeds_and_keeps_the_outputs(
    tiny_model: MorphogeneticModel, drive_to
) -> None:
    drive_to(tiny_model, "slot0", SeedStage.FOSSILIZED)
    drive_to(tiny_model, "slot1", SeedStage.BLENDING)
    tiny_model.slots["slot1"].steps_per_epoch = 4
    tiny_model.step_blend()
    drive_to(tiny_model, "slot2", SeedStage.TRAINING)
    tiny_model.eval()
    x = torch.randn(3, 3, 32, 32)
    expected = tiny_model(x)
    static = export_static(tiny_model).eval()
    assert torch.equal(static(x), expected)
    assert not any(
        isinstance(hook, SlotHook) for m in static.modules() for hook in m._forward_hooks.values()
    )
    baked = [m for m in static.modules() if isinstance(m, BakedSeed)]
    assert [m.alpha for m in baked] == [1.0, 0.25]
    # The source model still has its slots and still computes the same.
    assert torch.equal(tiny_model(x), expected)
    assert tiny_model.slots["slot2"].seed is not None


def test_export_of_a_sedated_seed_leaves_it_out(tiny_model: MorphogeneticModel, drive_to) -> None:
    drive_to(tiny_model, "slot0", SeedStage.FOSSILIZED)
    tiny_model.sedate("slot0")
    static = export_static(tiny_model.eval())
    assert not any(isinstance(m, BakedSeed) for m in static.modules())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(static(x), tiny_model(x))


def test_export_of_a_wrapped_model() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    model = wrap(net, ["0"], example_input=torch.zeros(1, 6))
    model.germinate("0", nn.Linear(5, 5), "linear", 1)
    model.advance("0")
    model.slots["0"].record_measurement(0.0, -1.0, 1.0)
    model.end_epoch()
    model.advance("0")
    model.step_blend()
    model.advance("0")
    x = torch.randn(4, 6)
    static = export_static(model)
    assert isinstance(static, nn.Sequential) and isinstance(static[0], BakedSeed)
    assert torch.equal(static(x), model(x))
