"""Block shapes for the fused DoRA kernels (`hive_train.kernels`), measured on the GPU.

For each layer shape of Qwen3-0.6B at a 16k-token and a 2k-token micro-batch, times the stacked
forward end (`launch_dora_forward`) and the fused backward (`launch_dora_backward`) under several
block shapes and warp counts (median of `triton.testing.do_bench`), with the bytes each must move
and the bandwidth that gives. Results first checked against the default configuration.

    python benchmarks/tune_kernels.py
"""

from __future__ import annotations

import functools
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import argparse

    import triton.testing

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="16384,2048", help="micro-batch sizes in tokens")
    args = parser.parse_args()

    from hive_train.kernels import launch_dora_backward, launch_dora_forward

    dev, dt, r, p = "cuda", torch.bfloat16, 12, 16
    print(torch.__version__, torch.cuda.get_device_name())
    print("| kernel | tokens x outputs | config | ms | GB/s |\n|---|---|---|---|---|")
    for m, n in itertools.product([int(t) for t in args.tokens.split(",")], (1024, 2048, 3072)):
        yf = torch.randn(m, n + p, device=dev, dtype=dt)
        b = torch.randn(n, r, device=dev, dtype=dt)
        g = torch.rand(n, device=dev) + 0.5
        dy = torch.randn(m, n, device=dev, dtype=dt)
        y, _ = launch_dora_forward(yf, n, b, g)
        ref_y = y.clone()
        ref_gb, ref_dm = launch_dora_backward(dy, y, g, b, p)
        fwd_bytes = 2 * (m * (n + p) + m * n + m * p)
        bwd_bytes = 2 * (2 * m * n + m * (n + p))
        for bm, bn, w in itertools.product((64, 128), (64, 128, 256), (4, 8)):
            try:
                out, _ = launch_dora_forward(yf, n, b, g, block_m=bm, block_n=bn, num_warps=w)
                assert torch.equal(out, ref_y)
                run = functools.partial(launch_dora_forward, yf, n, b, g, block_m=bm, block_n=bn, num_warps=w)
                ms = triton.testing.do_bench(run, return_mode="median")
                print(f"| fwd | {m} x {n} | {bm}x{bn} w{w} | {ms:.4f} | {fwd_bytes / ms / 1e6:,.0f} |")
            except Exception as err:  # a shape that does not compile (registers, shared memory)
                print(f"| fwd | {m} x {n} | {bm}x{bn} w{w} | failed: {str(err)[:60]} | |")
        for rows, bn, w in itertools.product((16, 32, 64), (64, 128), (4, 8)):
            try:
                gb, dm = launch_dora_backward(dy, y, g, b, p, rows=rows, block_n=bn, num_warps=w)
                assert torch.equal(gb, ref_gb)
                assert float((dm - ref_dm).norm() / ref_dm.norm()) < 1e-5
                run = functools.partial(
                    launch_dora_backward, dy, y, g, b, p, rows=rows, block_n=bn, num_warps=w
                )
                ms = triton.testing.do_bench(run, return_mode="median")
                print(f"| bwd | {m} x {n} | {rows}x{bn} w{w} | {ms:.4f} | {bwd_bytes / ms / 1e6:,.0f} |")
            except Exception as err:
                print(f"| bwd | {m} x {n} | {rows}x{bn} w{w} | failed: {str(err)[:60]} | |")


if __name__ == "__main__":
    main()
