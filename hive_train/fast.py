"""Fast training paths for frozen-base adapters: DoRA/LoRA matmuls and a chunked LM-head loss.

Same math as peft's DoRA and LoRA layers (checked against them in `tests/test_fast.py`), fewer
passes over memory:

- The frozen base weight W is dequantized from NF4 once and kept in the compute dtype when memory
  allows (`keep_4bit=False`); otherwise it is dequantized on the fly in forward and in backward,
  exactly as bitsandbytes does, so the 4-bit storage stays real.
- DoRA scales each output row by g = m / ||W + s·BA|| (the norm detached, as peft and the DoRA paper
  do). Instead of computing x·Wᵀ and then rescaling the (tokens x out) activations several times, the
  tiny weight-side tensors are scaled: y = x·(g⊙W)ᵀ + (x·Aᵀ)·(s·g⊙B)ᵀ, one large GEMM plus two
  skinny ones. The backward pass needs no weight gradient for W (frozen), and the magnitude gradient
  is one fused reduction: ∂L/∂g_i = Σ_t ∂L/∂y_ti · y_ti / g_i.
- The LM head loss is computed over loss tokens only, in chunks, with the gradient produced in the
  forward pass, so the (tokens x vocab) logits never exist in full.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


def dense_weight(base: nn.Module) -> torch.Tensor:
    """The base layer's weight as a dense (out, in) tensor, dequantizing bitsandbytes 4-bit weights."""
    cached = getattr(base, "_hive_dense_weight", None)
    if cached is not None:
        return cached
    weight = base.weight
    if weight.__class__.__name__ == "Params4bit":
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, weight.quant_state)
    return weight


def cache_dense_weight(base: nn.Module, dtype: torch.dtype) -> None:
    """Dequantize once and keep the dense weight (a non-persistent buffer: not saved, not trained)."""
    dense = dense_weight(base).detach().to(dtype).contiguous()
    base.register_buffer("_hive_dense_weight", dense, persistent=False)


class _DoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lora_a, lora_b, magnitude, weight_norm, base, scaling):
        dtype = x.dtype
        weight = dense_weight(base).to(dtype)
        g = (magnitude.to(torch.float32) / weight_norm.to(torch.float32)).to(dtype)
        a = lora_a.to(dtype)
        b_scaled = lora_b.to(dtype) * (g * scaling)[:, None]
        xa = x @ a.t()
        y = x @ (weight * g[:, None]).t()
        y.addmm_(xa, b_scaled.t())
        bias = getattr(base, "bias", None)
        if bias is not None:
            y.add_(bias.to(dtype))
        ctx.base, ctx.scaling, ctx.has_bias = base, scaling, bias is not None
        ctx.dtypes = (lora_a.dtype, lora_b.dtype, magnitude.dtype)
        ctx.save_for_backward(x, xa, y, a, lora_b, g, weight_norm)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, xa, y, a, lora_b, g, weight_norm = ctx.saved_tensors
        dtype = dy.dtype
        dy = dy.contiguous()
        scaling = ctx.scaling
        b_scaled = lora_b.to(dtype) * (g * scaling)[:, None]
        dyb = dy @ b_scaled
        dx = None
        if ctx.needs_input_grad[0]:
            weight = dense_weight(ctx.base).to(dtype)
            dx = dy @ (weight * g[:, None])
            dx.addmm_(dyb, a)
        d_a = (dyb.t() @ x).to(ctx.dtypes[0])
        d_b = ((dy.t() @ xa) * (g * scaling)[:, None]).to(ctx.dtypes[1])
        u = y
        if ctx.has_bias:
            u = y - ctx.base.bias.to(dtype)
        dg = (dy * u).sum(0, dtype=torch.float32) / g.to(torch.float32)
        d_m = (dg / weight_norm.to(torch.float32)).to(ctx.dtypes[2])
        return dx, d_a, d_b, d_m, None, None, None


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lora_a, lora_b, base, scaling):
        dtype = x.dtype
        weight = dense_weight(base).to(dtype)
        a = lora_a.to(dtype)
        b_scaled = lora_b.to(dtype) * scaling
        xa = x @ a.t()
        y = x @ weight.t()
        y.addmm_(xa, b_scaled.t())
        bias = getattr(base, "bias", None)
        if bias is not None:
            y.add_(bias.to(dtype))
        ctx.base, ctx.scaling, ctx.dtypes = base, scaling, (lora_a.dtype, lora_b.dtype)
        ctx.save_for_backward(x, xa, a, b_scaled)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, xa, a, b_scaled = ctx.saved_tensors
        dy = dy.contiguous()
        dyb = dy @ b_scaled
        dx = None
        if ctx.needs_input_grad[0]:
            dx = dy @ dense_weight(ctx.base).to(dy.dtype)
            dx.addmm_(dyb, a)
        d_a = (dyb.t() @ x).to(ctx.dtypes[0])
        d_b = ((dy.t() @ xa) * ctx.scaling).to(ctx.dtypes[1])
        return dx, d_a, d_b, None, None


