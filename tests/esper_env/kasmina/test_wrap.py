"""`wrap()` on a model that is not ours: a small ResNet."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import esper_env
from esper_env.contracts import SeedStage
from esper_env.kasmina import MorphogeneticModel, wrap


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2), BasicBlock(16, 16, 1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _resnet() -> TinyResNet:
    torch.manual_seed(0)
    return TinyResNet()


def _seed(channels: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU())


def test_wrap_is_exported_at_the_package_root() -> None:
    assert esper_env.wrap is wrap


def test_dormant_wrapped_resnet_gives_the_same_outputs() -> None:
    plain = _resnet()
    reference = copy.deepcopy(plain)
    x = torch.randn(4, 3, 32, 32)
    model = wrap(plain, ["layer1", "layer2.0"], example_input=x[:1])
    assert list(model.slots) == ["layer1", "layer2.0"]
    assert [s.channels for s in model.slots.values()] == [8, 16]
    assert torch.equal(model(x), reference(x))
    model.eval()
    reference.eval()
    assert torch.equal(model(x), reference(x))
    assert list(model.host.state_dict()) == list(reference.state_dict())


def test_seeds_in_a_wrapped_resnet_train_and_blend() -> None:
    model = wrap(_resnet(), ["layer1", "layer2"], example_input=torch.zeros(1, 3, 32, 32))
    reference = copy.deepcopy(model)
    for name in model.slots:
        assert model.germinate(name, _seed(model.slots[name].channels), "conv1x1", 1).ok
        assert model.advance(name).ok
    seed_params = model.live_seed_parameters()
    before = [p.detach().clone() for p in seed_params]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    for _ in range(3):
        optimizer.zero_grad()
        logits = model(x)
        # Not resumable: each isolated seed's pass reruns the whole host on h.detach() + s.
        seed_logits = model.seed_logits(x)
        assert list(seed_logits) == ["layer1", "layer2"]
        seed_loss = sum(F.cross_entropy(v, y) for v in seed_logits.values())
        (F.cross_entropy(logits, y) + seed_loss).backward()
        optimizer.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, seed_params, strict=True))
    # The host trained exactly as it would have alone (gradient isolation), and its
    # BatchNorm buffers saw only the host's own forwards.
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(3):
        ref_optimizer.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        ref_optimizer.step()
    for a, b in zip(model.host.parameters(), reference.host.parameters(), strict=True):
        assert torch.equal(a, b)
    reference_state = reference.host.state_dict()
    for name, value in model.host.state_dict().items():
        assert torch.equal(value, reference_state[name]), name
    assert all(slot.injected is None and not slot.quiet for slot in model.slots.values())
    model.end_epoch()
    model.slots["layer2"].record_measurement(0.0, -1.0, 1.0)
    assert model.advance("layer2").ok
    model.step_blend()
    assert model.slots["layer2"].stage is SeedStage.BLENDING
    assert not torch.equal(model.eval()(x), reference.eval()(x))


def test_wrap_without_example_input_learns_shapes_at_the_first_forward() -> None:
    model = wrap(_resnet(), ["layer2"])
    slot = model.slots["layer2"]
    assert slot.channels == 16  # declared by the last BatchNorm of the block
    refused = model.germinate("layer2", _seed(16), "conv1x1", 1)
    assert not refused.ok and "shape unknown" in refused.reason
    model(torch.zeros(1, 3, 32, 32))
    assert slot.sample_shape == (16, 16, 16)
    assert model.germinate("layer2", _seed(16), "conv1x1", 1).ok


def test_wrap_rejects_bad_slot_lists() -> None:
    with pytest.raises(ValueError, match=r"no submodule named \['layer9'\]"):
        wrap(_resnet(), ["layer9"])
    with pytest.raises(ValueError, match="distinct"):
        wrap(_resnet(), ["layer1", "layer1"])
    with pytest.raises(ValueError, match="at least one"):
        wrap(_resnet(), [])
    resnet = _resnet()
    wrap(resnet, ["layer1"])
    with pytest.raises(ValueError, match="already carries"):
        wrap(resnet, ["layer1"])


class _Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class _UsesPair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pair = _Pair()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.pair(x)
        return a + b


def test_submodule_with_non_tensor_output_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="output is one tensor"):
        wrap(_UsesPair(), ["pair"], example_input=torch.zeros(1, 3))


def test_wrapped_model_is_a_morphogenetic_model() -> None:
    assert isinstance(wrap(_resnet(), ["layer1"]), MorphogeneticModel)
    assert not wrap(_resnet(), ["layer1"]).resumable
