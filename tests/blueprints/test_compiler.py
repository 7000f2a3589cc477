import copy
import threading

import pytest
import torch
from blueprint_strategies import renamed_and_shuffled, seed_irs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.fx.passes.shape_prop import ShapeProp

from blueprints.catalog import CATALOG
from blueprints.compiler import Compiler, CompileState, build_module
from blueprints.ir import C, IRBuilder, SeedContractError, Width
from blueprints.lowering import lower

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WAIT = 30.0  # seconds; only ever reached if a worker thread hangs


@FAST
@given(seed_irs(), st.sampled_from([4, 6, 8]))
def test_inferred_shapes_match_the_built_module(ir, channels):
    plan = lower(ir, channels)
    module = build_module(ir, channels, seed=0)
    x = torch.randn(2, channels, 5, 6, generator=torch.Generator().manual_seed(0))
    tensors = [getattr(module.nodes[t.node], t.attr) for t in plan.tensors]
    ShapeProp(plan.graph).propagate(x, True, *tensors)
    resolved = {n.name: n for n in plan.nodes}
    checked = 0
    for fx_node in plan.graph.graph.nodes:
        for name in fx_node.meta.get("blueprint_nodes", []):
            schema = resolved[name].schema
            height = 5 if schema.height == "H" else 1
            width = 6 if schema.width == "W" else 1
            expected = (2, resolved[name].out_channels, height, width)
            assert tuple(fx_node.meta["tensor_meta"].shape) == expected, name
            assert expected[1] == schema.channels.resolve(channels)
            checked += 1
    assert checked == len(ir.nodes)
    assert module(x).shape == x.shape


