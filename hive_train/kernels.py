"""Fused elementwise kernels for the GPU path, with plain PyTorch fallbacks.

- `swiglu(gate, up)`: silu(gate) * up in one pass forward and one pass backward (Triton on CUDA).
  Unlike Liger's SwiGLU it never writes into its saved inputs during backward: the `up` projection's
  output is also saved by the DoRA layer (for the magnitude gradient) and must stay intact.
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


_BLOCK = 2048


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
