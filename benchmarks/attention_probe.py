"""Which document-isolated attention kernel is fastest for packed rows on this GPU (forward + backward).

Times, on one micro-batch of the benchmark's packed rows (real document lengths, Qwen3-0.6B's 16
query and 8 key/value heads of 128), each kernel torch offers for variable-length causal attention:
hive's own Triton kernels (`hive_train.doc_attention`, what hive runs; a few tile sizes timed per
kernel), FlashAttention 2 through `torch.nn.attention.varlen.varlen_attn`, the same on key
and value heads expanded to the query heads (its backward then sums no head groups), and
`scaled_dot_product_attention` on jagged nested tensors with each SDPA backend forced (cuDNN,
FlashAttention, memory-efficient). Each is checked against the first: output and input gradients;
each is timed eagerly and replayed as one CUDA graph (forward + backward).

    python3 benchmarks/attention_probe.py --data .bench/train --rows 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def doc_lengths(shards: Path, rows: int) -> np.ndarray:
    import pyarrow as pa

    path = next(iter(sorted(shards.glob("train-*.arrow"))))
    with pa.OSFile(str(path)) as f:
        table = pa.ipc.open_stream(f).read_all()
    lengths = table.column("seq_lengths").to_pylist()[:rows]
    return np.concatenate([np.asarray(x, dtype=np.int64) for x in lengths])


def timed(fn, repeat: int = 10) -> float:
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeat


def graphed(fn, inputs, dout):
    """fn's forward + backward captured as one CUDA graph: (replay, outputs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            torch.autograd.grad(fn(), inputs, dout)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
        grads = torch.autograd.grad(out, inputs, dout)
    return graph.replay, (out, grads)


