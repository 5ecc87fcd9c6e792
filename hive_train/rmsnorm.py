"""RMSNorm with a frozen weight: one pass forward, one pass backward, no weight gradient.

Qwen3 normalizes four times per decoder layer (before attention, before the MLP, and each query
and key head). Its weights are never trained by an adapter, yet a general fused RMSNorm (Liger's,
say) still computes the weight's gradient in backward: per-block partial sums written out and
reduced again, about half of the norms' time in the step profile (BENCHMARKS.md). This one computes
only the input gradient.

Same arithmetic as transformers' `Qwen3RMSNorm` forward: the row normalized in float32, rounded to
the input dtype, then multiplied by the weight with one more rounding. Backward treats that first
rounding as the identity, as every fused RMSNorm does:
  dx = rstd ⊙ (dŷ − x̂ · mean(dŷ ⊙ x̂)),  x̂ = x·rstd, dŷ = dy ⊙ w, all in float32.
"""

from __future__ import annotations

import types

import torch
from torch import nn

from hive_train import lean

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None


if triton is not None:

    @triton.jit
    def _rms_fwd(x_ptr, w_ptr, y_ptr, rstd_ptr, rows, N, eps,
                 ROWS: tl.constexpr, BLOCK_N: tl.constexpr, GIVEN_RSTD: tl.constexpr):  # fmt: skip
        r = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        c = tl.arange(0, BLOCK_N)
        inside = (r[:, None] < rows) & (c[None, :] < N)
        offs = r[:, None] * N + c[None, :]
        x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        if GIVEN_RSTD:  # a lean layer's rebuild: the forward's own 1/rms, so the very same output
            rstd = tl.load(rstd_ptr + r, mask=r < rows, other=0.0)
        else:
            rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / N + eps)
        xn = (x * rstd[:, None]).to(y_ptr.dtype.element_ty).to(tl.float32)
        w = tl.load(w_ptr + c, mask=c < N, other=0.0).to(tl.float32)
        tl.store(y_ptr + offs, (xn * w[None, :]).to(y_ptr.dtype.element_ty), mask=inside)
        if not GIVEN_RSTD:
            tl.store(rstd_ptr + r, rstd, mask=r < rows)

    @triton.jit
    def _rms_bwd(dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, rows, N,
                 ROWS: tl.constexpr, BLOCK_N: tl.constexpr):  # fmt: skip
        r = (tl.program_id(0) * ROWS + tl.arange(0, ROWS)).to(tl.int64)
        c = tl.arange(0, BLOCK_N)
        inside = (r[:, None] < rows) & (c[None, :] < N)
        offs = r[:, None] * N + c[None, :]
        dy = tl.load(dy_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + c, mask=c < N, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + r, mask=r < rows, other=0.0)
        xhat = x * rstd[:, None]
        dyw = dy * w[None, :]
        mean = tl.sum(dyw * xhat, axis=1) / N
        dx = rstd[:, None] * (dyw - xhat * mean[:, None])
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=inside)


def _grid(rows: int, n: int) -> tuple[int, int, int]:
    block_n = triton.next_power_of_2(n)
    per_program = max(1, 4096 // block_n)  # about 4k elements per program, whatever the row length
    return triton.cdiv(rows, per_program), per_program, block_n


def launch_forward(
    x2: torch.Tensor, weight: torch.Tensor, eps: float, rstd: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, rstd) for contiguous rows x2 (rows, N), with `rstd` as given when it is (1/rms of each
    row, from an earlier call: the same y again); launched on its own so tests can run it in
    Triton's interpreter."""
    rows, n = x2.shape
    y = torch.empty_like(x2)
    given = rstd is not None
    if not given:
        rstd = torch.empty(rows, dtype=torch.float32, device=x2.device)
    programs, per_program, block_n = _grid(rows, n)
    _rms_fwd[(programs,)](
        x2, weight, y, rstd, rows, n, eps, ROWS=per_program, BLOCK_N=block_n, GIVEN_RSTD=given
    )
    return y, rstd


def launch_backward(dy2: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor):
    rows, n = x2.shape
    dx = torch.empty_like(x2)
    programs, per_program, block_n = _grid(rows, n)
    _rms_bwd[(programs,)](dy2, x2, weight, rstd, dx, rows, n, ROWS=per_program, BLOCK_N=block_n)
    return dx


def normed(x2: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """A lean layer's rebuild of the norm's output from its kept input and 1/rms
    (`hive_train.rope` fuses it into the rotation when RoPE reads it)."""
    return launch_forward(x2, weight, 0.0, rstd)[0]


class _FrozenRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        y, rstd = launch_forward(x2, weight, eps)
        ctx.save_for_backward(x2, weight, rstd)
        lean.mark(y, normed, x2, weight, rstd)  # in a lean layer, rebuilt from x2 in backward
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        dx = launch_backward(dy.reshape(x2.shape).contiguous(), x2, weight, rstd)
        return dx.reshape(dy.shape), None, None


def frozen_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of the last dimension of `x` with a weight that takes no gradient."""
    return _FrozenRMSNorm.apply(x, weight, eps)


def _forward(self, hidden_states):
    if self.weight.requires_grad or not hidden_states.is_cuda or hidden_states.shape[-1] > 16384:
        return self._hive_stock_forward(hidden_states)
    return frozen_rms_norm(hidden_states, self.weight, self.variance_epsilon)


def apply_frozen_rms_norm(model: nn.Module) -> int:
    """Route every RMSNorm of `model` (modules with a `weight` and a `variance_epsilon`, as in
    transformers' Llama/Qwen families) through `frozen_rms_norm` while its weight is frozen and its
    input is on CUDA; patched on this instance only. Returns how many were patched."""
    if triton is None:
        return 0
    count = 0
    for module in model.modules():
        if not (type(module).__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon")):
            continue
        if not isinstance(getattr(module, "weight", None), torch.Tensor) or module.weight.dim() != 1:
            continue
        if not hasattr(module, "_hive_stock_forward"):
            module._hive_stock_forward = module.forward
        module.forward = types.MethodType(_forward, module)
        count += 1
    return count
