"""Fast training path for frozen-base adapters: DoRA/LoRA linears and a fused LM-head loss.

Same math as peft's DoRA and LoRA layers (checked against them in `tests/test_fast.py`), with far
fewer kernels and passes over memory:

- The frozen base weight W is dequantized from NF4 once and kept in the compute dtype when memory
  allows (`keep_4bit=False`); with `keep_4bit=True` it is dequantized on the fly in forward and in
  backward, as bitsandbytes does, so the 4-bit storage stays real (the 8 GB tier).
- DoRA scales each output row by g = m / ||W + s·BA|| (the norm detached, as in peft and the DoRA
  paper). g depends only on the parameters, which change only at an optimizer step, so it is
  computed once per step (`FastAdapters.prepare`), batched over all layers of the same shape,
  together with s·B and A in the compute dtype. A DoRA layer with a dense base keeps A under W in one
  stacked matrix [W; A; 0], so its forward is one GEMM yf = x·[W; A; 0]ᵀ that reads x once for the
  base output y0 = x·Wᵀ (the same bf16 operands as peft's base layer) and the low-rank input
  xa = x·Aᵀ, then one fused pass y = g ⊙ (y0 + xa·(sB)ᵀ) in float32 with a single rounding
  (`kernels.dora_forward`). (A 4-bit base, dequantized per use, runs x·Wᵀ and x·Aᵀ apart.)
  W is never rescaled: a g ⊙ W copy in bf16 rounds every weight a second time, which put the
  adapter gradients 2.5 times further from stock peft's on Qwen3-0.6B's architecture
  (BENCHMARKS.md, numerics).
- Backward needs no gradient for W (frozen). One fused pass over dy gives g ⊙ dy, the low-rank
  gradient (g ⊙ dy)·sB beside it, and the magnitude gradient ∂L/∂m_i = Σ_t ∂L/∂y_ti · y_ti / m_i
  (since y = g⊙v and g = m/||·|| with the norm constant); on the stacked matrix the input gradient
  through W and through the adapter is then one GEMM [g ⊙ dy | (g ⊙ dy)·sB | 0]·[W; A; 0]
  (`kernels.dora_backward`).
- The LM-head loss runs over loss tokens only, in chunks, with the gradient computed in the forward
  pass, so the (tokens x vocab) logits never exist in full; on CUDA one kernel per chunk turns the
  bf16 logits into the loss and, in place, their gradient (`kernels.cross_entropy_rows`), so a
  chunk holds chunk x vocab half-precision values and nothing in float32.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hive_train.kernels import (
    cross_entropy_rows,
    dora_backward,
    dora_forward,
    dora_grads,
    dora_output,
    rank_padding,
)


def dequantize(base: nn.Module) -> torch.Tensor:
    """A base layer's weight as a dense (out, in) tensor, dequantizing bitsandbytes 4-bit weights."""
    weight = base.weight
    if weight.__class__.__name__ == "Params4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state)
    return weight.detach()


@dataclass(eq=False)
class _Layer:
    """One adapted linear layer and its per-step prepared tensors."""

    module: nn.Module
    base: nn.Module
    lora_a: nn.Parameter
    lora_b: nn.Parameter
    magnitude: nn.Parameter | None
    scaling: float
    dense: torch.Tensor | None = None  # dequantized W, kept when keep_4bit is False
    # DoRA with a dense W: [W; A; 0] (out + padded, in), whose first `out` rows are `dense`; the A
    # rows are refreshed by `prepare`
    stacked: torch.Tensor | None = None
    padded: int = 0
    # prepared once per optimizer step (no autograd history):
    a: torch.Tensor | None = None  # A in the compute dtype
    b_s: torch.Tensor | None = None  # s·B in the compute dtype
    g: torch.Tensor | None = None  # DoRA row scales, float32
    gs: torch.Tensor | float = 1.0  # s·g (float32) or s, for the gradient of B
    m32: torch.Tensor | None = None  # magnitude in float32, for its gradient

    @property
    def dora(self) -> bool:
        return self.magnitude is not None

    def weight(self, dtype: torch.dtype) -> torch.Tensor:
        """W in `dtype`: the kept dense copy, or dequantized now from 4-bit."""
        if self.dense is not None:
            return self.dense
        return dequantize(self.base).to(dtype)