def dora_weight_norm(
    weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float
) -> torch.Tensor:
    """Row norms of W + s·BA without gradient (DoRA detaches them), accumulated in float32."""
    with torch.no_grad():
        merged = weight.to(torch.float32) + scaling * (lora_b.to(torch.float32) @ lora_a.to(torch.float32))
        return torch.linalg.vector_norm(merged, dim=1)


def _fast_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Replacement forward for a peft `lora.Linear` with one active adapter and no dropout."""
    name = self.active_adapters[0]
    if self.disable_adapters or self.merged or name not in self.lora_A:
        return self._hive_stock_forward(x, *args, **kwargs)
    lora_a = self.lora_A[name].weight
    lora_b = self.lora_B[name].weight
    scaling = float(self.scaling[name])
    base = self.base_layer
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        if name in self.lora_variant:
            weight = dense_weight(base)
            norm = dora_weight_norm(weight, lora_a, lora_b, scaling)
            magnitude = self.lora_magnitude_vector[name].weight
            y = _DoraLinear.apply(x2, lora_a, lora_b, magnitude, norm, base, scaling)
        else:
            y = _LoraLinear.apply(x2, lora_a, lora_b, base, scaling)
    return y.reshape(*shape[:-1], y.shape[-1])


def install_fast_adapters(model: nn.Module, *, keep_4bit: bool, dtype: torch.dtype) -> int:
    """Route every eligible peft LoRA/DoRA linear layer of `model` through the fast path.

    Eligible: a `lora.Linear` with exactly one adapter, dropout 0 (identity) and a plain or
    bitsandbytes-4-bit base layer. With `keep_4bit=False` the base weights are dequantized once and
    kept in `dtype`. Returns the number of layers switched; others keep peft's own forward.
    """
    from peft.tuners.lora import LoraLayer

    count = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer) or len(module.lora_A) != 1:
            continue
        if type(module.get_base_layer()).__name__ not in ("Linear", "Linear4bit"):
            continue
        name = next(iter(module.lora_A))
        if not isinstance(module.lora_dropout[name], nn.Identity):
            continue
        variant = module.lora_variant.get(name)
        if variant is not None and type(variant).__name__ != "DoraLinearVariant":
            continue
        if getattr(module, "fan_in_fan_out", False):
            continue
        if not keep_4bit:
            cache_dense_weight(module.base_layer, dtype)
        if not hasattr(module, "_hive_stock_forward"):
            module._hive_stock_forward = module.forward
        module.forward = types.MethodType(_fast_forward, module)
        count += 1
    return count


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        w = weight.to(hidden.dtype)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start : start + chunk]
            t = targets[start : start + chunk]
            logits = (h @ w.t()).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if grad_hidden is not None:
                probs = logits.sub_(lse[:, None]).exp_()
                probs[torch.arange(len(t), device=t.device), t] -= 1.0
                grad_hidden[start : start + chunk] = probs.to(h.dtype) @ w
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), None, None, None


def linear_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """Sum over rows of cross-entropy(hidden @ weightᵀ, targets), never materializing all logits.

    `hidden` holds only the positions that carry loss, (N, d); `weight` is the frozen LM head
    (V, d) and gets no gradient. The caller divides by the step's global loss-token count.
    """
    if weight.requires_grad:
        logits = F.linear(hidden, weight).float()
        return F.cross_entropy(logits, targets, reduction="sum")
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk)