class _ExpandHeads(torch.autograd.Function):
    """(T, Hkv, D) -> (T, Hkv * group, D); backward adds each group's gradients pairwise."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.repeat_interleave(group, dim=1)

    @staticmethod
    def backward(ctx, grad):
        t, h, d = grad.shape
        parts = grad.view(t, h // ctx.group, ctx.group, d).unbind(2)
        total = parts[0] + parts[1]
        for part in parts[2:]:
            total += part
        return total, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".bench/train")
    parser.add_argument("--rows", type=int, default=8)
    args = parser.parse_args()
    lengths = doc_lengths(Path(args.data) / "shards", args.rows)
    total = int(lengths.sum())
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32, device="cuda")
    max_len = int(lengths.max())
    torch.manual_seed(0)
    q = torch.randn(total, 16, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(total, 8, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(total, 8, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(total, 16, 128, device="cuda", dtype=torch.bfloat16)
    squares = float((lengths.astype(np.float64) ** 2).sum())
    nominal = 6 * 16 * 128 * squares  # hive's count for one layer's attention, forward + backward
    info = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(),
        "tokens": total,
        "documents": len(lengths),
        "attention_names": sorted(n for n in dir(torch.nn.attention) if not n.startswith("_")),
    }
    lister = getattr(torch.nn.attention, "list_flash_attention_impls", None)
    if lister is not None:
        try:
            info["flash_impls"] = list(lister())
        except Exception as err:  # noqa: BLE001 - a probe reports whatever happens
            info["flash_impls"] = f"{type(err).__name__}: {err}"
    print(json.dumps(info), flush=True)

    def varlen():
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(q, k, v, cu, cu, max_len, max_len, window_size=(-1, 0))

    def nested(backend):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        offsets = cu.long()

        def run():
            def nt(x):
                return torch.nested.nested_tensor_from_jagged(
                    x, offsets, min_seqlen=int(lengths.min()), max_seqlen=max_len
                ).transpose(1, 2)

            with sdpa_kernel(getattr(SDPBackend, backend)):
                out = F.scaled_dot_product_attention(nt(q), nt(k), nt(v), is_causal=True, enable_gqa=True)
            return out.transpose(1, 2).values()

        return run

    def varlen_expanded():
        from torch.nn.attention.varlen import varlen_attn

        group = q.shape[1] // k.shape[1]
        kx, vx = _ExpandHeads.apply(k, group), _ExpandHeads.apply(v, group)
        return varlen_attn(q, kx, vx, cu, cu, max_len, max_len, window_size=(-1, 0))

    def hive(blocks=None):
        from hive_train.doc_attention import doc_attention

        return lambda: doc_attention(q, k, v, cu, blocks=blocks)

    candidates = {"varlen (FlashAttention 2)": varlen}
    candidates["hive Triton"] = hive()
    from hive_train.doc_attention import SMALL_BLOCKS

    candidates["hive Triton, tiles for ~100 KB of shared memory"] = hive(SMALL_BLOCKS)
    candidates["FA2 varlen, key/value heads expanded"] = varlen_expanded
    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        candidates[f"SDPA jagged, {backend}"] = nested(backend)
    # FlashAttention 2 first (the reference), then each newer implementation torch has registered
    impls = list(getattr(torch.nn.attention, "list_flash_attention_impls", lambda: [])())
    for impl in impls:
        candidates[f"varlen, {impl}"] = varlen
    reference = None
    for name, fn in candidates.items():
        row = {"kernel": name}
        impl = name.removeprefix("varlen, ") if name in (f"varlen, {i}" for i in impls) else None
        try:
            if impl is not None:
                torch.nn.attention.activate_flash_attention_impl(impl)
            out = fn()
            grads = torch.autograd.grad(out, (q, k, v), dout)
            if reference is None:
                reference = (out.detach(), [g.detach() for g in grads])
            else:
                row["out_rel"] = float(
                    (out.float() - reference[0].float()).norm() / reference[0].float().norm()
                )
                row["grad_rel"] = max(
                    float((g.float() - r.float()).norm() / r.float().norm())
                    for g, r in zip(grads, reference[1])
                )
            row["forward_ms"] = timed(lambda fn=fn: fn())
            row["forward_backward_ms"] = timed(lambda fn=fn: torch.autograd.grad(fn(), (q, k, v), dout))
            row["nominal_tflops"] = nominal / (row["forward_backward_ms"] / 1e3) / 1e12
            replay, (g_out, g_grads) = graphed(fn, (q, k, v), dout)
            row["graphed_ms"] = timed(replay)
            row["graphed_tflops"] = nominal / (row["graphed_ms"] / 1e3) / 1e12
            row["graphed_vs_eager_rel"] = max(
                float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))
                for a, b in zip((g_out, *g_grads), (out, *grads))
            )
        except Exception as err:  # noqa: BLE001 - a probe reports whatever happens
            first = err.__context__ if "during capture" in str(err) and err.__context__ else err
            row["error"] = f"{type(first).__name__}: {str(first).splitlines()[0][:300]}"
            torch.cuda.synchronize()
        finally:
            restore = getattr(torch.nn.attention, "restore_flash_attention_impl", None)
            if impl is not None and restore is not None:
                restore()
        print(json.dumps(row), flush=True)
    tune(q, k, v, cu, dout, nominal)


def tune(q, k, v, cu, dout, nominal: float) -> None:
    """Each of hive's attention kernels timed at a few tile sizes (one JSON line per setting);
    the best of each and their sum last."""
    from dataclasses import replace

    from hive_train import doc_attention as da

    scale = q.shape[-1] ** -0.5
    base = da.BLOCKS
    fwd = [(64, 64, 4, 3), (64, 32, 4, 3), (64, 64, 4, 4), (64, 64, 8, 3), (32, 64, 4, 3), (128, 64, 8, 3)]
    kv = [
        (64, 128, 8, 2),
        (64, 128, 8, 3),
        (64, 128, 4, 2),
        (32, 128, 8, 2),
        (64, 64, 4, 2),
        (128, 128, 8, 2),
    ]
    dq = [(64, 32, 4, 3), (64, 32, 4, 4), (32, 32, 4, 3), (64, 64, 4, 3), (64, 16, 4, 3), (128, 32, 8, 3)]
    out, lse = da.forward(q.detach(), k.detach(), v.detach(), cu, scale)
    best = {}

    def trial(part, blocks, fn):
        try:
            ms = timed(fn)
        except Exception as err:  # noqa: BLE001 - a setting that does not fit (shared memory, say)
            print(json.dumps({"part": part, "blocks": blocks, "error": str(err).splitlines()[0][:200]}))
            return
        print(json.dumps({"part": part, "blocks": blocks, "ms": ms}), flush=True)
        if part not in best or ms < best[part][1]:
            best[part] = (blocks, ms)

    for m, n, w, s in fwd:
        b = replace(base, m=m, n=n, warps=w, stages=s)
        trial("forward", [m, n, w, s], lambda b=b: da.forward(q, k, v, cu, scale, b))
    for m, n, w, s in kv:  # the backward with each dK/dV setting, dQ at the default
        b = replace(base, kv_m=m, kv_n=n, kv_warps=w, kv_stages=s)
        trial(
            "backward, dK/dV varied",
            [m, n, w, s],
            lambda b=b: da.backward(dout, q, k, v, out, lse, cu, scale, b),
        )
    for m, n, w, s in dq:  # the backward with each dQ setting, dK/dV at the default
        b = replace(base, dq_m=m, dq_n=n, dq_warps=w, dq_stages=s)
        trial(
            "backward, dQ varied",
            [m, n, w, s],
            lambda b=b: da.backward(dout, q, k, v, out, lse, cu, scale, b),
        )
    default_bwd = timed(lambda: da.backward(dout, q, k, v, out, lse, cu, scale, base))
    summary = {part: {"blocks": b, "ms": ms} for part, (b, ms) in best.items()}
    summary["backward at the default"] = default_bwd
    print(json.dumps({"best": summary}), flush=True)


if __name__ == "__main__":
    main()
