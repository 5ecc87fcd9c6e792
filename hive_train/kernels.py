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
- `apply_fast_kernels(model)`: route a Qwen3-style model's MLPs through `swiglu`, its RMSNorms
  through `hive_train.rmsnorm` (no weight gradient), Qwen3's per-head q/k norms and RoPE through
  one kernel each way (`rope.norm_rope`, in a training forward without a cache), all on this
  model instance only, and its family's `apply_rotary_pos_emb` through `hive_train.rope` (a
  module global, with the stock function kept for whatever the kernel does not cover).
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from hive_train import lean

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


if triton is not None:

    @triton.jit
    def _dora_fused_fwd(yf_ptr, b_ptr, g_ptr, y_ptr, xa_ptr, M, N, R, stride_f,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):  # fmt: skip
        # yf (M, stride_f) = x·[W; A; 0]ᵀ: columns [0, N) hold x·Wᵀ, [N, N + R) hold x·Aᵀ, the rest
        # of the P = stride_f - N padded columns zeros. y (M, N) = g * (yf[:, :N] + xa·bᵀ), and xa
        # (M, P) copied out contiguous (backward keeps it, and a view would keep all of yf alive).
        rm = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        rr = tl.arange(0, BLOCK_R)
        xa_mask = (rm[:, None] < M) & (rr[None, :] < stride_f - N)
        xa = tl.load(yf_ptr + rm[:, None] * stride_f + N + rr[None, :], mask=xa_mask, other=0.0)
        bt = tl.load(
            b_ptr + rn[None, :] * R + rr[:, None], mask=(rn[None, :] < N) & (rr[:, None] < R), other=0.0
        )
        inside = (rm[:, None] < M) & (rn[None, :] < N)
        y0 = tl.load(yf_ptr + rm[:, None] * stride_f + rn[None, :], mask=inside, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + rn, mask=rn < N, other=0.0)
        out = (y0 + tl.dot(xa, bt)) * g[None, :]
        tl.store(y_ptr + rm[:, None] * N + rn[None, :], out.to(y_ptr.dtype.element_ty), mask=inside)
        if tl.program_id(1) == 0:
            tl.store(xa_ptr + rm[:, None] * (stride_f - N) + rr[None, :], xa, mask=xa_mask)

    @triton.jit
    def _dora_fused_bwd(dy_ptr, y_ptr, g_ptr, b_ptr, gb_ptr, part_ptr, M, N, R, stride_g,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr):  # fmt: skip
        # One program per BLOCK_M rows, walking all N columns: gb[:, :N] = g * dy, and
        # gb[:, N:stride_g] = (g * dy)·b (zeros past R), so that one GEMM gb·[W; A; 0] gives the
        # input gradient; part[pid, n] = this block's sum over rows of dy * y (magnitude gradient).
        pid = tl.program_id(0)
        rm = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
        rr = tl.arange(0, BLOCK_R)
        acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            rn = n0 + tl.arange(0, BLOCK_N)
            inside = (rm[:, None] < M) & (rn[None, :] < N)
            offs = rm[:, None] * N + rn[None, :]
            dy = tl.load(dy_ptr + offs, mask=inside, other=0.0).to(tl.float32)
            y = tl.load(y_ptr + offs, mask=inside, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + rn, mask=rn < N, other=0.0)
            dyg = (dy * g[None, :]).to(gb_ptr.dtype.element_ty)
            tl.store(gb_ptr + rm[:, None] * stride_g + rn[None, :], dyg, mask=inside)
            b = tl.load(
                b_ptr + rn[:, None] * R + rr[None, :], mask=(rn[:, None] < N) & (rr[None, :] < R), other=0.0
            )
            acc += tl.dot(dyg, b)
            tl.store(part_ptr + pid * N + rn, tl.sum(dy * y, axis=0), mask=rn < N)
        low = (rm[:, None] < M) & (rr[None, :] < stride_g - N)
        tl.store(gb_ptr + rm[:, None] * stride_g + N + rr[None, :], acc.to(gb_ptr.dtype.element_ty), mask=low)