class _AdapterLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lora_a, lora_b, magnitude, layer: _Layer):
        dtype = x.dtype
        if layer.stacked is not None:
            y, xa = dora_forward(x @ layer.stacked.t(), layer.lora_b.shape[0], layer.b_s, layer.g)
        else:
            y = x @ layer.weight(dtype).t()
            xa = x @ layer.a.t()
            if layer.dora:
                y = dora_output(y, xa, layer.b_s, layer.g)
            else:
                y.addmm_(xa, layer.b_s.t())
        bias = layer.base.bias
        if bias is not None:
            y.add_(bias.to(dtype))
        ctx.layer = layer
        ctx.save_for_backward(x, xa, y if layer.dora else None)
        return y

    @staticmethod
    def backward(ctx, dy):
        layer: _Layer = ctx.layer
        x, xa, y = ctx.saved_tensors
        dy = dy.contiguous()
        d_m = None
        if layer.stacked is not None:
            return _stacked_backward(ctx, layer, dy, x, xa, y)
        if layer.dora:
            u = y if layer.base.bias is None else y - layer.base.bias.to(y.dtype)
            dyg, dy_u = dora_grads(dy, u, layer.g)  # g ⊙ dy; Σ_t dy·y per output
            d_m = (dy_u / layer.m32).to(layer.magnitude.dtype)
        else:
            dyg = dy
        dyb = dyg @ layer.b_s
        dx = None
        if ctx.needs_input_grad[0]:
            dx = dyg @ layer.weight(dy.dtype)
            dx.addmm_(dyb, layer.a)
        d_a = (dyb.t() @ x).to(layer.lora_a.dtype)
        d_b = ((dy.t() @ xa).to(torch.float32) * _column(layer.gs)).to(layer.lora_b.dtype)
        return dx, d_a, d_b, d_m, None


def _stacked_backward(ctx, layer: _Layer, dy, x, xa, y):
    n = dy.shape[1]
    u = y if layer.base.bias is None else y - layer.base.bias.to(y.dtype)
    gb, dy_u = dora_backward(dy, u, layer.g, layer.b_s, layer.padded)
    d_m = (dy_u / layer.m32).to(layer.magnitude.dtype)
    dx = gb @ layer.stacked if ctx.needs_input_grad[0] else None
    # all padded columns (zeros past the rank) in both low-rank GEMMs: aligned shapes, faster kernels
    r = layer.a.shape[0]
    d_a = (gb[:, n:].t() @ x)[:r].to(layer.lora_a.dtype)
    d_b = ((dy.t() @ xa)[:, :r].to(torch.float32) * _column(layer.gs)).to(layer.lora_b.dtype)
    return dx, d_a, d_b, d_m, None


def _column(scale):
    return scale[:, None] if isinstance(scale, torch.Tensor) else scale


