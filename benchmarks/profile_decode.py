"""Where a greedy decoding step's time goes: hive's decoder on Qwen3-0.6B's architecture (random
weights, bf16), one batch of left-padded prompts decoded to the token limit (no stop tokens).

    python benchmarks/profile_decode.py --batch 64 --prompt 400 --new 128 --out $OUT/profile_decode.json

Times the prefill and the decoding steps with and without CUDA graphs, and lists the CUDA kernels of
a few eager steps by total time (torch.profiler).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=400, help="longest prompt; others down to a quarter")
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    from eval_generation import qwen3_06b_dir
    from transformers import AutoModelForCausalLM

    from hive_eval.decode import GreedyDecoder

    path = qwen3_06b_dir(Path("/tmp/qwen3-0.6b-random"))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa")
    model = model.to("cuda").eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.linspace(args.prompt, args.prompt // 4, args.batch).long()
    ids = torch.zeros(args.batch, args.prompt, dtype=torch.long)
    mask = torch.zeros(args.batch, args.prompt, dtype=torch.long)
    for r, n in enumerate(lengths.tolist()):
        ids[r, args.prompt - n :] = torch.randint(0, 150_000, (n,), generator=g)
        mask[r, args.prompt - n :] = 1
    ids, mask = ids.cuda(), mask.cuda()
    result: dict = {
        "batch": args.batch,
        "prompt": args.prompt,
        "new": args.new,
        "device": torch.cuda.get_device_name(),
    }
    outs = {}
    for graphs in (True, False):
        decoder = GreedyDecoder(model, args.batch, args.prompt + args.new, graphs=graphs)
        decoder.decode(ids, mask, args.new, [], 0)  # warm-up (and capture)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        outs[graphs] = decoder.decode(ids, mask, args.new, [], 0)
        torch.cuda.synchronize()
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        decoder.decode(ids, mask, 1, [], 0)  # the prefill alone
        torch.cuda.synchronize()
        prefill = time.perf_counter() - t0
        result["graphs" if graphs else "eager"] = {
            "total_s": round(total, 4),
            "prefill_s": round(prefill, 4),
            "step_ms": round((total - prefill) / (args.new - 1) * 1000, 3),
            "tokens_per_s": round(args.batch * args.new / total, 1),
        }
        print(json.dumps(result), flush=True)
    result["same_tokens"] = bool((outs[True] == outs[False]).all())
    decoder = GreedyDecoder(model, args.batch, args.prompt + args.new, graphs=False)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        decoder.decode(ids, mask, 9, [], 0)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
    result["profile"] = table
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
