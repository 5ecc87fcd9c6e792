"""The fused GPU kernels of `hive_train.kernels`, run by Triton's interpreter on the CPU.

The interpreter executes the very kernel code (indexing, masks, partial tiles, the padded rank)
with NumPy. Its bf16 emulation is not faithful, so the checks run in float32, where the kernels
must agree with PyTorch to float32 rounding; on a GPU the benchmark checks them in bf16.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

pytest.importorskip("triton")

from train_helpers import TINY_MODEL, interpret_many  # noqa: E402

from hive_train.kernels import dora_grads, dora_output  # noqa: E402

# (tokens, outputs, rank): tiles of 64 x 128 cut through the middle, a rank below and above 16,
# a single token
SHAPES = [(200, 300, 12), (64, 128, 16), (1, 5, 3), (130, 257, 40)]

CHECK = textwrap.dedent(
    """
    import json, sys, torch
    from hive_train.kernels import (
        launch_dora_backward, launch_dora_forward, launch_dora_grads, launch_dora_output, rank_padding,
    )
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
        # the stacked-weight pair: yf = x·[W; A; 0]ᵀ in, y and xa out; [g⊙dy | (g⊙dy)·b | 0] back
        p = rank_padding(r)
        yf = torch.randn(m, n + p)
        y2, xa2 = launch_dora_forward(yf, n, b, g)
        ref2 = torch.addmm(yf[:, :n], yf[:, n : n + r], b.t()) * g
        gb, dm2 = launch_dora_backward(dy, y2, g, b, p)
        low = (dy * g) @ b
        ref_dm2 = (dy * y2).sum(0)
        out[-1].update({
            "stacked_forward": ((y2 - ref2).norm() / ref2.norm()).item(),
            "stacked_xa_exact": bool(torch.equal(xa2, yf[:, n:])),
            "stacked_dyg_exact": bool(torch.equal(gb[:, :n], dy * g)),
            "stacked_low": ((gb[:, n : n + r] - low).norm() / low.norm()).item(),
            "stacked_zeros": bool((gb[:, n + r :] == 0).all()),
            "stacked_dm": ((dm2 - ref_dm2).norm() / ref_dm2.norm()).item(),
            "stacked_dm_repeatable": bool(torch.equal(dm2, launch_dora_backward(dy, y2, g, b, p)[1])),
        })
    print(json.dumps(out))
    """
)


# rows of a head (128), of a hidden state that is not a power of two (96), a partial last block
RMS_SHAPES = [(70, 128), (5, 96), (33, 1024)]


@pytest.fixture(scope="module")
def interpreted():
    """Every kernel check of this module, run in one Triton-interpreter process."""
    return interpret_many(
        {
            "dora": (CHECK, [json.dumps(SHAPES)]),
            "rms": (RMS_CHECK, [json.dumps(RMS_SHAPES)]),
            "head": (HEAD_CHECK, []),
            "norm_rope": (NORM_ROPE_CHECK, []),
            "attention": (ATTENTION_CHECK, [str(TINY_MODEL)]),  # last: it wraps rope._NormRope.apply
        }
    )


def checked(interpreted, name):
    result = interpreted[name]
    assert "error" not in result, result.get("error") if isinstance(result, dict) else result
    return result


def test_dora_kernels_in_triton_interpreter(interpreted):
    results = checked(interpreted, "dora")
    assert [r["shape"] for r in results] == [list(s) for s in SHAPES]
    for r in results:
        assert r["forward"] < 1e-6, r
        assert r["dyg_exact"], r
        assert r["dm"] < 1e-6, r
        assert r["dm_repeatable"], r
        assert r["stacked_forward"] < 1e-6 and r["stacked_xa_exact"], r
        assert r["stacked_dyg_exact"] and r["stacked_zeros"], r
        assert r["stacked_low"] < 1e-6 and r["stacked_dm"] < 1e-6, r
        assert r["stacked_dm_repeatable"], r


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


def test_stacked_dora_fallbacks_match_the_separate_ends():
    """Off the GPU the stacked-weight ends compute what the separate ends compute."""
    from hive_train.kernels import dora_backward, dora_forward, rank_padding

    gen = torch.Generator().manual_seed(2)
    m, n, r = 37, 90, 12
    p = rank_padding(r)
    x, w, a = (torch.randn(*s, generator=gen) for s in ((m, 64), (n, 64), (r, 64)))
    b, g = torch.randn(n, r, generator=gen), torch.rand(n, generator=gen) + 0.5
    stacked = torch.cat([w, a, torch.zeros(p - r, 64)])
    y, xa = dora_forward(x @ stacked.t(), n, b, g)
    y_ref = dora_output(x @ w.t(), x @ a.t(), b, g)
    assert torch.allclose(y, y_ref, rtol=1e-5, atol=1e-5) and torch.allclose(xa[:, :r], x @ a.t(), atol=1e-5)
    assert xa.shape == (m, p) and (xa[:, r:] == 0).all()
    dy = torch.randn(m, n, generator=gen)
    gb, dm = dora_backward(dy, y, g, b, p)
    dyg, dm_ref = dora_grads(dy, y, g)
    assert torch.equal(gb[:, :n], dyg) and torch.equal(dm, dm_ref)
    assert (gb[:, n + r :] == 0).all()
    dx_ref = dyg @ w + (dyg @ b) @ a
    assert torch.allclose(gb @ stacked, dx_ref, rtol=1e-4, atol=1e-4)


RMS_CHECK = textwrap.dedent(
    """
    import json, sys, torch
    from hive_train.rmsnorm import launch_backward, launch_forward
    torch.manual_seed(0)
    out = []
    for rows, n in json.loads(sys.argv[1]):
        x = torch.randn(rows, n, dtype=torch.float64).float() * 3
        w = torch.rand(n) + 0.5
        y, rstd = launch_forward(x, w, 1e-6)
        xd = x.double().requires_grad_()
        ref = w.double() * xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6)
        dy = torch.randn(rows, n)
        ref.backward(dy.double())
        dx = launch_backward(dy, x, w, rstd)
        out.append({
            "shape": [rows, n],
            "forward": ((y.double() - ref.detach()).norm() / ref.detach().norm()).item(),
            "backward": ((dx.double() - xd.grad).norm() / xd.grad.norm()).item(),
        })
    print(json.dumps(out))
    """
)


def test_frozen_rms_norm_in_triton_interpreter(interpreted):
    """Forward and input gradient against float64 autograd (`RMS_SHAPES`)."""
    results = checked(interpreted, "rms")
    assert [r["shape"] for r in results] == [list(s) for s in RMS_SHAPES]
    for r in results:
        assert r["forward"] < 1e-6 and r["backward"] < 1e-5, r


HEAD_CHECK = textwrap.dedent(
    """
    import json, torch
    from hive_train.kernels import launch_cross_entropy_rows
    from hive_train.rope import launch
    torch.manual_seed(0)
    out = {}
    # cross-entropy rows: a vocabulary over several 2048-wide blocks, weights with a zero
    for n, v, weighted in ((5, 5000, True), (3, 700, False)):
        logits = torch.randn(n, v) * 4
        targets = torch.randint(0, v, (n,))
        weights = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5])[:n] if weighted else None
        ref = torch.nn.functional.cross_entropy(logits.double(), targets, reduction="none")
        grad = torch.softmax(logits.double(), -1)
        grad[torch.arange(n), targets] -= 1
        if weighted:
            ref, grad = ref * weights.double(), grad * weights.double()[:, None]
        work = logits.clone()
        loss = launch_cross_entropy_rows(work, targets, weights, True)
        kept = logits.clone()
        loss_only = launch_cross_entropy_rows(kept, targets, weights, False)
        out[f"ce_{n}_{v}"] = {
            "loss": ((loss.double() - ref).abs().max() / ref.abs().max()).item(),
            "grad": ((work.double() - grad).norm() / grad.norm()).item(),
            "loss_only_untouched": bool(torch.equal(kept, logits)) and bool(torch.equal(loss_only, loss)),
        }
    # RoPE on a transposed view (B, T, H, D) -> (B, H, T, D), as Qwen3's attention hands it over
    b, t, h, d = 2, 9, 3, 16
    x = torch.randn(b, t, h, d).transpose(1, 2)
    cos, sin = torch.randn(1, t, d), torch.randn(1, t, d)
    def rotate_half(z):
        return torch.cat((-z[..., d // 2 :], z[..., : d // 2]), dim=-1)
    xd = x.double().requires_grad_()
    ref = xd * cos.double()[:, None] + rotate_half(xd) * sin.double()[:, None]
    y = launch(x, cos, sin)
    dy = torch.randn(b, t, h, d).transpose(1, 2)
    ref.backward(dy.double())
    dx = launch(dy, cos, sin, backward=True)
    out["rope"] = {
        "forward": ((y.double() - ref.detach()).norm() / ref.detach().norm()).item(),
        "backward": ((dx.double() - xd.grad).norm() / xd.grad.norm()).item(),
        "same_layout": y.stride() == x.stride() and dx.stride() == dy.stride(),
    }
    print(json.dumps(out))
    """
)


def test_loss_and_rope_kernels_in_triton_interpreter(interpreted):
    """The LM-head loss kernel (loss rows and the in-place gradient, weighted and not) and the RoPE
    kernel (forward and its transpose, in the input's own strided layout) against float64."""
    results = checked(interpreted, "head")
    for name, r in results.items():
        if name.startswith("ce_"):
            assert r["loss"] < 1e-5 and r["grad"] < 1e-5 and r["loss_only_untouched"], (name, r)
    rope = results["rope"]
    assert rope["forward"] < 1e-6 and rope["backward"] < 1e-6 and rope["same_layout"], rope


def test_rope_switch_keeps_the_stock_function_off_cuda():
    """`apply_rope_kernel` swaps a model module's `apply_rotary_pos_emb` once (idempotent) and the
    drop-in hands CPU tensors, and calls it does not cover, to the stock function unchanged."""
    import types

    from transformers.models.qwen3 import modeling_qwen3

    from hive_train.rope import apply_rope_kernel

    module = types.SimpleNamespace(apply_rotary_pos_emb=modeling_qwen3.apply_rotary_pos_emb)
    assert apply_rope_kernel(module) and apply_rope_kernel(module)
    assert module.apply_rotary_pos_emb.hive_stock is modeling_qwen3.apply_rotary_pos_emb
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(1, 4, 6, 8, generator=gen), torch.randn(1, 2, 6, 8, generator=gen)
    cos, sin = torch.randn(1, 6, 8, generator=gen), torch.randn(1, 6, 8, generator=gen)
    for got, want in zip(
        module.apply_rotary_pos_emb(q, k, cos, sin), modeling_qwen3.apply_rotary_pos_emb(q, k, cos, sin)
    ):
        assert torch.equal(got, want)


NORM_ROPE_CHECK = textwrap.dedent(
    """
    import json, torch
    from hive_train.rmsnorm import launch_forward
    from hive_train.rope import launch, launch_norm_backward
    torch.manual_seed(0)
    b, t, h, d = 2, 7, 3, 16
    x = torch.randn(b, t, h, d) * 3
    w = torch.rand(d) + 0.5
    cos, sin = torch.randn(1, t, d), torch.randn(1, t, d)
    rstd = torch.empty(b * t * h)
    fused = launch(x.transpose(1, 2), cos, sin, norm=(w, rstd), eps=1e-6)
    normed, rstd_ref = launch_forward(x.reshape(-1, d), w, 1e-6)
    apart = launch(normed.view(b, t, h, d).transpose(1, 2), cos, sin)
    again = launch(x.transpose(1, 2), cos, sin, norm=(w, rstd))
    def rotate_half(z):
        return torch.cat((-z[..., d // 2 :], z[..., : d // 2]), dim=-1)
    xd = x.double().requires_grad_()
    n = xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
    q = n.transpose(1, 2)
    ref = q * cos.double()[:, None] + rotate_half(q) * sin.double()[:, None]
    dy = torch.randn(b, t, h, d).transpose(1, 2)
    ref.backward(dy.double())
    dx = launch_norm_backward(dy, x, w, rstd, cos, sin)
    print(json.dumps({
        "forward": ((fused.double() - ref.detach()).norm() / ref.detach().norm()).item(),
        "same_as_apart": ((fused - apart).abs().max()).item(),
        "rstd": ((rstd - rstd_ref).abs().max() / rstd_ref.abs().max()).item(),
        "rebuilt_exactly": bool(torch.equal(again, fused)),
        "layout": fused.stride() == x.transpose(1, 2).stride(),
        "backward": ((dx.double() - xd.grad).norm() / xd.grad.norm()).item(),
    }))
    """
)


def test_fused_norm_and_rope_in_triton_interpreter(interpreted):
    """q_norm + RoPE in one pass each way: forward as the two kernels apart, backward against
    float64 autograd of norm then rotation, and the rebuild from the stored 1/rms exact."""
    r = checked(interpreted, "norm_rope")
    assert r["forward"] < 1e-6 and r["same_as_apart"] < 1e-5 and r["rstd"] < 1e-6, r
    assert r["rebuilt_exactly"] and r["layout"] and r["backward"] < 1e-5, r


ATTENTION_CHECK = textwrap.dedent(
    """
    import json, sys, types, torch
    from transformers import AutoModelForCausalLM
    from hive_train import attention, rope
    from hive_train.kernels import _attention_forward
    attention.register()
    fused = []
    apply = rope._NormRope.apply
    rope._NormRope.apply = lambda *a: fused.append(1) or apply(*a)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], attn_implementation=attention.NAME)
    model.requires_grad_(False)
    layer = model.model.layers[1].self_attn
    torch.manual_seed(0)
    x = torch.randn(2, 9, model.config.hidden_size)
    positions = torch.arange(9)[None].expand(2, 9)
    cos, sin = model.model.rotary_emb(x, positions)
    dy = torch.randn(2, 9, model.config.hidden_size)
    def run():
        xi = x.clone().requires_grad_()
        out = layer(hidden_states=xi, position_embeddings=(cos, sin), attention_mask=None,
                    position_ids=positions, use_cache=False)[0]
        out.backward(dy)
        return out.detach(), xi.grad
    ref, ref_grad = run()
    layer._hive_stock_forward = layer.forward
    layer.forward = types.MethodType(_attention_forward, layer)
    out, grad = run()
    print(json.dumps({
        "forward": ((out - ref).norm() / ref.norm()).item(),
        "backward": ((grad - ref_grad).norm() / ref_grad.norm()).item(),
        "fused_calls": len(fused),
    }))
    """
)


def test_fused_qwen3_attention_forward_matches_transformers_in_triton_interpreter(interpreted):
    """hive's Qwen3 attention forward (q/k norm + RoPE in one kernel each way, then hive's attention
    function) against transformers' own forward on the tiny fixture model, output and input
    gradient, in float32."""
    r = checked(interpreted, "attention")
    assert r["fused_calls"] == 2, r  # q and k went through the fused kernel
    assert r["forward"] < 1e-5 and r["backward"] < 1e-5, r
