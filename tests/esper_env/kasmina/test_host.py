from __future__ import annotations

import copy

import pytest
import torch

from esper_env.contracts import HOST_PRESETS, HostConfig, SeedStage
from esper_env.kasmina import CifarHost, MorphogeneticModel, build_host


@pytest.mark.parametrize("preset", sorted(HOST_PRESETS))
def test_presets_build_with_one_slot_per_stage(preset: str) -> None:
    config = HOST_PRESETS[preset]
    model = build_host(config)
    assert list(model.slots) == [f"slot{i}" for i in range(len(config.widths))]
    assert [slot.channels for slot in model.slots.values()] == list(config.widths)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, config.num_classes)


def test_deep_and_impaired_presets() -> None:
    assert len(build_host(HOST_PRESETS["deep"]).slots) >= 6
    impaired = build_host(HOST_PRESETS["impaired"]).base_param_count()
    assert impaired * 10 < build_host(HOST_PRESETS["default"]).base_param_count()


def test_maps_halve_when_the_width_changes() -> None:
    model = build_host(HostConfig(widths=(8, 8, 16, 32), blocks_per_stage=2))
    shapes = [slot.sample_shape for slot in model.slots.values()]
    assert shapes == [(8, 32, 32), (8, 32, 32), (16, 16, 16), (32, 8, 8)]
    assert len(model.host.stages[1]) == 2


def test_dormant_output_is_the_bare_host_output() -> None:
    torch.manual_seed(0)
    model = build_host(HOST_PRESETS["mini"])
    bare = CifarHost(HOST_PRESETS["mini"])
    bare.load_state_dict(model.host.state_dict())
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(model(x), bare(x))
    model.eval()
    bare.eval()
    assert torch.equal(model(x), bare(x))


def test_channels_last_input_gives_the_same_logits(
    tiny_model: MorphogeneticModel, drive_to
) -> None:
    drive_to(tiny_model, "slot1", SeedStage.BLENDING)
    tiny_model.step_blend()
    model = tiny_model.eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    got = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_forward_after_a_slot_resumes_the_host(tiny_model: MorphogeneticModel) -> None:
    tiny_model.eval()
    x = torch.randn(3, 3, 32, 32)
    seen: dict[str, torch.Tensor] = {}
    for i, stage in enumerate(tiny_model.host.stages):
        stage.register_forward_hook(lambda m, a, out, i=i: seen.setdefault(f"slot{i}", out))
    full = tiny_model(x)
    assert tiny_model.resumable
    for name in tiny_model.slots:
        assert torch.equal(tiny_model.forward_after(name, seen[name]), full)


def test_parameter_counts_follow_the_lifecycle(tiny_model: MorphogeneticModel, drive_to) -> None:
    base = sum(p.numel() for p in tiny_model.host.parameters())
    assert tiny_model.base_param_count() == tiny_model.host_param_count() == base
    drive_to(tiny_model, "slot2", SeedStage.HOLDING)
    seed = tiny_model.slots["slot2"].seed_params()
    assert seed > 0
    assert tiny_model.seed_param_count() == seed
    assert tiny_model.host_param_count() == base
    tiny_model.slots["slot2"].record_measurement(0.1, -1.0, 1.0)
    assert tiny_model.fossilize("slot2").ok
    assert tiny_model.seed_param_count() == 0
    assert tiny_model.host_param_count() == base + seed
    assert tiny_model.base_param_count() == base
