"""Fused elementwise kernels for the GPU path, with plain PyTorch fallbacks.

- `swiglu(gate, up)`: silu(gate) * up in one pass forward and one pass backward (Triton on CUDA).
  Unlike Liger's SwiGLU it never writes into its saved inputs during backward: the `up` projection's
  output is also saved by the DoRA layer (for the magnitude gradient) and must stay intact.
- `dora_output(y0, xa, b, g)` and `dora_grads(dy, y, g)`: the element-wise ends of a DoRA layer
  (`hive_train.fast_adapters`), one pass each. Forward: y = g ⊙ (y0 + xa·bᵀ) with the sum and the scale in
  float32 and a single rounding, where y0 = x·Wᵀ is the plain base matmul (the same bf16 numbers
  as peft's base result, so no g ⊙ W copy of the weights is rounded to bf16). Backward: g ⊙ dy for
  the input gradient and the per-column sums Σ_t dy·y for the magnitude gradient, deterministic
  (per-block partial sums, then one small reduction, no atomics).
- `apply_fast_kernels(model)`: route a Qwen3-style model's MLPs through `swiglu` and, when Liger is
  installed, its RMSNorm and RoPE kernels (patched on this model instance only, never SwiGLU).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

try:  # Triton ships with CUDA builds of PyTorch; CPU-only installs run the fallback
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


if triton is not None:

    @triton.jit
    def _swiglu_fwd(gate_ptr, up_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(gate_ptr + offs, mask=mask).to(tl.float32)
        u = tl.load(up_ptr + offs, mask=mask).to(tl.float32)
        out = g * tl.sigmoid(g) * u
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _swiglu_bwd(dout_ptr, gate_ptr, up_ptr, dgate_ptr, dup_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        d = tl.load(dout_ptr + offs, mask=mask).to(tl.float32)
        g = tl.load(gate_ptr + offs, mask=mask).to(tl.float32)
        u = tl.load(up_ptr + offs, mask=mask).to(tl.float32)
        sig = tl.sigmoid(g)
        silu = g * sig
        tl.store(dup_ptr + offs, (d * silu).to(dup_ptr.dtype.element_ty), mask=mask)
        dgate = d * u * sig * (1.0 + g * (1.0 - sig))
        tl.store(dgate_ptr + offs, dgate.to(dgate_ptr.dtype.element_ty), mask=mask)


if triton is not None:

    @triton.jit
    def _dora_out_fwd(y_ptr, xa_ptr, b_ptr, g_ptr, M, N, R,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):  # fmt: skip
        # y (M, N) is read and overwritten in place; xa (M, R), b (N, R), g (N,), all contiguous.
        # Row offsets in int64: M x N passes 2**31 for micro-batches of ~700k tokens.
        rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        rr = tl.arange(0, BLOCK_R)
        xa = tl.load(
            xa_ptr + rm[:, None] * R + rr[None, :], mask=(rm[:, None] < M) & (rr[None, :] < R), other=0.0
        )
        bt = tl.load(
            b_ptr + rn[None, :] * R + rr[:, None], mask=(rn[None, :] < N) & (rr[:, None] < R), other=0.0
        )
        inside = (rm[:, None] < M) & (rn[None, :] < N)
        offs = rm[:, None] * N + rn[None, :]
        y0 = tl.load(y_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + rn, mask=rn < N, other=0.0)
        out = (y0 + tl.dot(xa, bt)) * g[None, :]
        tl.store(y_ptr + offs, out.to(y_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def _dora_grads(dy_ptr, y_ptr, g_ptr, dyg_ptr, part_ptr, M, N,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
        # dyg = g * dy; part[pid_m, n] = sum over this block's rows of dy * y
        pid_m = tl.program_id(0)
        rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        inside = (rm[:, None] < M) & (rn[None, :] < N)
        offs = rm[:, None] * N + rn[None, :]
        dy = tl.load(dy_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + rn, mask=rn < N, other=0.0)
        tl.store(dyg_ptr + offs, (dy * g[None, :]).to(dyg_ptr.dtype.element_ty), mask=inside)
        tl.store(part_ptr + pid_m * N + rn, tl.sum(dy * y, axis=0), mask=rn < N)


_BLOCK = 2048
_TILE_M, _TILE_N = 64, 128


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        gate, up = gate.contiguous(), up.contiguous()
        out = torch.empty_like(gate)
        n = gate.numel()
        _swiglu_fwd[(triton.cdiv(n, _BLOCK),)](gate, up, out, n, BLOCK=_BLOCK)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, dout):
        gate, up = ctx.saved_tensors
        dout = dout.contiguous()
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        n = gate.numel()
        _swiglu_bwd[(triton.cdiv(n, _BLOCK),)](dout, gate, up, dgate, dup, n, BLOCK=_BLOCK)
        return dgate, dup


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up; fused on CUDA when Triton is available."""
    if triton is not None and gate.is_cuda and gate.dtype == up.dtype and gate.shape == up.shape:
        return _SwiGLU.apply(gate, up)
    return F.silu(gate) * up


