"""The Triton blend kernels against the PyTorch reference, under TRITON_INTERPRET=1.

Triton reads TRITON_INTERPRET when a kernel is decorated (at import), and other
test modules may import `blueprints.kernels` first; so the kernels run in a
fresh subprocess with the variable set, on CPU tensors, once per module.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from blueprints.kernels import blend

CASES = [
    {"shape": shape, "dtype": dtype, "alpha": alpha, "layout": layout}
    for shape, layout in [
        ([2, 3, 4, 5], "contiguous"),
        ([1, 1, 1, 1], "contiguous"),
        ([3, 16, 17, 19], "contiguous"),  # several blocks and a ragged tail
        ([4, 8, 6, 6], "channels_last"),
        ([4, 8, 6, 6], "seed_transposed"),  # mismatched strides: copied to contiguous
        ([0, 3, 4, 4], "contiguous"),
    ]
    for dtype in ["float32", "float16", "bfloat16"]
    for alpha in [0.0, 0.37, 1.0, -2.5]
]

SCRIPT = r"""
import json, sys
import torch
from triton.runtime.interpreter import InterpretedFunction
from blueprints.kernels import blend as kernels_blend
from blueprints.kernels.triton_blend import BlendFunction, _blend_fwd_kernel, _scale_kernel

assert isinstance(_blend_fwd_kernel, InterpretedFunction)
assert isinstance(_scale_kernel, InterpretedFunction)
results = []
for i, case in enumerate(json.load(sys.stdin)):
    gen = torch.Generator().manual_seed(i)
    dtype = getattr(torch, case["dtype"])
    h = torch.randn(case["shape"], generator=gen).to(dtype)
    s = torch.randn(case["shape"], generator=gen).to(dtype)
    g = torch.randn(case["shape"], generator=gen).to(dtype)
    if case["layout"] == "channels_last":
        h, s, g = (t.to(memory_format=torch.channels_last) for t in (h, s, g))
    elif case["layout"] == "seed_transposed":
        s = s.transpose(2, 3).contiguous().transpose(2, 3)
    h.requires_grad_()
    s.requires_grad_()
    alpha = case["alpha"]
    out = BlendFunction.apply(h, s, alpha)  # CPU tensors: only the interpreter can run this
    out.backward(g)
    hr, sr = h.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    ref = hr + alpha * sr
    ref.backward(g)

    def err(a, b):
        return 0.0 if a.numel() == 0 else (a.float() - b.float()).abs().max().item()

    fp32_math = (h.detach().float() + alpha * s.detach().float()).to(dtype)
    results.append({
        "out": err(out, ref),
        "out_vs_fp32_math": err(out, fp32_math),
        "grad_host": err(h.grad, hr.grad),
        "grad_seed": err(s.grad, sr.grad),
        "scale": max([1.0, *(t.detach().abs().max().item() for t in (ref, g) if t.numel())]),
        "same_dtype": out.dtype == ref.dtype and s.grad.dtype == dtype,
        "same_layout": out.stride() == h.stride(),
        "public_blend_on_cpu": err(kernels_blend(h, s, alpha), ref),
    })
json.dump(results, sys.stdout)
"""


@pytest.fixture(scope="module")
def interpreted() -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        input=json.dumps(CASES),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "index", range(len(CASES)), ids=lambda i: "-".join(map(str, CASES[i].values()))
)
def test_triton_blend_matches_pytorch(interpreted, index):
    case, result = CASES[index], interpreted[index]
    # The kernel rounds once (fp32 math); `h + alpha * s` in fp16/bf16 rounds twice,
    # so they may differ by a few units in the last place of the largest value.
    tol = 3 * torch.finfo(getattr(torch, case["dtype"])).eps * result["scale"]
    if case["dtype"] != "bfloat16":  # the interpreter (numpy) truncates to bfloat16
        assert result["out_vs_fp32_math"] == 0.0
    assert result["out"] <= tol
    assert result["grad_host"] == 0.0
    assert result["grad_seed"] <= tol
    assert result["same_dtype"]
    assert result["public_blend_on_cpu"] == 0.0
    if case["layout"] != "seed_transposed":
        assert result["same_layout"]


def test_public_blend_is_the_pytorch_expression_off_cuda():
    h = torch.randn(2, 3, 4, 4, requires_grad=True)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = blend(h, s, 0.25)
    out.sum().backward()
    torch.testing.assert_close(out, h + 0.25 * s)
    torch.testing.assert_close(s.grad, torch.full_like(s, 0.25))


def test_kernel_launcher_rejects_mismatched_inputs():
    from blueprints.kernels.triton_blend import blend_forward

    with pytest.raises(ValueError, match="equal shape, dtype and device"):
        blend_forward(torch.zeros(2, 3), torch.zeros(3, 2), 0.5)
    with pytest.raises(ValueError, match="equal shape, dtype and device"):
        blend_forward(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.float16), 0.5)
