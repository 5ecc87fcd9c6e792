"""Document-causal attention over one packed row, in Triton: forward and backward.

The row holds documents back to back (`cu_seqlens` gives their boundaries); a query attends to
the keys of its own document up to itself. Same math as FlashAttention 2's varlen kernels
(online softmax in float32, the probabilities recomputed in backward from the stored
log-sum-exp), arranged for what hive trains on:

- grouped-query attention in the backward: one program owns a block of keys of one key/value
  head and walks the queries of every query head of its group, so dK and dV are summed over the
  group in float32 registers and written once. FlashAttention 2 writes them per query head and
  then reduces head pairs in a strided pass (4 ms of a 16k-token step on an H200, BENCHMARKS.md);
- no per-document grid: a program takes a block of the row and finds its documents from the
  boundaries (a compare against the few dozen of them), so empty padding documents, which CUDA
  graphs need for a fixed shape, cost nothing;
- blocks that need no mask (wholly inside one document and below the diagonal) run a loop
  without one; only the boundary and diagonal blocks pay for masking.

dQ comes from a second backward kernel over query blocks (no atomics), so the backward does seven
block products instead of FlashAttention's five; what it saves is the head-pair reduction, the
float32 dQ accumulator and its conversion pass. `benchmarks/attention_probe.py` times it against
FlashAttention 2 on the benchmark's documents.

q (T, Hq, D), k and v (T, Hkv, D), each with a contiguous last dimension; half precision on
CUDA. Under `TRITON_INTERPRET=1` the same kernels run on the CPU (the tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hive_train.rope import on_kernel_device

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class Blocks:
    """Tile sizes: forward and dQ programs own `m` queries and step over `n` keys; the dK/dV
    program owns `kv_n` keys and steps over `kv_m` queries."""

    m: int
    n: int
    warps: int
    stages: int
    kv_m: int
    kv_n: int
    kv_warps: int
    kv_stages: int
    dq_m: int
    dq_n: int
    dq_warps: int
    dq_stages: int


# tuned on an H200 (`benchmarks/attention_probe.py`, 2026-12-03); more shared memory per program
# than consumer cards have (the forward's three stages of 64-key blocks: about 110 KB)
BLOCKS = Blocks(64, 64, 4, 3, 64, 64, 4, 2, 64, 32, 4, 3)
# for GPUs with about 100 KB per program (consumer cards: RTX 3090, 4090, 5090)
SMALL_BLOCKS = Blocks(64, 64, 4, 2, 32, 64, 4, 2, 64, 32, 4, 2)
LARGE_SHARED_MEMORY = 160 * 1024
# the last resort, should a GPU's shared memory not hold even those (`fitting`)
MINIMAL_BLOCKS = Blocks(32, 32, 4, 1, 32, 32, 4, 1, 32, 32, 4, 1)
TILE_SETS = (BLOCKS, SMALL_BLOCKS, MINIMAL_BLOCKS)
# small tiles for the Triton interpreter (CPU tests): the same code paths, far less arithmetic
INTERPRETER_BLOCKS = Blocks(16, 16, 4, 1, 16, 16, 4, 1, 16, 16, 4, 1)


if triton is not None:
    _NO_BOUNDARY = tl.constexpr(1 << 30)  # stands in for the unused slots of the boundary block

    @triton.jit
    def _starts(cu_ptr, n_cu, rows, NCU: tl.constexpr):
        # first position of each row's document: the largest boundary at or before it
        e = tl.arange(0, NCU)
        cu = tl.load(cu_ptr + e, mask=e < n_cu, other=_NO_BOUNDARY)
        return tl.max(tl.where(cu[None, :] <= rows[:, None], cu[None, :], 0), axis=1)

    @triton.jit
    def _ends(cu_ptr, n_cu, cols, NCU: tl.constexpr):
        # one past the last position of each column's document: the first boundary after it
        e = tl.arange(0, NCU)
        cu = tl.load(cu_ptr + e, mask=e < n_cu, other=_NO_BOUNDARY)
        return tl.min(tl.where(cu[None, :] > cols[:, None], cu[None, :], _NO_BOUNDARY), axis=1)

    @triton.jit
    def _key_block(q, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale, n,
                   D: tl.constexpr, BN: tl.constexpr, MASKED: tl.constexpr):  # fmt: skip
        # the key block [n, n + BN): its keys, values and the query block's scaled scores against
        # it (-inf where a query may not look: another document, or the future)
        d = tl.arange(0, D)
        cols = n + tl.arange(0, BN)
        live = cols < T
        k = tl.load(k_ptr + cols[:, None] * skt + d[None, :], mask=live[:, None], other=0.0)
        v = tl.load(v_ptr + cols[:, None] * svt + d[None, :], mask=live[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        if MASKED:
            keep = (cols[None, :] >= starts[:, None]) & (cols[None, :] <= rows[:, None])
            s = tl.where(keep & live[None, :], s, float("-inf"))
        return k, v, s

    @triton.jit
    def _fwd_keys(acc, l_i, m_i, q, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale, lo, hi,
                  D: tl.constexpr, BN: tl.constexpr, MASKED: tl.constexpr):  # fmt: skip
        # online softmax over the key blocks [lo, hi) for one block of queries
        for n in range(lo, hi, BN):
            k, v, s = _key_block(q, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale, n, D, BN, MASKED)
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing yet
            p = tl.math.exp2(s - m_safe[:, None])
            alpha = tl.math.exp2(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _key_ranges(m0, starts, T, BM: tl.constexpr, BN: tl.constexpr):
        # a query block [m0, m0 + BM) reads keys from its first row's document start up to its
        # last row: first the blocks where rows of a later document must not see them (masked),
        # then the blocks wholly inside every row's document and below the diagonal (unmasked),
        # then the diagonal (masked)
        lo = tl.min(starts)
        last_start = tl.max(starts)
        hi = tl.minimum(m0 + BM, T)
        a_end = lo + tl.cdiv(tl.maximum(last_start - lo, 0), BN) * BN
        full = tl.maximum(m0 + 1 - a_end, 0) // BN  # blocks [n, n + BN) with n + BN - 1 <= m0
        b_end = a_end + full * BN
        return lo, a_end, b_end, hi

    @triton.jit
    def _attn_fwd(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, cu_ptr, n_cu, T, qk_scale,
                  sqt, sqh, skt, skh, svt, svh, sot, soh,
                  GROUP: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                  NCU: tl.constexpr):  # fmt: skip
        m0 = tl.program_id(0) * BM
        h = tl.program_id(1)
        rows = m0 + tl.arange(0, BM)
        d = tl.arange(0, D)
        starts = _starts(cu_ptr, n_cu, rows, NCU)
        q = tl.load(q_ptr + h * sqh + rows[:, None] * sqt + d[None, :], mask=(rows < T)[:, None], other=0.0)
        k_ptr += (h // GROUP) * skh
        v_ptr += (h // GROUP) * svh
        acc = tl.zeros((BM, D), dtype=tl.float32)
        l_i = tl.zeros((BM,), dtype=tl.float32)
        m_i = tl.full((BM,), float("-inf"), dtype=tl.float32)
        lo, a_end, b_end, hi = _key_ranges(m0, starts, T, BM, BN)
        acc, l_i, m_i = _fwd_keys(acc, l_i, m_i, q, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale,
                                  lo, a_end, D, BN, True)  # fmt: skip
        acc, l_i, m_i = _fwd_keys(acc, l_i, m_i, q, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale,
                                  a_end, b_end, D, BN, False)  # fmt: skip
        acc, l_i, m_i = _fwd_keys(acc, l_i, m_i, q, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale,
                                  b_end, hi, D, BN, True)  # fmt: skip
        live = rows < T
        l_safe = tl.where(l_i > 0, l_i, 1.0)
        out = acc / l_safe[:, None]
        tl.store(o_ptr + h * soh + rows[:, None] * sot + d[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=live[:, None])  # fmt: skip
        tl.store(lse_ptr + h * T + rows, m_i + tl.math.log2(l_safe), mask=live)

    @triton.jit
    def _attn_delta(o_ptr, do_ptr, delta_ptr, T, sot, soh, sdt, sdh, D: tl.constexpr, BM: tl.constexpr):
        # Σ_d O·dO per query row and head: the softmax backward's correction term
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        h = tl.program_id(1)
        d = tl.arange(0, D)
        live = (rows < T)[:, None]
        o = tl.load(o_ptr + h * soh + rows[:, None] * sot + d[None, :], mask=live, other=0.0)
        do = tl.load(do_ptr + h * sdh + rows[:, None] * sdt + d[None, :], mask=live, other=0.0)
        tl.store(
            delta_ptr + h * T + rows, tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1), mask=rows < T
        )

    @triton.jit
    def _kv_queries(dk, dv, k, v, cols, ends, q_ptr, do_ptr, lse_ptr, delta_ptr, sqt, sdt, T, qk_scale,
                    lo, hi, D: tl.constexpr, BM: tl.constexpr, MASKED: tl.constexpr):  # fmt: skip
        # one key block's dK and dV from the query blocks [lo, hi) of one query head
        d = tl.arange(0, D)
        for m in range(lo, hi, BM):
            rows = m + tl.arange(0, BM)
            live = rows < T
            q = tl.load(q_ptr + rows[:, None] * sqt + d[None, :], mask=live[:, None], other=0.0)
            do = tl.load(do_ptr + rows[:, None] * sdt + d[None, :], mask=live[:, None], other=0.0)
            lse = tl.load(lse_ptr + rows, mask=live, other=float("inf"))
            delta = tl.load(delta_ptr + rows, mask=live, other=0.0)
            s = tl.dot(k, tl.trans(q)) * qk_scale  # (keys, queries)
            if MASKED:
                keep = (rows[None, :] >= cols[:, None]) & (rows[None, :] < ends[:, None])
                s = tl.where(keep, s, float("-inf"))
            p = tl.math.exp2(s - lse[None, :])
            dv += tl.dot(p.to(do.dtype), do)
            dp = tl.dot(v, tl.trans(do))
            ds = p * (dp - delta[None, :])
            dk += tl.dot(ds.to(q.dtype), q)
        return dk, dv

    @triton.jit
    def _attn_bwd_kv(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, cu_ptr, n_cu, T,
                     qk_scale, sm_scale, sqt, sqh, skt, skh, svt, svh, sdt, sdh, sdkt, sdkh, sdvt, sdvh,
                     GROUP: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                     NCU: tl.constexpr):  # fmt: skip
        n0 = tl.program_id(0) * BN
        hk = tl.program_id(1)
        cols = n0 + tl.arange(0, BN)
        d = tl.arange(0, D)
        live = (cols < T)[:, None]
        k = tl.load(k_ptr + hk * skh + cols[:, None] * skt + d[None, :], mask=live, other=0.0)
        v = tl.load(v_ptr + hk * svh + cols[:, None] * svt + d[None, :], mask=live, other=0.0)
        ends = _ends(cu_ptr, n_cu, cols, NCU)
        ends = tl.where(cols < T, ends, 0)  # keys past the row see no queries
        end_first = tl.min(tl.where(cols < T, ends, _NO_BOUNDARY))
        end_last = tl.minimum(tl.max(ends), T)
        # queries [n0, n0 + BN) meet the diagonal (masked); then, when the whole key block lies
        # in one document, the rest of it (unmasked); then any later document's (masked)
        diag_end = n0 + tl.cdiv(BN, BM) * BM
        full = tl.maximum(end_first - diag_end, 0) // BM
        b_end = diag_end + full * BM
        dk = tl.zeros((BN, D), dtype=tl.float32)
        dv = tl.zeros((BN, D), dtype=tl.float32)
        for g in tl.static_range(GROUP):
            h = hk * GROUP + g
            qh, doh = q_ptr + h * sqh, do_ptr + h * sdh
            lse_h, delta_h = lse_ptr + h * T, delta_ptr + h * T
            dk, dv = _kv_queries(dk, dv, k, v, cols, ends, qh, doh, lse_h, delta_h, sqt, sdt, T, qk_scale,
                                 n0, diag_end, D, BM, True)  # fmt: skip
            dk, dv = _kv_queries(dk, dv, k, v, cols, ends, qh, doh, lse_h, delta_h, sqt, sdt, T, qk_scale,
                                 diag_end, b_end, D, BM, False)  # fmt: skip
            dk, dv = _kv_queries(dk, dv, k, v, cols, ends, qh, doh, lse_h, delta_h, sqt, sdt, T, qk_scale,
                                 b_end, end_last, D, BM, True)  # fmt: skip
        tl.store(dk_ptr + hk * sdkh + cols[:, None] * sdkt + d[None, :], (dk * sm_scale).to(dk_ptr.dtype.element_ty),
                 mask=live)  # fmt: skip
        tl.store(
            dv_ptr + hk * sdvh + cols[:, None] * sdvt + d[None, :], dv.to(dv_ptr.dtype.element_ty), mask=live
        )

    @triton.jit
    def _q_keys(dq, q, do, lse, delta, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale, lo, hi,
                D: tl.constexpr, BN: tl.constexpr, MASKED: tl.constexpr):  # fmt: skip
        # one query block's dQ from the key blocks [lo, hi)
        for n in range(lo, hi, BN):
            k, v, s = _key_block(q, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale, n, D, BN, MASKED)
            p = tl.math.exp2(s - lse[:, None])
            dp = tl.dot(do, tl.trans(v))
            ds = p * (dp - delta[:, None])
            dq += tl.dot(ds.to(k.dtype), k)
        return dq

    @triton.jit
    def _attn_bwd_q(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr, cu_ptr, n_cu, T, qk_scale, sm_scale,
                    sqt, sqh, skt, skh, svt, svh, sdt, sdh, sdqt, sdqh,
                    GROUP: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                    NCU: tl.constexpr):  # fmt: skip
        m0 = tl.program_id(0) * BM
        h = tl.program_id(1)
        rows = m0 + tl.arange(0, BM)
        d = tl.arange(0, D)
        live = rows < T
        starts = _starts(cu_ptr, n_cu, rows, NCU)
        q = tl.load(q_ptr + h * sqh + rows[:, None] * sqt + d[None, :], mask=live[:, None], other=0.0)
        do = tl.load(do_ptr + h * sdh + rows[:, None] * sdt + d[None, :], mask=live[:, None], other=0.0)
        lse = tl.load(lse_ptr + h * T + rows, mask=live, other=float("inf"))
        delta = tl.load(delta_ptr + h * T + rows, mask=live, other=0.0)
        k_ptr += (h // GROUP) * skh
        v_ptr += (h // GROUP) * svh
        dq = tl.zeros((BM, D), dtype=tl.float32)
        lo, a_end, b_end, hi = _key_ranges(m0, starts, T, BM, BN)
        dq = _q_keys(dq, q, do, lse, delta, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale, lo, a_end,
                     D, BN, True)  # fmt: skip
        dq = _q_keys(dq, q, do, lse, delta, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale, a_end, b_end,
                     D, BN, False)  # fmt: skip
        dq = _q_keys(dq, q, do, lse, delta, rows, starts, k_ptr, v_ptr, skt, svt, T, qk_scale, b_end, hi,
                     D, BN, True)  # fmt: skip
        tl.store(dq_ptr + h * sdqh + rows[:, None] * sdqt + d[None, :], (dq * sm_scale).to(dq_ptr.dtype.element_ty),
                 mask=live[:, None])  # fmt: skip


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether these kernels take q, k, v: Triton present, on a GPU (or the interpreter), a head
    size Triton's block products take (a power of two from 16), key/value heads dividing the
    query heads, contiguous last dimensions."""
    if triton is None or not on_kernel_device(q):
        return False
    d = q.shape[-1]
    return (
        d >= 16
        and d & (d - 1) == 0
        and q.shape[1] % k.shape[1] == 0
        and k.shape == v.shape
        and all(t.stride(-1) == 1 for t in (q, k, v))
    )