def _fast_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Replacement forward for an adapted peft linear layer (one adapter, no dropout)."""
    fast: FastAdapters = self._hive_fast
    if self.disable_adapters or self.merged:
        return self._hive_stock_forward(x, *args, **kwargs)
    if fast.stale:
        fast.prepare()
    layer: _Layer = self._hive_layer
    dtype = fast.dtype
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.dtype != dtype:
        x2 = x2.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        y = _AdapterLinear.apply(x2, layer.lora_a, layer.lora_b, layer.magnitude, layer)
    return y.reshape(*shape[:-1], y.shape[-1])


@dataclass(eq=False)
class FastAdapters:
    """The fast path installed on a peft model: `FastAdapters.install(model, ...)`.

    Call `attach(optimizer)` so that every optimizer step marks the prepared tensors stale; the next
    forward pass recomputes them (once, for all layers).
    """

    dtype: torch.dtype
    keep_4bit: bool
    layers: list[_Layer] = field(default_factory=list)
    stale: bool = True
    covers_all: bool = False  # every adapted layer of the model runs here (none kept peft's forward)
    _groups: dict = field(default_factory=dict)
    _row_sq: dict = field(default_factory=dict)  # group key -> ||W_i||² per row (float32), W frozen

    @classmethod
    def install(cls, model: nn.Module, *, keep_4bit: bool, dtype: torch.dtype) -> FastAdapters:
        """Route every eligible peft LoRA/DoRA linear layer of `model` through the fast path.

        Eligible: one adapter, dropout 0 (identity), not fan-in-fan-out, and a plain or
        bitsandbytes-4-bit base layer. Other layers keep peft's own forward.
        """
        from peft.tuners.lora import LoraLayer

        fast = cls(dtype=dtype, keep_4bit=keep_4bit)
        adapted = 0
        for module in model.modules():
            if not isinstance(module, LoraLayer):
                continue
            adapted += 1
            if len(module.lora_A) != 1:
                continue
            base = module.get_base_layer()
            if type(base).__name__ not in ("Linear", "Linear4bit") or getattr(
                module, "fan_in_fan_out", False
            ):
                continue
            name = next(iter(module.lora_A))
            if not isinstance(module.lora_dropout[name], nn.Identity):
                continue
            variant = module.lora_variant.get(name) if hasattr(module, "lora_variant") else None
            if variant is not None and type(variant).__name__ != "DoraLinearVariant":
                continue
            layer = _Layer(
                module=module,
                base=base,
                lora_a=module.lora_A[name].weight,
                lora_b=module.lora_B[name].weight,
                magnitude=module.lora_magnitude_vector[name].weight if variant is not None else None,
                scaling=float(module.scaling[name]),
            )
            fast.layers.append(layer)
            module._hive_layer = layer
            module._hive_fast = fast
            if not hasattr(module, "_hive_stock_forward"):
                module._hive_stock_forward = module.forward
            module.forward = types.MethodType(_fast_forward, module)
        fast.covers_all = adapted == len(fast.layers)
        fast._build_groups()
        return fast

    def _build_groups(self) -> None:
        """Group same-shaped layers; with keep_4bit=False store their dense weights stacked."""
        groups: dict[tuple, list[_Layer]] = {}
        for layer in self.layers:
            out_f, in_f = layer.lora_b.shape[0], layer.lora_a.shape[1]
            key = (out_f, in_f, layer.lora_a.shape[0], layer.dora, layer.scaling, layer.lora_a.device)
            groups.setdefault(key, []).append(layer)
        for key, members in groups.items():
            stack = None
            if not self.keep_4bit:
                out_f, in_f, rank, dora, device = key[0], key[1], key[2], key[3], key[5]
                padded = rank_padding(rank) if dora else 0
                stack = torch.zeros(len(members), out_f + padded, in_f, dtype=self.dtype, device=device)
                for i, layer in enumerate(members):
                    stack[i, :out_f].copy_(dequantize(layer.base))
                    layer.dense = stack[i, :out_f]
                    if dora:
                        layer.stacked, layer.padded = stack[i], padded
                if dora:
                    self._row_sq[key] = torch.stack([w.float().pow(2).sum(1) for w in stack[:, :out_f]])
            self._groups[key] = (members, stack)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.register_step_post_hook(lambda *_: self.mark_stale())

    def mark_stale(self) -> None:
        self.stale = True

    @torch.no_grad()
    def prepare(self) -> None:
        """Recompute every layer's weight-side tensors from the current parameters."""
        dtype = self.dtype
        for key, (members, stack) in self._groups.items():
            out_f, _, rank, dora, scaling, _ = key
            a = torch.stack([layer.lora_a for layer in members]).to(torch.float32)
            b = torch.stack([layer.lora_b for layer in members]).to(torch.float32)
            a_low, b_s = a.to(dtype), (b * scaling).to(dtype)
            for i, layer in enumerate(members):
                layer.a, layer.b_s, layer.gs = a_low[i], b_s[i], scaling
            if not dora:
                continue
            if stack is not None:  # the A rows under W, read by the stacked GEMMs
                stack[:, out_f : out_f + rank].copy_(a_low)
            m = torch.stack([layer.magnitude for layer in members]).to(torch.float32)
            if stack is not None:
                norms = _stacked_row_norms(stack[:, :out_f], self._row_sq[key], a, b, scaling)
            else:
                norms = torch.stack(
                    [
                        torch.linalg.vector_norm(
                            torch.addmm(dequantize(layer.base).to(torch.float32), b[i], a[i], alpha=scaling),
                            dim=1,
                        )
                        for i, layer in enumerate(members)
                    ]
                )
            g = m / norms
            for i, layer in enumerate(members):
                layer.g, layer.gs, layer.m32 = g[i], g[i] * scaling, m[i]
        self.stale = False