@FAST
@given(st.data())
def test_renamed_blueprint_builds_the_same_module(data):
    ir = data.draw(seed_irs(max_nodes=5))
    other, _ = data.draw(renamed_and_shuffled(ir))
    a, b = build_module(ir, 8, seed=3), build_module(other, 8, seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(a(x), b(x))


def test_build_is_deterministic_in_seed_and_leaves_global_rng_alone():
    ir = CATALOG["bottleneck"]
    rng_before = torch.get_rng_state()
    a, b, c = (build_module(ir, 16, seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), rng_before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(
        sa["nodes.n0_pointwise_conv.weight"], sc["nodes.n0_pointwise_conv.weight"]
    )


def test_module_has_named_parameters_buffers_and_respects_dtype():
    module = build_module(CATALOG["residual_block"], 8, seed=0, dtype=torch.float64)
    names = dict(module.named_parameters())
    assert names["nodes.n0_conv2d.weight"].shape == (8, 8, 3, 3)
    assert {n for n, _ in module.named_buffers()} == {
        "nodes.n1_batch_norm.running_mean",
        "nodes.n1_batch_norm.running_var",
        "nodes.n4_batch_norm.running_mean",
        "nodes.n4_batch_norm.running_var",
    }
    assert all(p.dtype == torch.float64 for p in module.parameters())
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64)
    module(x)
    assert not torch.equal(module.nodes.n1_batch_norm.running_mean, torch.zeros(8))
    module.eval()
    with torch.no_grad():
        assert module(x).dtype == torch.float64


def test_module_rejects_wrong_input_channels():
    module = build_module(CATALOG["norm"], 8, seed=0)
    with pytest.raises(ValueError, match=r"built for 8 channels expects \(N, 8, H, W\), got"):
        module(torch.zeros(1, 4, 2, 2))


def test_build_rejects_non_seed_blueprints_and_bad_widths():
    b = IRBuilder("pooled")
    with pytest.raises(SeedContractError):
        build_module(b.build(b.add("global_avg_pool", b.input)), 8, seed=0)
    with pytest.raises(ValueError, match="positive"):
        build_module(CATALOG["norm"], 0, seed=0)


def test_group_norm_groups_adapt_to_any_width():
    b = IRBuilder("gn")
    ir = b.build(b.add("group_norm", b.input, groups=8))
    for channels in (1, 6, 12):
        assert (
            build_module(ir, channels, seed=0)(torch.randn(2, channels, 3, 3)).shape[1] == channels
        )


def test_deepcopy_and_state_dict_round_trip():
    module = build_module(CATALOG["squeeze_excitation"], 16, seed=0)
    clone = copy.deepcopy(module)
    assert clone.plan is module.plan
    fresh = build_module(CATALOG["squeeze_excitation"], 16, seed=9)
    fresh.load_state_dict(module.state_dict())
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(fresh(x), module(x))
    torch.testing.assert_close(clone(x), module(x))


def test_second_build_is_a_cache_hit_keyed_by_schema_device_and_dtype():
    with Compiler() as compiler:
        ir = CATALOG["lowrank_adapter"]
        first = compiler.build(ir, 16, seed=0)
        second = compiler.build(ir, 16, seed=1)
        assert (compiler.stats.hits, compiler.stats.misses) == (1, 1)
        assert second.plan is first.plan
        compiler.build(ir, 32, seed=0)
        compiler.build(ir, 16, seed=0, dtype=torch.float64)
        compiler.build(CATALOG["norm"], 16, seed=0)
        stats = compiler.stats
        assert (stats.hits, stats.misses, stats.entries) == (1, 4, 4)
        compiler.plan(ir, 32)
        assert compiler.stats.hit_ratio == pytest.approx(2 / 6)
        assert compiler.key(ir, 16) == (ir.canonical_hash, 16, "cpu", "float32")


class FakeCompile:
    """A compile_fn whose compiles finish only when the test says so."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.runs = 0
        self.example_grads: list[bool] = []
        self.fail = fail

    def __call__(self, graph, example):
        self.calls += 1
        self.example_grads.append(example[0].requires_grad)
        assert example[1] is True  # warmed up as a training step
        if not self.release.wait(WAIT):
            raise TimeoutError("test never released the compile")
        if self.fail:
            raise RuntimeError("inductor exploded")

        def compiled(*args):
            self.runs += 1
            return graph(*args) * 2  # distinguishable from the eager result

        return compiled


def _pair(compiler, name="depthwise_separable"):
    ir = CATALOG[name]
    return compiler.build(ir, 8, seed=4, compile=True), build_module(ir, 8, seed=4)


def test_forward_during_pending_compile_returns_the_eager_result():
    fake = FakeCompile()
    with Compiler(compile_fn=fake) as compiler:
        module, eager = _pair(compiler)
        assert module.compile_status.state == CompileState.WAITING
        x = torch.randn(2, 8, 4, 4)
        torch.testing.assert_close(module(x), eager(x), rtol=0, atol=0)
        assert module.compile_status.state == CompileState.PENDING
        torch.testing.assert_close(module(x), eager(x), rtol=0, atol=0)
        assert fake.runs == 0

        fake.release.set()
        (handle,) = module.compiles.handles().values()
        assert handle.wait(WAIT).state == CompileState.READY
        assert module.compile_status.state == CompileState.READY
        torch.testing.assert_close(module(x), 2 * eager(x))
        assert fake.runs == 1

        # Shared by later builds of the same blueprint: no second compile.
        again = compiler.build(CATALOG["depthwise_separable"], 8, seed=4, compile=True)
        torch.testing.assert_close(again(x), 2 * eager(x))
        assert fake.calls == 1

        # Eval mode and no_grad are not the warmed-up signature: eager.
        module.eval()
        with torch.no_grad():
            torch.testing.assert_close(module(x), eager.eval()(x))
        assert fake.runs == 2


def test_failed_compile_keeps_eager_and_records_why(caplog):
    fake = FakeCompile(fail=True)
    fake.release.set()
    with Compiler(compile_fn=fake) as compiler:
        module, eager = _pair(compiler)
        x = torch.randn(2, 8, 4, 4)
        module(x)
        (handle,) = module.compiles.handles().values()
        status = handle.wait(WAIT)
        assert status.state == CompileState.FAILED
        assert status.reason == "RuntimeError: inductor exploded"
        assert module.compile_status.state == CompileState.FAILED
        assert "inductor exploded" in caplog.text
        torch.testing.assert_close(module(x), eager(x), rtol=0, atol=0)


def test_each_input_layout_compiles_once_up_to_the_limit():
    fake = FakeCompile()
    fake.release.set()
    with Compiler(compile_fn=fake, max_layouts=2) as compiler:
        module, _ = _pair(compiler)
        for shape in [(2, 8, 4, 4), (2, 8, 4, 4), (3, 8, 4, 4), (2, 8, 5, 5)]:
            module(torch.randn(shape))
        handles = module.compiles.handles()
        assert sorted(shape for shape, _, _ in handles) == [(2, 8, 4, 4), (3, 8, 4, 4)]
        for handle in handles.values():
            handle.wait(WAIT)
        assert fake.calls == 2


def test_input_that_requires_grad_is_its_own_layout():
    fake = FakeCompile()
    fake.release.set()
    with Compiler(compile_fn=fake) as compiler:
        module, _ = _pair(compiler)
        x = torch.randn(2, 8, 4, 4)
        module(x)
        module(x.clone().requires_grad_())
        handles = module.compiles.handles()
        assert sorted(grad for _, _, grad in handles) == [False, True]
        for handle in handles.values():
            handle.wait(WAIT)
        assert fake.example_grads == [False, True]


def test_closed_compiler_starts_no_compiles():
    fake = FakeCompile()
    compiler = Compiler(compile_fn=fake)
    module, eager = _pair(compiler)
    compiler.close()
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(module(x), eager(x), rtol=0, atol=0)
    assert module.compiles.handles() == {}
    assert fake.calls == 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_real_torch_compile_matches_eager_including_batch_norm_statistics():
    b = IRBuilder("bn_probe")
    h = b.add("batch_norm", b.add("pointwise_conv", b.input, out_channels=Width(den=2)))
    ir = b.build(b.add("pointwise_conv", b.add("relu", h), out_channels=C, init_scale=0.1))
    x = torch.randn(4, 8, 3, 5, generator=torch.Generator().manual_seed(0))
    with Compiler() as compiler:
        module = compiler.build(ir, 8, seed=0, compile=True)
        module(x)
        (handle,) = module.compiles.handles().values()
        assert handle.wait(300).state == CompileState.READY, handle.status.reason
        compiled = compiler.build(ir, 8, seed=0, compile=True)
        eager = build_module(ir, 8, seed=0)
        with torch.profiler.profile() as prof:
            out_c = compiled(x)
            out_c.square().sum().backward()
        out_e = eager(x)
        out_e.square().sum().backward()
    assert any("Torch-Compiled Region" in e.name for e in prof.events())
    torch.testing.assert_close(out_c, out_e)
    for (name, p), q in zip(compiled.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    # The compiled graph updates the module's running statistics in place.
    assert not torch.equal(compiled.nodes.n1_batch_norm.running_mean, torch.zeros(4))
    for (name, buf), ref in zip(compiled.named_buffers(), eager.buffers(), strict=True):
        torch.testing.assert_close(buf, ref, msg=name)