if triton is not None:

    @triton.jit
    def _ce_rows(logits_ptr, targets_ptr, weights_ptr, loss_ptr, V, stride,
                 HAS_WEIGHTS: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
        # One row of logits per program: loss = (logsumexp - logit[target]) * weight, and with
        # WRITE_GRAD the row is overwritten by its gradient (softmax - onehot) * weight.
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + row * stride
        cols = tl.arange(0, BLOCK_V)
        run_max = tl.full((BLOCK_V,), float("-inf"), tl.float32)
        run_sum = tl.zeros((BLOCK_V,), tl.float32)
        for v0 in range(0, V, BLOCK_V):  # per-lane online max and sum of exponentials
            x = tl.load(base + v0 + cols, mask=v0 + cols < V, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(run_max, x)
            scale = tl.where(new_max == float("-inf"), 0.0, tl.exp(run_max - new_max))
            run_sum = run_sum * scale + tl.where(x == float("-inf"), 0.0, tl.exp(x - new_max))
            run_max = new_max
        top = tl.max(run_max, axis=0)
        lse = top + tl.log(tl.sum(run_sum * tl.exp(run_max - top), axis=0))
        target = tl.load(targets_ptr + row)
        weight = tl.load(weights_ptr + row).to(tl.float32) if HAS_WEIGHTS else 1.0
        picked = tl.load(base + target).to(tl.float32)
        tl.store(loss_ptr + row, (lse - picked) * weight)
        if WRITE_GRAD:
            for v0 in range(0, V, BLOCK_V):
                inside = v0 + cols < V
                x = tl.load(base + v0 + cols, mask=inside, other=0.0).to(tl.float32)
                p = tl.exp(x - lse) - tl.where(v0 + cols == target, 1.0, 0.0)
                tl.store(base + v0 + cols, (p * weight).to(logits_ptr.dtype.element_ty), mask=inside)


_BLOCK = 2048
_TILE_M, _TILE_N = 64, 128


def _swiglu_out(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(gate)
    _swiglu_fwd[(triton.cdiv(gate.numel(), _BLOCK),)](gate, up, out, gate.numel(), BLOCK=_BLOCK)
    return out


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        gate, up = gate.contiguous(), up.contiguous()
        out = torch.empty_like(gate)
        n = gate.numel()
        _swiglu_fwd[(triton.cdiv(n, _BLOCK),)](gate, up, out, n, BLOCK=_BLOCK)
        ctx.save_for_backward(gate, up)
        lean.mark(out, _swiglu_out, gate, up)  # in a lean layer, rebuilt in backward
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


def rank_padding(rank: int) -> int:
    """Rows that hold A (and zeros) under W in the stacked weight [W; A; 0]: the rank rounded up to a
    multiple of 16, so the GEMM's output rows stay 32-byte aligned and tl.dot gets K >= 16."""
    return -(-rank // 16) * 16


def dora_forward(
    yf: torch.Tensor, n: int, b: torch.Tensor, g: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A DoRA layer's output from one GEMM over the stacked weight: yf = x·[W; A; 0]ᵀ, (M, n + P).

    Returns (y, xa): y = g ⊙ (yf[:, :n] + xa·bᵀ) summed and scaled in float32 and rounded once to
    yf's dtype, (M, n) contiguous; xa = yf[:, n:], all P padded columns (zeros past R: sizes that
    are multiples of 16 keep the later low-rank GEMMs on aligned kernels), contiguous. b (n, R)
    holds s·B in yf's dtype, g (n,) the float32 row scales.
    """
    r = b.shape[1]
    if _fused(yf, b, g) and yf.dtype == b.dtype and g.dtype == torch.float32 and yf.shape[1] >= n + r:
        return launch_dora_forward(yf, n, b, g)
    xa = yf[:, n:].contiguous()
    y = torch.addmm(yf[:, :n].float(), xa[:, :r].float(), b.float().t()).mul_(g).to(yf.dtype)
    return y, xa


def dora_backward(
    dy: torch.Tensor, y: torch.Tensor, g: torch.Tensor, b: torch.Tensor, padded: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient-side ends of a DoRA layer on the stacked weight, in one pass over dy.

    dy, y (M, n): the output gradient and the layer's output; g (n,) float32; b (n, R) = s·B.
    Returns (gb, dm): gb (M, n + `padded`) holds [g ⊙ dy | (g ⊙ dy)·b | 0] in dy's dtype, so
    gb·[W; A; 0] is the input gradient and gb[:, n:n + R] the low-rank gradient (g ⊙ dy)·b; dm (n,)
    float32 is Σ_t dy·y per column, reduced in a fixed order (reruns give the same bits).
    """
    m, n = dy.shape
    r = b.shape[1]
    if _fused(dy, y, g, b) and dy.dtype == y.dtype == b.dtype and g.dtype == torch.float32:
        return launch_dora_backward(dy, y, g, b, padded)
    dy32 = dy.float()
    gb = dy.new_zeros(m, n + padded)
    dyg = (dy32 * g).to(dy.dtype)
    gb[:, :n] = dyg
    gb[:, n : n + r] = dyg @ b
    return gb, (dy32 * y.float()).sum(0)


def cross_entropy_rows(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, write_grad: bool
) -> torch.Tensor | None:
    """Per-row cross-entropy of half-precision `logits` (N, V) in float32, in one kernel; with
    `write_grad` each row is overwritten by its gradient (softmax - onehot(target)) · weight,
    rounded once. None when the kernel does not apply (the caller runs PyTorch instead)."""
    if not (_fused(logits, targets) and (weights is None or weights.is_cuda)):
        return None
    return launch_cross_entropy_rows(logits, targets, weights, write_grad)


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


# model families whose attention calls the rotate-half `apply_rotary_pos_emb(q, k, cos, sin)`
ROPE_FAMILIES = ("qwen3", "qwen2", "llama", "mistral")


def _attention_forward(self, hidden_states, position_embeddings=None, attention_mask=None, *args, **kwargs):
    """Qwen3's attention forward with q_norm/k_norm and RoPE fused (`rope.norm_rope`): the same
    operations as transformers' in the same order, for a forward without a cache through hive's
    attention function; anything else runs the stock forward."""
    from hive_train.attention import NAME, hive_attention
    from hive_train.rope import norm_rope, on_kernel_device

    cached = kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None
    if (
        args
        or cached
        or position_embeddings is None
        or not on_kernel_device(hidden_states)
        or self.config._attn_implementation != NAME
        or getattr(self, "sliding_window", None) is not None
    ):
        return self._hive_stock_forward(hidden_states, position_embeddings, attention_mask, *args, **kwargs)
    cos, sin = position_embeddings
    heads = (*hidden_states.shape[:-1], -1, self.head_dim)
    query = norm_rope(self.q_proj(hidden_states).view(heads), self.q_norm, cos, sin)
    key = norm_rope(self.k_proj(hidden_states).view(heads), self.k_norm, cos, sin)
    value = self.v_proj(hidden_states).view(heads).transpose(1, 2)
    for name in ("cache", "past_key_values"):
        kwargs.pop(name, None)
    out, weights = hive_attention(
        self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs
    )
    return self.o_proj(out.reshape(*hidden_states.shape[:-1], -1).contiguous()), weights


def _mlp_forward(self, x):
    return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def apply_fast_kernels(model: nn.Module) -> list[str]:
    """Patch this model instance's MLPs and RMSNorms, and its family's RoPE function.

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
    attentions = [
        m
        for m in model.modules()
        if getattr(base.config, "model_type", "") == "qwen3"
        and all(hasattr(m, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"))
        and getattr(m, "attention_dropout", 0.0) == 0.0
        and next(m.parameters()).is_cuda
    ]
    for attention in attentions:
        if not hasattr(attention, "_hive_stock_forward"):
            attention._hive_stock_forward = attention.forward
        attention.forward = types.MethodType(_attention_forward, attention)
    if attentions:
        applied.append(f"fused q/k norm + RoPE x{len(attentions)}")
    from hive_train.rmsnorm import apply_frozen_rms_norm

    norms = apply_frozen_rms_norm(base)
    if norms:
        applied.append(f"frozen-weight RMSNorm x{norms}")
    if getattr(base.config, "model_type", "") in ROPE_FAMILIES and next(base.parameters()).is_cuda:
        import importlib

        from hive_train.rope import apply_rope_kernel

        family = base.config.model_type
        if apply_rope_kernel(importlib.import_module(f"transformers.models.{family}.modeling_{family}")):
            applied.append("RoPE kernel")
    return applied


def launch_dora_forward(yf, n, b, g, block_m=_TILE_M, block_n=_TILE_N, num_warps=4):
    m, r = yf.shape[0], b.shape[1]
    y = torch.empty(m, n, dtype=yf.dtype, device=yf.device)
    xa = torch.empty(m, yf.shape[1] - n, dtype=yf.dtype, device=yf.device)
    block_r = max(16, triton.next_power_of_2(yf.shape[1] - n))
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _dora_fused_fwd[grid](
        yf, b, g, y, xa, m, n, r, yf.stride(0),
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_R=block_r, num_warps=num_warps,
    )  # fmt: skip
    return y, xa


def _rows_per_program(m: int) -> int:
    # the backward walks whole rows, so parallelism comes from rows alone: small micro-batches get
    # smaller row blocks to keep every multiprocessor busy (tl.dot needs at least 16)
    for rows in (64, 32):
        if m >= rows * 256:
            return rows
    return 16


def launch_dora_backward(dy, y, g, b, padded, rows=None, block_n=_TILE_N, num_warps=4):
    m, n = dy.shape
    r = b.shape[1]
    rows = rows or _rows_per_program(m)
    blocks = triton.cdiv(m, rows)
    gb = torch.empty(m, n + padded, dtype=dy.dtype, device=dy.device)
    part = torch.empty(blocks, n, dtype=torch.float32, device=dy.device)
    block_r = max(16, triton.next_power_of_2(padded))
    _dora_fused_bwd[(blocks,)](
        dy, y, g, b, gb, part, m, n, r, n + padded,
        BLOCK_M=rows, BLOCK_N=block_n, BLOCK_R=block_r, num_warps=num_warps,
    )  # fmt: skip
    return gb, part.sum(0)


def launch_cross_entropy_rows(logits, targets, weights, write_grad):
    n, v = logits.shape
    loss = torch.empty(n, dtype=torch.float32, device=logits.device)
    if n:
        _ce_rows[(n,)](
            logits, targets, weights if weights is not None else loss, loss, v, logits.stride(0),
            HAS_WEIGHTS=weights is not None, WRITE_GRAD=write_grad, BLOCK_V=2048,
        )  # fmt: skip
    return loss