def _stacked_row_norms(w, w_sq, a, b, s):
    """Row norms ||W_i + s·(BA)_i|| of a group's frozen weights w (n, out, in) without forming
    W + s·BA in float32 (a copy of every weight, each step):
    ||W_i||² (w_sq, computed once) + 2s·Σ_k B_ik (W·Aᵀ)_ik + s²·B_i (A·Aᵀ) B_iᵀ, all float32;
    a (n, r, in) and b (n, out, r) float32."""
    cross = _times_a(w, a)  # (n, out, r) = W·Aᵀ
    ba_sq = ((b @ (a @ a.transpose(1, 2))) * b).sum(2)
    return (w_sq + 2 * s * (b * cross).sum(2) + s * s * ba_sq).clamp_min_(0).sqrt_()


_MIXED_BMM: list[bool] = []  # whether this torch multiplies bf16 into float32 (bmm out_dtype)


def _times_a(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """W·Aᵀ in float32 for half-precision W and float32 A, without a float32 copy of W: A split into
    two half-precision parts (A = hi + lo to about 16 bits) and each product accumulated and
    returned in float32 (CUDA's bmm with out_dtype). Elsewhere W is upcast."""
    if w.dtype == torch.float32:
        return torch.bmm(w, a.transpose(1, 2))
    if w.is_cuda and _MIXED_BMM != [False]:
        hi = a.to(w.dtype)
        lo = (a - hi.float()).to(w.dtype)
        try:
            out = torch.bmm(w, hi.transpose(1, 2), out_dtype=torch.float32)
            out += torch.bmm(w, lo.transpose(1, 2), out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            _MIXED_BMM[:] = [False]  # (first seen in warm-up, before any CUDA graph capture)
        else:
            _MIXED_BMM[:] = [True]
            return out
    return torch.bmm(w.float(), a.transpose(1, 2))


def install_fast_adapters(model: nn.Module, *, keep_4bit: bool, dtype: torch.dtype) -> FastAdapters:
    """Shorthand for `FastAdapters.install`."""
    return FastAdapters.install(model, keep_4bit=keep_4bit, dtype=dtype)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    # No value is read back to the host, so CUDA graphs can capture it (`hive_train.cuda_graphs`).
    @staticmethod
    def forward(ctx, hidden, weight, targets, weights, chunk):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        w = weight.to(hidden.dtype)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            t = targets[start : start + chunk]
            c = None if weights is None else weights[start : start + chunk]
            logits = h @ w.t()
            # on CUDA one kernel turns the logits into the loss and, in place, their gradient
            rows = cross_entropy_rows(logits, t, c, write_grad=grad_hidden is not None)
            if rows is not None:
                total += rows.sum()
                if grad_hidden is not None:
                    grad_hidden[start : start + chunk] = logits @ w
                continue
            logp = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            picked = logp.gather(1, t[:, None])[:, 0]
            total -= picked.sum() if c is None else (picked * c).sum()
            if grad_hidden is not None:
                probs = logp.exp_()
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                if c is not None:
                    probs.mul_(c[:, None])
                grad_hidden[start : start + chunk] = probs.to(h.dtype) @ w
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None, None


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = 4096,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over rows of cross-entropy(hidden @ weightᵀ, targets), never materializing all logits.

    `hidden` holds only the positions that carry loss, (N, d); `weight` is the frozen LM head
    (V, d) and gets no gradient. `weights` (N,), when given, scales each row's term (0 drops a
    padded row); that path never syncs with the host. The caller divides by the step's global
    loss-token count.
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    if weight.requires_grad:
        losses = F.cross_entropy(F.linear(hidden, weight).float(), targets, reduction="none")
        return losses.sum() if weights is None else (losses * weights).sum()
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, weights, chunk)
