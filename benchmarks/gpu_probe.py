"""GPU probe: which pieces of the fast path pay, on the real Qwen3-0.6B architecture (random weights).

Run on the device machine (see BENCHMARKS.md). Prints ms per step and tokens/s for a ladder of
variants over the same packed batch, plus the fast path's numerics against stock bnb + peft.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from train_throughput import dora_model, qwen3_06b_config  # noqa: E402  (this folder is on sys.path)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def doc_lengths(total: int, seq: int, rng) -> list[list[int]]:
    """Rows of `seq` tokens filled with lognormal documents (median ~300, at most seq)."""
    rows = []
    while sum(map(sum, rows)) < total:
        row, room = [], seq
        while room > 0:
            n = int(min(max(rng.lognormal(np.log(300), 0.8), 16), seq))
            n = min(n, room)
            row.append(n)
            room -= n
        rows.append(row)
    return rows


def varlen_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    from torch.nn.attention.varlen import varlen_attn

    cu = kwargs["cu_seq_lens_q"]
    max_len = kwargs["max_length_q"]
    dt = torch.bfloat16
    q = query.transpose(1, 2).reshape(-1, query.shape[1], query.shape[-1]).to(dt)
    k = key.transpose(1, 2).reshape(-1, key.shape[1], key.shape[-1]).to(dt)
    v = value.transpose(1, 2).reshape(-1, value.shape[1], value.shape[-1]).to(dt)
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scaling, window_size=(-1, 0))
    return out.reshape(query.shape[0], query.shape[2], query.shape[1], query.shape[-1]), None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--variants", default="stock,fast,fast_kernels")
    parser.add_argument("--profile", default="fast_kernels")
    args = parser.parse_args()

    import peft
    import transformers
    from transformers import AttentionInterface

    from hive_train.fast_adapters import FastAdapters, linear_cross_entropy_sum

    AttentionInterface.register("hive_varlen", varlen_attention)
    torch.backends.cuda.matmul.allow_tf32 = True
    dev = torch.device("cuda")
    print(
        json.dumps(
            {
                "gpu": torch.cuda.get_device_name(),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
            }
        )
    )
    model_dir = os.path.join(tempfile.gettempdir(), "qwen3-0.6b-random")
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        torch.manual_seed(0)
        from transformers import Qwen3ForCausalLM

        Qwen3ForCausalLM(qwen3_06b_config()).to(torch.bfloat16).save_pretrained(model_dir)

    rng = np.random.default_rng(0)
    seq = 2048
    rows = doc_lengths(8 * seq, seq, rng)[:8]
    lens = [n for row in rows for n in row]
    tokens = sum(lens)
    ids = torch.randint(0, 150000, (1, tokens), device=dev)
    pos = torch.cat([torch.arange(n) for n in lens]).to(dev)[None]
    cu = torch.zeros(len(lens) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lens).cumsum(0)
    cu = cu.to(dev)
    max_len = max(lens)
    labels = ids.clone()
    starts = cu[:-1].long()
    labels[0, starts] = -100  # the first token of each document has no in-document predecessor
    targets_pos = torch.nonzero(labels[0, 1:] != -100).squeeze(1)
    print(f"batch: {len(lens)} documents, {tokens} tokens, longest {max_len}")

    def build(fast: bool, kernels: bool):
        model = dora_model(model_dir, "hive_varlen")
        if fast:
            model._hive_fast = FastAdapters.install(model, keep_4bit=False, dtype=torch.bfloat16)
        if kernels:
            from hive_train.kernels import apply_fast_kernels

            print("kernels:", apply_fast_kernels(model))
        return model

    def step_fn(model, fast: bool):
        inner = model.base_model.model
        with torch.autocast("cuda", dtype=torch.bfloat16):
            hidden = inner.model(
                input_ids=ids,
                position_ids=pos,
                cu_seq_lens_q=cu,
                cu_seq_lens_k=cu,
                max_length_q=max_len,
                max_length_k=max_len,
            ).last_hidden_state[0]
            sel = hidden[targets_pos]
            loss = linear_cross_entropy_sum(sel, inner.lm_head.weight, ids[0, 1:][targets_pos]) / len(
                targets_pos
            )
        loss.backward()
        return loss

    results = {}
    grads = {}
    for variant in args.variants.split(","):
        fast = variant != "stock"
        model = build(fast, kernels=variant == "fast_kernels")
        t0 = time.perf_counter()
        if variant == "fast_compile":
            for layer in model.base_model.model.model.layers:
                layer.compile()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
        if fast:
            model._hive_fast.attach(opt)
        loss = step_fn(model, fast)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        grads[variant] = (
            loss.item(),
            {
                k: torch.cat([p.grad.float().flatten() for n, p in zip(names, params) if k in n])
                for k in ("lora_A", "lora_B", "magnitude")
            },
        )
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        first = time.perf_counter() - t0
        step_fn(model, fast)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step_fn(model, fast)
            opt.step()
            opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / args.steps
        if variant == args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                step_fn(model, fast)
                opt.step()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
            print(
                prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60)
            )
        peak = torch.cuda.max_memory_allocated() / 2**30
        results[variant] = dt
        print(
            f"{variant:14s} first step {first:6.1f}s  {dt * 1000:7.1f} ms/step  {tokens / dt:9.0f} tok/s  peak {peak:5.1f} GiB",
            flush=True,
        )
        del model, opt, params
        gc.collect()
        torch.cuda.empty_cache()
    from hive_train.kernels import swiglu

    g = torch.randn(4096, 3072, device=dev, dtype=torch.bfloat16, requires_grad=True)
    u = torch.randn(4096, 3072, device=dev, dtype=torch.bfloat16, requires_grad=True)
    d = torch.randn(4096, 3072, device=dev, dtype=torch.bfloat16)
    out = swiglu(g, u)
    out.backward(d)
    gg, gu = g.grad.clone(), u.grad.clone()
    g.grad = u.grad = None
    ref = torch.nn.functional.silu(g.float()) * u.float()
    ref.backward(d.float())
    print(
        "swiglu rel err",
        ((out.float() - ref).norm() / ref.norm()).item(),
        ((gg.float() - g.grad).norm() / g.grad.norm()).item(),
        ((gu.float() - u.grad).norm() / u.grad.norm()).item(),
    )
    if "stock" in grads:
        ref_loss, ref = grads["stock"]
        for variant, (loss, g) in grads.items():
            rels = {k: f"{((g[k] - ref[k]).norm() / ref[k].norm()).item():.2e}" for k in g}
            print(f"numerics {variant}: loss {loss:.5f} vs {ref_loss:.5f}, grad rel {rels}")


if __name__ == "__main__":
    main()