def _fused(*tensors: torch.Tensor) -> bool:
    """Whether the Triton kernels take these tensors: CUDA, contiguous, half precision (a float32
    run keeps exact float32 arithmetic through the PyTorch versions, TF32 never enters)."""
    return (
        triton is not None
        and all(t.is_cuda and t.is_contiguous() for t in tensors)
        and tensors[0].dtype in (torch.bfloat16, torch.float16)
    )


def dora_output(y0: torch.Tensor, xa: torch.Tensor, b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """g ⊙ (y0 + xa·bᵀ) in float32, rounded once to y0's dtype.

    y0 (M, N) is the base matmul's output and is overwritten in place; xa (M, R) and b (N, R) are
    the adapter's low-rank factors in y0's dtype; g (N,) float32 holds the DoRA row scales.
    """
    if _fused(y0, xa, b, g) and y0.dtype == xa.dtype == b.dtype and g.dtype == torch.float32:
        return launch_dora_output(y0, xa, b, g)
    out = torch.addmm(y0.float(), xa.float(), b.float().t()).mul_(g)
    return y0.copy_(out)


def dora_grads(dy: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(g ⊙ dy in dy's dtype, Σ_t dy·y per column in float32) for a DoRA layer's backward.

    dy and y are (M, N), y the layer's output; g (N,) float32. The column sums are reduced in a
    fixed order, so reruns give the same bits.
    """
    if _fused(dy, y, g) and dy.dtype == y.dtype and g.dtype == torch.float32:
        return launch_dora_grads(dy, y, g)
    dy32 = dy.float()
    return (dy32 * g).to(dy.dtype), (dy32 * y.float()).sum(0)


# The launches on their own, so that tests can run them in Triton's interpreter on the CPU.


def launch_dora_output(y0, xa, b, g):
    m, n = y0.shape
    block_r = max(16, triton.next_power_of_2(b.shape[1]))  # tl.dot takes K >= 16; the rest is masked
    grid = (triton.cdiv(m, _TILE_M), triton.cdiv(n, _TILE_N))
    _dora_out_fwd[grid](y0, xa, b, g, m, n, b.shape[1], BLOCK_M=_TILE_M, BLOCK_N=_TILE_N, BLOCK_R=block_r)
    return y0


def launch_dora_grads(dy, y, g):
    m, n = dy.shape
    blocks = triton.cdiv(m, _TILE_M)
    dyg = torch.empty_like(dy)
    part = torch.empty(blocks, n, dtype=torch.float32, device=dy.device)
    _dora_grads[(blocks, triton.cdiv(n, _TILE_N))](
        dy, y, g, dyg, part, m, n, BLOCK_M=_TILE_M, BLOCK_N=_TILE_N
    )
    return dyg, part.sum(0)


def _mlp_forward(self, x):
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def apply_fast_kernels(model: nn.Module) -> list[str]:
    """Patch this model instance's MLPs (and norms/RoPE through Liger when installed).

    Only SiLU-gated MLPs with gate/up/down projections are touched. Returns what was applied.
    """
    applied = []
    mlps = [
        m
        for m in model.modules()
        if all(hasattr(m, name) for name in ("gate_proj", "up_proj", "down_proj"))
        and getattr(getattr(m, "config", None), "hidden_act", "silu") in ("silu", "swish")
    ]
    for mlp in mlps:
        mlp.forward = types.MethodType(_mlp_forward, mlp)
    if mlps:
        applied.append(f"fused SwiGLU x{len(mlps)}")
    base = getattr(model, "get_base_model", lambda: model)()
    if getattr(base.config, "model_type", "") == "qwen3" and next(base.parameters()).is_cuda:
        try:
            from liger_kernel.transformers import apply_liger_kernel_to_qwen3
        except Exception:  # Liger is optional
            return applied
        apply_liger_kernel_to_qwen3(
            rope=True,
            rms_norm=True,
            swiglu=False,
            cross_entropy=False,
            fused_linear_cross_entropy=False,
            model=base,
        )
        applied.append("Liger RMSNorm + RoPE")
    return applied
