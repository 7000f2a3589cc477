import pytest
import torch

from blueprints.catalog import CATALOG
from blueprints.compiler import Compiler, build_module
from blueprints.evaluate import evaluate
from blueprints.ir import check_seed_contract

NAMES = [
    "norm",
    "depthwise_separable",
    "residual_block",
    "bottleneck",
    "squeeze_excitation",
    "lowrank_adapter",
]


def test_catalog_names_and_order_are_stable():
    assert list(CATALOG) == NAMES
    assert len({ir.canonical_hash for ir in CATALOG.values()}) == len(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [3, 16, 64])
def test_blueprint_is_a_small_residual_seed_with_gradient_everywhere(name, channels):
    ir = CATALOG[name]
    check_seed_contract(ir)
    report = evaluate(ir, channels, height=6, width=6, latency_repeats=1)
    assert report.passed, report.reasons
    assert report.init_output_ratio == 0.0  # function-preserving at birth


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("norm", 2 * 64),
        ("depthwise_separable", 64 * 9 + 2 * 64 + 64 * 64),
        ("residual_block", 2 * (64 * 64 * 9 + 2 * 64)),
        ("bottleneck", 64 * 16 + 2 * 16 + 16 * 16 * 9 + 2 * 16 + 16 * 64),
        ("squeeze_excitation", (64 * 16 + 16) + (16 * 64 + 64) + 64 * 64),
        ("lowrank_adapter", 64 * 8 + 8 * 64),
    ],
)
def test_parameter_counts_at_width_64(name, params):
    module = build_module(CATALOG[name], 64, seed=0)
    assert sum(p.numel() for p in module.parameters()) == params


def test_seed_output_keeps_the_input_shape_at_odd_sizes():
    x = torch.randn(3, 12, 7, 5)
    for ir in CATALOG.values():
        assert build_module(ir, 12, seed=0)(x).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_blueprint_outputs_exact_zeros_at_germination_and_learns_from_the_first_step(name):
    with Compiler() as compiler:
        module = compiler.build(CATALOG[name], 16, seed=0, device=torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 6, 6, generator=gen)
    target = torch.randn(4, 16, 6, 6, generator=gen)
    module.train()
    s = module(x)
    assert s.shape == x.shape
    assert torch.equal(s, torch.zeros_like(s))
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    (x + s - target).square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    opt.step()
    with torch.no_grad():
        after = module(x)
    assert torch.isfinite(after).all()
    assert after.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_blueprint_trains_on_a_detached_channels_last_input(name):
    # What an isolated seed sees: h.detach() in the channels-last format of the batches.
    # torch's CPU channels-last GroupNorm backward crashes the process on such an input.
    module = build_module(CATALOG[name], 16, seed=0)
    x = torch.randn(4, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    reference = module(x.contiguous())
    out = module(x)
    torch.testing.assert_close(out, reference)
    out.square().sum().backward()
    assert all(p.grad is not None for p in module.parameters())