_device_blocks: dict[int, Blocks] = {}  # the tiles each GPU runs (stepped down when they overflow)


def blocks_for(device_index: int) -> Blocks:
    """The tile sizes for this GPU: by the shared memory one program may use, then whatever the
    kernels stepped down to (`fitting`)."""
    if device_index not in _device_blocks:
        props = torch.cuda.get_device_properties(device_index)
        shared = getattr(props, "shared_memory_per_block_optin", 0)
        _device_blocks[device_index] = BLOCKS if shared >= LARGE_SHARED_MEMORY else SMALL_BLOCKS
    return _device_blocks[device_index]


def fitting(launch, start: Blocks):
    """(launch(blocks), blocks) for the first of `start` and the smaller sets after it in
    `TILE_SETS` that the GPU's shared memory holds: Triton raises OutOfResources when it compiles a
    kernel whose tiles do not fit, at the first launch (a step's warm-up, before any CUDA graph
    capture), so trying the next set is safe. Raises the last OutOfResources when none fits."""
    from triton.runtime.errors import OutOfResources

    sets = TILE_SETS[TILE_SETS.index(start) :] if start in TILE_SETS else (start,)
    for i, blocks in enumerate(sets):
        try:
            return launch(blocks), blocks
        except OutOfResources:
            if i == len(sets) - 1:
                raise
    raise AssertionError("unreachable")


