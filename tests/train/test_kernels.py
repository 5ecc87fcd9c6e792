"""The fused GPU kernels of `hive_train.kernels`, run by Triton's interpreter on the CPU.

The interpreter executes the very kernel code (indexing, masks, partial tiles, the padded rank)
with NumPy. Its bf16 emulation is not faithful, so the checks run in float32, where the kernels
must agree with PyTorch to float32 rounding; on a GPU the benchmark checks them in bf16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("triton")

from hive_train.kernels import dora_grads, dora_output  # noqa: E402

# (tokens, outputs, rank): tiles of 64 x 128 cut through the middle, a rank below and above 16,
# a single token
SHAPES = [(200, 300, 12), (64, 128, 16), (1, 5, 3), (130, 257, 40)]

CHECK = textwrap.dedent(
    """
    import json, sys, torch
    from hive_train.kernels import launch_dora_grads, launch_dora_output
    torch.manual_seed(0)
    out = []
    for m, n, r in json.loads(sys.argv[1]):
        y0, xa, b = torch.randn(m, n), torch.randn(m, r), torch.randn(n, r)
        g = torch.rand(n) + 0.5
        ref = torch.addmm(y0, xa, b.t()) * g
        y = launch_dora_output(y0.clone(), xa, b, g)
        dy = torch.randn(m, n)
        dyg, dm = launch_dora_grads(dy, y, g)
        ref_dm = (dy * y).sum(0)
        out.append({
            "shape": [m, n, r],
            "forward": ((y - ref).norm() / ref.norm()).item(),
            "dyg_exact": bool(torch.equal(dyg, dy * g)),
            "dm": ((dm - ref_dm).norm() / ref_dm.norm()).item(),
            "dm_repeatable": bool(torch.equal(dm, launch_dora_grads(dy, y, g)[1])),
        })
    print(json.dumps(out))
    """
)


def test_dora_kernels_in_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}  # read when the kernels are defined
    done = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(SHAPES)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert [r["shape"] for r in results] == [list(s) for s in SHAPES]
    for r in results:
        assert r["forward"] < 1e-6, r
        assert r["dyg_exact"], r
        assert r["dm"] < 1e-6, r
        assert r["dm_repeatable"], r


def test_dora_fallbacks_round_once():
    """Off the GPU the same contract holds: float32 arithmetic, one rounding to the input dtype."""
    gen = torch.Generator().manual_seed(1)
    y0, xa = torch.randn(33, 70, generator=gen).bfloat16(), torch.randn(33, 12, generator=gen).bfloat16()
    b, g = torch.randn(70, 12, generator=gen).bfloat16(), torch.rand(70, generator=gen) + 0.5
    y = dora_output(y0.clone(), xa, b, g)
    assert y.dtype == torch.bfloat16
    exact = (y0.double() + xa.double() @ b.double().t()) * g.double()
    # rounded once: within half a bf16 ulp (2**-8 relative: 8 significant bits) of the exact value
    assert ((y.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-30).all()
    dy = torch.randn(33, 70, generator=gen).bfloat16()
    dyg, dm = dora_grads(dy, y, g)
    assert dyg.dtype == torch.bfloat16 and dm.dtype == torch.float32
    assert torch.equal(dyg, (dy.float() * g).bfloat16())  # one product, one rounding
    assert torch.allclose(dm, (dy.double() * y.double()).sum(0).float(), rtol=1e-5, atol=1e-6)
