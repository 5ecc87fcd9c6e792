"""Which document-isolated attention kernel is fastest for packed rows on this GPU (forward + backward).

Times, on one micro-batch of the benchmark's packed rows (real document lengths, Qwen3-0.6B's 16
query and 8 key/value heads of 128), each kernel torch offers for variable-length causal attention:
FlashAttention 2 through `torch.nn.attention.varlen.varlen_attn` (what hive runs), and
`scaled_dot_product_attention` on jagged nested tensors with each SDPA backend forced (cuDNN,
FlashAttention, memory-efficient). Each is checked against the first: output and input gradients.

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

    candidates = {"varlen (FlashAttention 2)": varlen}
    for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
        candidates[f"SDPA jagged, {backend}"] = nested(backend)
    # FlashAttention 2 first (the reference), then each newer implementation torch has registered
    impls = list(getattr(torch.nn.attention, "list_flash_attention_impls", lambda: [])())
    for impl in impls:
        candidates[f"varlen, {impl}"] = varlen
    reference = None
    for name, fn in candidates.items():
        row = {"kernel": name}
        impl = name.removeprefix("varlen, ") if name.startswith("varlen, ") else None
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
        except Exception as err:  # noqa: BLE001 - a probe reports whatever happens
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        finally:
            restore = getattr(torch.nn.attention, "restore_flash_attention_impl", None)
            if impl is not None and restore is not None:
                restore()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
