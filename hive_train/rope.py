"""Rotary position embedding in one pass each way, in whatever memory layout q and k arrive.

Qwen3's attention builds q and k as views: the projection's output (B, T, H, D), transposed to
(B, H, T, D). A kernel that wants (B, H, T, D) contiguous copies them (and their gradients) once
per layer and direction, and FlashAttention's varlen entry then wants (T, H, D) contiguous again:
in the step profile those copies and zero-fills cost more than the rotation itself
(BENCHMARKS.md). This kernel reads and writes through the strides it is given and returns its
output (and its input gradient) in the input's own layout, so nothing is copied before or after.

Same rotation as transformers' `apply_rotary_pos_emb` (rotate_half form): with x = [x1, x2] split
at D/2, y1 = x1·cos1 − x2·sin1 and y2 = x2·cos2 + x1·sin2, in float32 with one rounding;
backward is its transpose: dx1 = dy1·cos1 + dy2·sin2, dx2 = dy2·cos2 − dy1·sin1.
"""

from __future__ import annotations

import os

import torch

from hive_train import lean
from hive_train.rmsnorm import normed

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


if triton is not None:

    @triton.jit
    def _row_block(rows, H, T, ROWS: tl.constexpr):
        # this program's block of rows, each (b, t, h) in that order, so consecutive rows are
        # neighbours in the usual (B, T, H, D) storage; which of them exist
        r = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        return r, r < rows, r // (H * T), (r // H) % T, r % H

    @triton.jit
    def _rope(x_ptr, cos_ptr, sin_ptr, y_ptr, w_ptr, rstd_ptr, rows, H, T, eps,
              sxb, sxh, sxt, syb, syh, syt, scb, sct, ssb, sst,
              HALF: tl.constexpr, ROWS: tl.constexpr, BACKWARD: tl.constexpr,
              NORM: tl.constexpr, FIND_RSTD: tl.constexpr):  # fmt: skip
        # the last dimension is contiguous in x, y, cos and sin
        r, live, b, t, h = _row_block(rows, H, T, ROWS)
        c = tl.arange(0, HALF)
        x_row = x_ptr + b * sxb + h * sxh + t * sxt
        y_row = y_ptr + b * syb + h * syh + t * syt
        cos_row = cos_ptr + b * scb + t * sct
        sin_row = sin_ptr + b * ssb + t * sst
        m = live[:, None]
        x1 = tl.load(x_row[:, None] + c[None, :], mask=m, other=0.0).to(tl.float32)
        x2 = tl.load(x_row[:, None] + HALF + c[None, :], mask=m, other=0.0).to(tl.float32)
        out = y_ptr.dtype.element_ty
        if NORM:
            # x is an RMSNorm's input: its output first, rounded as `hive_train.rmsnorm` rounds
            # it; 1/rms found here (and stored) or the forward's own (a lean layer's rebuild)
            if FIND_RSTD:
                rs = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF) + eps)
                tl.store(rstd_ptr + r, rs, mask=live)
                rs = rs[:, None]
            else:
                rs = tl.load(rstd_ptr + r, mask=live, other=0.0)[:, None]
            w1 = tl.load(w_ptr + c).to(tl.float32)[None, :]
            w2 = tl.load(w_ptr + HALF + c).to(tl.float32)[None, :]
            x1 = ((x1 * rs).to(out).to(tl.float32) * w1).to(out).to(tl.float32)
            x2 = ((x2 * rs).to(out).to(tl.float32) * w2).to(out).to(tl.float32)
        c1 = tl.load(cos_row[:, None] + c[None, :], mask=m, other=0.0).to(tl.float32)
        c2 = tl.load(cos_row[:, None] + HALF + c[None, :], mask=m, other=0.0).to(tl.float32)
        s1 = tl.load(sin_row[:, None] + c[None, :], mask=m, other=0.0).to(tl.float32)
        s2 = tl.load(sin_row[:, None] + HALF + c[None, :], mask=m, other=0.0).to(tl.float32)
        if BACKWARD:
            y1 = x1 * c1 + x2 * s2
            y2 = x2 * c2 - x1 * s1
        else:
            y1 = x1 * c1 - x2 * s1
            y2 = x2 * c2 + x1 * s2
        tl.store(y_row[:, None] + c[None, :], y1.to(out), mask=m)
        tl.store(y_row[:, None] + HALF + c[None, :], y2.to(out), mask=m)

    @triton.jit
    def _norm_rope_bwd(dy_ptr, x_ptr, w_ptr, rstd_ptr, cos_ptr, sin_ptr, dx_ptr, rows, H, T,
                       sdb, sdh, sdt, scb, sct, ssb, sst,
                       HALF: tl.constexpr, ROWS: tl.constexpr):  # fmt: skip
        # dy (B, H, T, D) strided; x and dx (B, T, H, D) contiguous
        r, live, b, t, h = _row_block(rows, H, T, ROWS)
        c = tl.arange(0, HALF)
        m = live[:, None]
        dy_row = (dy_ptr + b * sdb + h * sdh + t * sdt)[:, None]
        x_row = (x_ptr + r * (2 * HALF))[:, None]
        cos_row = (cos_ptr + b * scb + t * sct)[:, None]
        sin_row = (sin_ptr + b * ssb + t * sst)[:, None]
        dy1 = tl.load(dy_row + c[None, :], mask=m, other=0.0).to(tl.float32)
        dy2 = tl.load(dy_row + HALF + c[None, :], mask=m, other=0.0).to(tl.float32)
        c1 = tl.load(cos_row + c[None, :], mask=m, other=0.0).to(tl.float32)
        c2 = tl.load(cos_row + HALF + c[None, :], mask=m, other=0.0).to(tl.float32)
        s1 = tl.load(sin_row + c[None, :], mask=m, other=0.0).to(tl.float32)
        s2 = tl.load(sin_row + HALF + c[None, :], mask=m, other=0.0).to(tl.float32)
        # through the rotation (its transpose), then the norm with a frozen weight
        g1 = (dy1 * c1 + dy2 * s2) * tl.load(w_ptr + c).to(tl.float32)[None, :]
        g2 = (dy2 * c2 - dy1 * s1) * tl.load(w_ptr + HALF + c).to(tl.float32)[None, :]
        rs = tl.load(rstd_ptr + r, mask=live, other=0.0)[:, None]
        x1 = tl.load(x_row + c[None, :], mask=m, other=0.0).to(tl.float32) * rs
        x2 = tl.load(x_row + HALF + c[None, :], mask=m, other=0.0).to(tl.float32) * rs
        mean = ((tl.sum(g1 * x1, axis=1) + tl.sum(g2 * x2, axis=1)) / (2 * HALF))[:, None]
        out = dx_ptr.dtype.element_ty
        tl.store(dx_ptr + r[:, None] * (2 * HALF) + c[None, :], (rs * (g1 - x1 * mean)).to(out), mask=m)
        tl.store(
            dx_ptr + r[:, None] * (2 * HALF) + HALF + c[None, :], (rs * (g2 - x2 * mean)).to(out), mask=m
        )