def _tiled(launch, q: torch.Tensor, blocks: Blocks | None):
    """launch(blocks): the given tiles, the interpreter's on the CPU, else this GPU's, stepped down
    for good when they do not fit."""
    if blocks is not None or not q.is_cuda:
        return launch(blocks or INTERPRETER_BLOCKS)
    index = q.device.index if q.device.index is not None else torch.cuda.current_device()
    result, _device_blocks[index] = fitting(launch, blocks_for(index))
    return result


def _ncu(cu: torch.Tensor) -> int:
    return max(16, triton.next_power_of_2(cu.numel()))


def forward(q, k, v, cu, scale: float, blocks: Blocks | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(out (T, Hq, D) in q's dtype, lse (Hq, T) float32: base-2 log-sum-exp of the scaled scores).
    `blocks`: the tiles (default: this GPU's, `blocks_for`)."""
    return _tiled(lambda b: _forward(q, k, v, cu, scale, b), q, blocks)


def _forward(q, k, v, cu, scale: float, b: Blocks):
    t, hq, d = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty(hq, t, dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(t, b.m), hq)
    _attn_fwd[grid](
        q, k, v, out, lse, cu, cu.numel(), t, scale * LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        GROUP=hq // k.shape[1], D=d, BM=b.m, BN=b.n, NCU=_ncu(cu), num_warps=b.warps, num_stages=b.stages,
    )  # fmt: skip
    return out, lse


def backward(dout, q, k, v, out, lse, cu, scale: float, blocks: Blocks | None = None):
    """(dq, dk, dv), each shaped and typed as its input (contiguous)."""
    return _tiled(lambda b: _backward(dout, q, k, v, out, lse, cu, scale, b), q, blocks)


def _backward(dout, q, k, v, out, lse, cu, scale: float, b: Blocks):
    t, hq, d = q.shape
    hk = k.shape[1]
    group = hq // hk
    delta = torch.empty(hq, t, dtype=torch.float32, device=q.device)
    _attn_delta[(triton.cdiv(t, b.dq_m), hq)](
        out, dout, delta, t, out.stride(0), out.stride(1), dout.stride(0), dout.stride(1), D=d, BM=b.dq_m
    )
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    common = (cu, cu.numel(), t, scale * LOG2E, scale)
    _attn_bwd_kv[(triton.cdiv(t, b.kv_n), hk)](
        q, k, v, dout, lse, delta, dk, dv, *common,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        dout.stride(0), dout.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
        GROUP=group, D=d, BM=b.kv_m, BN=b.kv_n, NCU=_ncu(cu), num_warps=b.kv_warps, num_stages=b.kv_stages,
    )  # fmt: skip
    _attn_bwd_q[(triton.cdiv(t, b.dq_m), hq)](
        q, k, v, dout, lse, delta, dq, *common,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        dout.stride(0), dout.stride(1), dq.stride(0), dq.stride(1),
        GROUP=group, D=d, BM=b.dq_m, BN=b.dq_n, NCU=_ncu(cu), num_warps=b.dq_warps, num_stages=b.dq_stages,
    )  # fmt: skip
    return dq, dk, dv


class _DocAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu, scale, blocks):
        out, lse = forward(q, k, v, cu, scale, blocks)
        ctx.save_for_backward(q, k, v, out, lse, cu)
        ctx.scale, ctx.blocks = scale, blocks
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, cu = ctx.saved_tensors
        dq, dk, dv = backward(dout.contiguous(), q, k, v, out, lse, cu, ctx.scale, ctx.blocks)
        return dq, dk, dv, None, None, None


def doc_attention(q, k, v, cu_seqlens, scale: float | None = None, blocks: Blocks | None = None):
    """Document-causal attention: q (T, Hq, D), k/v (T, Hkv, D), `cu_seqlens` (int32 boundaries,
    0 first and T last; repeated T's are empty documents) -> (T, Hq, D). Differentiable in q, k, v."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _DocAttention.apply(q, k, v, cu_seqlens, scale, blocks)