def _like(x: torch.Tensor) -> torch.Tensor:
    """An empty tensor with x's shape and x's strides when those are dense (a transposed view of a
    contiguous tensor is), else contiguous."""
    return torch.empty_like(x, memory_format=torch.preserve_format)


def launch(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    backward: bool = False,
    norm=None,
    eps: float | None = None,
) -> torch.Tensor:
    """Rotate x (B, H, T, D) by cos, sin (B or 1, T, D); `backward` applies the transpose.
    `norm` = (weight, rstd): x is the input of an RMSNorm over D, applied first; with `eps` its 1/rms
    per (b, t, h) row is computed and written into rstd, else read from it (a lean layer's
    rebuild of rope(norm(q)), one pass)."""
    bsz, heads, seq, dim = x.shape
    y = _like(x)
    weight, rstd = norm if norm is not None else (x, x)  # (unread without the norm)
    rows = bsz * heads * seq
    per_program = max(1, 2048 // dim)
    cb = cos.stride(0) if cos.shape[0] > 1 else 0
    sb = sin.stride(0) if sin.shape[0] > 1 else 0
    _rope[(triton.cdiv(rows, per_program),)](
        x, cos, sin, y, weight, rstd, rows, heads, seq, 0.0 if eps is None else eps,
        x.stride(0), x.stride(1), x.stride(2), y.stride(0), y.stride(1), y.stride(2),
        cb, cos.stride(1), sb, sin.stride(1),
        HALF=dim // 2, ROWS=per_program, BACKWARD=backward, NORM=norm is not None,
        FIND_RSTD=eps is not None,
    )  # fmt: skip
    return y


def launch_norm_backward(dy, x, weight, rstd, cos, sin) -> torch.Tensor:
    """The input gradient of rope(norm(x)) (`norm_rope`) for dy (B, H, T, D) strided and x
    (B, T, H, D) contiguous; returned (B, T, H, D) contiguous."""
    bsz, seq, heads, dim = x.shape
    dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    rows = bsz * heads * seq
    per_program = max(1, 2048 // dim)
    cb = cos.stride(0) if cos.shape[0] > 1 else 0
    sb = sin.stride(0) if sin.shape[0] > 1 else 0
    _norm_rope_bwd[(triton.cdiv(rows, per_program),)](
        dy, x, weight, rstd, cos, sin, dx, rows, heads, seq,
        dy.stride(0), dy.stride(1), dy.stride(2), cb, cos.stride(1), sb, sin.stride(1),
        HALF=dim // 2, ROWS=per_program,
    )  # fmt: skip
    return dx


def _rotated(source, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return launch(source(), cos, sin)


def _normed_rotated(x2, weight, rstd, shape, stride, offset, cos, sin) -> torch.Tensor:
    # the norm's input read in the layout its output had (both are (rows, D) contiguous)
    x = x2.as_strided(shape, stride, x2.storage_offset() + offset)
    return launch(x, cos, sin, norm=(weight, rstd))


def _mark_rotated(x: torch.Tensor, y: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """In a lean layer, mark RoPE's output as rebuildable when its input is: in one pass from the
    norm's input when that is what x is (`rmsnorm.normed` over D, as q_norm/k_norm are), else
    by rebuilding x and rotating it."""
    found = lean.source(x)
    if found is None:
        return
    fn, args, offset = found
    if fn is normed and args[0].shape[-1] == x.shape[-1] and args[0].is_contiguous():
        x2, weight, rstd = args
        lean.mark(y, _normed_rotated, x2, weight, rstd, tuple(x.shape), x.stride(), offset, cos, sin)
    else:
        lean.mark(y, _rotated, lean.rebuilder(x), cos, sin)


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        y = launch(x, cos, sin)
        _mark_rotated(x, y, cos, sin)  # in a lean layer x is a normed q or k, itself rebuildable
        return y

    @staticmethod
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        return launch(dy, cos, sin, backward=True), None, None


def _norm_rope_again(x2, weight, rstd, shape, cos, sin) -> torch.Tensor:
    # a lean layer's rebuild of `_NormRope`'s output, in the layout its forward allocated
    return launch(x2.view(shape).transpose(1, 2), cos, sin, norm=(weight, rstd))


class _NormRope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, cos, sin):
        # x (B, T, H, D) contiguous: a projection's output split into heads
        rstd = torch.empty(x.shape[:-1].numel(), dtype=torch.float32, device=x.device)
        # (B, H, T, D) in x's (B, T, H, D) layout, as the norm's output transposed would be
        y = launch(x.transpose(1, 2), cos, sin, norm=(weight, rstd), eps=eps)
        ctx.save_for_backward(x, weight, rstd, cos, sin)
        lean.mark(y, _norm_rope_again, x.view(-1, x.shape[-1]), weight, rstd, tuple(x.shape), cos, sin)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd, cos, sin = ctx.saved_tensors
        return launch_norm_backward(dy, x, weight, rstd, cos, sin), None, None, None, None


def norm_rope(x: torch.Tensor, norm: torch.nn.Module, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE of `norm`(x) in one pass each way, for x (B, T, H, D), a projection's output split into
    heads, and `norm` an RMSNorm over D with a frozen weight (Qwen3's q_norm and k_norm); returns
    (B, H, T, D) as `apply_rotary_pos_emb(norm(x).transpose(1, 2), ...)` does, with the norm's
    output rounded as `hive_train.rmsnorm` rounds it. Falls back to those two steps when the
    kernel does not apply (`norm_rope_usable`)."""
    if not norm_rope_usable(x, norm, cos, sin):
        q = norm(x).transpose(1, 2)
        return _stock_rotary(q, q, cos, sin)[0]
    return _NormRope.apply(x, norm.weight, norm.variance_epsilon, cos, sin)


def norm_rope_usable(x: torch.Tensor, norm: torch.nn.Module, cos: torch.Tensor, sin: torch.Tensor) -> bool:
    weight = getattr(norm, "weight", None)
    return (
        isinstance(weight, torch.Tensor)
        and not weight.requires_grad
        and weight.shape == x.shape[-1:]
        and hasattr(norm, "variance_epsilon")
        and x.dim() == 4
        and x.is_contiguous()
        and _usable(x.transpose(1, 2), cos)
        and sin.shape == cos.shape
        and sin.stride(-1) == 1
    )


def _stock_rotary(q, k, cos, sin, unsqueeze_dim=1):
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    half = q.shape[-1] // 2

    def rotate_half(z):
        return torch.cat((-z[..., half:], z[..., :half]), dim=-1)

    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def on_kernel_device(x: torch.Tensor) -> bool:
    """Whether the kernels here run on x: on CUDA, or anywhere under Triton's interpreter
    (TRITON_INTERPRET=1, which the CPU tests use to run them)."""
    return triton is not None and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")


def _usable(x: torch.Tensor, cos: torch.Tensor) -> bool:
    dim = x.shape[-1] if x.dim() == 4 else 0
    return (
        triton is not None
        and on_kernel_device(x)
        and x.dim() == 4
        and dim >= 2
        and dim & (dim - 1) == 0  # a power of two: the kernel's half-row block has no mask
        and x.stride(-1) == 1
        and cos.dim() == 3
        and cos.shape[-1] == dim
        and cos.shape[1] == x.shape[2]
        and cos.shape[0] in (1, x.shape[0])
        and cos.stride(-1) == 1
    )


def make_apply_rotary_pos_emb(stock):
    """A drop-in for transformers' `apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)` that
    runs the kernel on CUDA and `stock` for anything it does not cover."""

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        unsqueeze_dim = args[0] if args else kwargs.get("unsqueeze_dim", 1)
        if (
            unsqueeze_dim != 1
            or len(args) > 1
            or set(kwargs) - {"unsqueeze_dim"}
            or not (_usable(q, cos) and _usable(k, cos) and sin.shape == cos.shape and sin.stride(-1) == 1)
        ):
            return stock(q, k, cos, sin, *args, **kwargs)
        return _Rope.apply(q, cos, sin), _Rope.apply(k, cos, sin)

    apply_rotary_pos_emb.hive_stock = stock
    return apply_rotary_pos_emb


def apply_rope_kernel(modeling_module) -> bool:
    """Point `modeling_module.apply_rotary_pos_emb` (a transformers model module, e.g.
    `transformers.models.qwen3.modeling_qwen3`) at the kernel; idempotent. The module's attention
    calls it by that global name, so the switch covers every model of that family in the process,
    and the drop-in falls back to the stock function off CUDA."""
    current = getattr(modeling_module, "apply_rotary_pos_emb", None)
    if triton is None or current is None:
        return False
    if getattr(current, "hive_stock", None) is None:
        modeling_module.apply_rotary_pos_emb = make_apply_rotary_pos_emb(current)
    return True
