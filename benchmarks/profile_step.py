"""Where a hive-train step spends its time on the GPU: for finding the next speed-up, not for records.

Builds the model as `hive-train --vram 80` does (Qwen3-0.6B's architecture, random weights, NF4 +
DoRA r=12 on q/k/v/o/up/down) and runs one packed 8 x 2048 batch:

1. step time with the host syncs the training loop makes (loss and gradient norm read each step),
   and without any (steps queued back to back, one sync at the end);
2. GPU busy time per step: the sum of kernel durations under the profiler, and the costliest kernels;
3. the same batch as a CUDA graph (`hive_train.cuda_graphs`) against eager, its speed, and the training
   loop's fallback when a capture fails;
4. one DoRA layer of each shape, forward + backward, against the plain base matmuls alone
   (what the adapter adds on top of the frozen GEMMs): the stacked [W; A] path with its fused
   ends, the earlier separate GEMMs with fused ends, and PyTorch ends;
5. `breakdown`: the step's GPU time by part (attention, base GEMMs, adapter, norms and
   activations, LM head + loss, optimizer, other, idle), each kernel charged to the nearest
   enclosing operation the profiler recorded (its autograd function, forward or backward); idle is
   the CUDA-graph step's wall time minus the kernel time.

    python benchmarks/profile_step.py --data .bench/train
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def build(data: Path, vram: str = "80"):
    import train_throughput as tt

    from hive_data.shards import open_shards
    from hive_train import attention
    from hive_train.data import RowTable, flatten
    from hive_train.model import compute_dtype, load_model

    model_dir = tt.make_model_dir(Path(tempfile.gettempdir()) / "qwen3-0.6b-random")
    tokenizer_dir = tt.unpack_tokenizer(data / "tokenizer")
    cfg = tt.hive_config(model_dir, tokenizer_dir, 10, vram)
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    dtype = compute_dtype(cfg, device)
    attention.register()
    model = load_model(cfg, device, dtype).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    model.hive_fast.attach(opt)
    table = RowTable.from_arrow(open_shards(data / "shards").split("train"))
    batch = flatten(table, np.arange(8)).to(device)
    backend = attention.choose_backend(cfg.attention, device)
    return model, params, opt, batch, backend


def step(model, params, opt, batch, backend, sync: bool):
    from hive_train.loss import micro_loss

    loss = micro_loss(model, batch, backend) / batch.loss_tokens
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    if sync:
        float(loss), float(norm)
    opt.step()
    opt.zero_grad(set_to_none=True)


def timed(fn, n: int, *args) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn(*args)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def whole_step(data: Path) -> None:
    model, params, opt, batch, backend = build(data)
    tokens = batch.length
    for _ in range(3):
        step(model, params, opt, batch, backend, True)
    for sync in (True, False):
        s = timed(step, 10, model, params, opt, batch, backend, sync)
        print(f"step with{'' if sync else 'out'} host syncs: {s * 1e3:.1f} ms, {tokens / s:,.0f} tokens/s")
    # host time to queue one step while the GPU is still busy with the previous ones
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2e9))  # ~1 s of GPU work ahead of the host, so launches never block
    t0 = time.perf_counter()
    step(model, params, opt, batch, backend, False)
    print(f"host time to queue one step (no syncs): {(time.perf_counter() - t0) * 1e3:.1f} ms")
    torch.cuda.synchronize()

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step(model, params, opt, batch, backend, True)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    busy = sum(e.self_device_time_total for e in events) / 3 / 1e3
    print(
        f"GPU kernel time per step: {busy:.1f} ms ({tokens / busy * 1e3:,.0f} tokens/s if the GPU never idled)"
    )
    events.sort(key=lambda e: -e.self_device_time_total)
    print("| kernel | ms per step | calls per step |")
    print("|---|---|---|")
    for e in events[:30]:
        print(f"| {e.key[:90]} | {e.self_device_time_total / 3 / 1e3:.2f} | {e.count // 3} |")


# Part of the step a kernel belongs to, by the names of the operations around it (innermost first).
PARTS = (
    ("attention", ("flash", "varlen", "attention", "DocAttention", "_attn_")),
    ("LM head + loss", ("CrossEntropy", "cross_entropy")),
    ("norms", ("RMSNorm", "rms_norm")),
    ("activations + RoPE", ("SwiGLU", "Rope", "rope")),
    ("optimizer", ("Optimizer.step", "adam", "clip_grad", "foreach")),
    ("adapter", ("_AdapterLinear",)),
)


def _part(event) -> str:
    """The part of the step `event` (a profiler FunctionEvent) belongs to. Inside a DoRA layer a
    matrix product whose three sizes are all >= 256 is the base GEMM (with the stacked weight it
    also carries A's 16 rows); the skinny low-rank products and the fused ends are the adapter."""
    names = []
    node = event
    while node is not None:
        names.append(node.name)
        node = node.cpu_parent
    for part, keys in PARTS:
        if any(key in name for name in names for key in keys):
            if part == "adapter" and event.name in ("aten::mm", "aten::addmm", "aten::matmul"):
                shapes = [s for s in (event.input_shapes or []) if len(s) == 2]
                if len(shapes) >= 2 and min(shapes[0] + shapes[1]) >= 256:
                    return "base GEMMs"
            return part
    if event.name in ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear"):
        return "base GEMMs"  # the layers no adapter covers (gate_proj)
    return "other"


def breakdown(data: Path) -> None:
    """GPU time per step by part, from the profiler's kernels on eager steps; idle from the
    graphed step's wall time (`graphed_step_time`) minus the kernel time."""
    from torch.profiler import ProfilerActivity, profile

    model, params, opt, batch, backend = build(data)
    for _ in range(3):
        step(model, params, opt, batch, backend, True)
    torch.cuda.synchronize()
    steps = 3
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step(model, params, opt, batch, backend, True)
        torch.cuda.synchronize()
    parts: dict[str, float] = {}
    other: dict[str, float] = {}
    kernels: dict[tuple[str, str], list[float]] = {}  # (part, kernel) -> [ms per step, launches]
    for event in prof.events():
        kernel_us = sum(k.duration for k in getattr(event, "kernels", []))
        if not kernel_us:
            continue
        part = _part(event)
        parts[part] = parts.get(part, 0.0) + kernel_us / steps / 1e3
        for k in event.kernels:
            entry = kernels.setdefault((part, k.name[:70]), [0.0, 0])
            entry[0] += k.duration / steps / 1e3
            entry[1] += 1
        if part == "other":
            key = f"{event.name} {event.input_shapes}"[:100]
            other[key] = other.get(key, 0.0) + kernel_us / steps / 1e3
    busy = sum(parts.values())
    del model, params, opt
    gc.collect()
    torch.cuda.empty_cache()
    wall = graphed_step_time(data)
    gc.collect()
    torch.cuda.empty_cache()
    parts["idle (graphed step wall time - kernel time)"] = max(wall * 1e3 - busy, 0.0)
    print(f"\nstep breakdown, {batch.length} tokens: kernels {busy:.1f} ms, graphed step {wall * 1e3:.1f} ms "
          f"({batch.length / wall:,.0f} tokens/s)")  # fmt: skip
    print("| part | ms per step | share |\n|---|---|---|")
    for part, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"| {part} | {ms:.1f} | {ms / (wall * 1e3):.0%} |")
    print("\nlargest kernels of each part (ms per step, launches per step):")
    for part in sorted(parts, key=lambda p: -parts[p]):
        top = sorted(((k, v) for (p, k), v in kernels.items() if p == part), key=lambda kv: -kv[1][0])[:5]
        for name, (ms, count) in top:
            print(f"  {part[:18]:18s} {ms:6.2f}  x{count // steps:<4d} {name}")
    print("\nlargest 'other' operations (ms per step):")
    for key, ms in sorted(other.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {ms:6.2f}  {key}")


def graphed_step_time(data: Path) -> float:
    """Seconds per step of the batch replayed as a CUDA graph, with clipping and AdamW."""
    model, params, opt, batch, backend, plain, graphed = _graph_setup(data)
    n = plain.loss_tokens
    graphed.run([plain], n)

    def one():
        graphed.run([plain], n)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    for _ in range(3):
        one()
    return timed(one, 10)  # the model and graph are freed on return


def _base_gemms(x, w, dy):
    return x.detach() @ w.t(), dy @ w


def _dora_layer(x, a, b, m, layer, dy):
    from hive_train.fast_adapters import _AdapterLinear

    _AdapterLinear.apply(x, a, b, m, layer).backward(dy)


def _graph_setup(data: Path):
    from hive_data.shards import open_shards
    from hive_train.cuda_graphs import GraphedStep, static_shape
    from hive_train.data import RowTable, flatten

    gc.collect()
    torch.cuda.empty_cache()
    model, params, opt, batch, backend = build(data)
    table = RowTable.from_arrow(open_shards(data / "shards").split("train"))
    rows = np.arange(8)
    plain = flatten(table, rows)
    shape = static_shape(table, [rows, np.arange(8, 16)])
    graphed = GraphedStep(model, backend, shape, pad_id=0, device=torch.device("cuda"))
    return model, params, opt, batch, backend, plain, graphed


def _eager_grads(model, params, batch, backend) -> tuple[float, torch.Tensor]:
    from hive_train.loss import micro_loss

    for p in params:
        p.grad = None
    model.hive_fast.mark_stale()
    loss = micro_loss(model, batch, backend) / batch.loss_tokens
    loss.backward()
    return float(loss), torch.cat([p.grad.flatten() for p in params])


def graphed_step(data: Path) -> None:
    """The batch through `GraphedStep`, then eagerly at the same parameters: loss and gradients
    compared; then the graph's speed (replay, clipping, optimizer, as the training loop runs it).
    The graph comes first: a backward pass run eagerly before the capture breaks it (`fallback`)."""
    model, params, opt, batch, backend, plain, graphed = _graph_setup(data)
    n = plain.loss_tokens
    loss = float(graphed.run([plain], n))
    kept = [p.grad for p in params]  # the graph's own gradient buffers
    got = torch.cat([g.flatten() for g in kept])
    eager, reference = _eager_grads(model, params, batch, backend)
    print(f"graph vs eager: loss {loss:.6f} vs {eager:.6f}, "
          f"gradients ||d||/||ref|| {float((got - reference).norm() / reference.norm()):.2e}")  # fmt: skip
    for p, g in zip(params, kept):
        p.grad = g

    def one():
        graphed.run([plain], n)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    s = timed(one, 10)
    print(f"graphed step: {s * 1e3:.1f} ms, {plain.length / s:,.0f} tokens/s (shape {graphed.shape})")


def fallback(data: Path) -> None:
    """The training loop's fallback when a capture fails: a forward hook that reads a value back
    to the host (which a capture cannot hold) makes it fail; the run must then go on eagerly, with
    the gradients of an eager step."""
    from hive_train.steps import try_graphed

    model, params, opt, batch, backend, plain, graphed = _graph_setup(data)
    _, before = _eager_grads(model, params, batch, backend)

    def host_sync(module, args, output):
        if torch.cuda.is_current_stream_capturing():
            float(output[0].sum())

    hook = model.get_base_model().model.layers[0].register_forward_hook(host_sync)
    loss = try_graphed(graphed, [plain], plain.loss_tokens, print)
    hook.remove()
    if loss is not None:
        print(f"fallback: the capture succeeded despite a host sync (loss {float(loss):.6f})")
        return
    _, after = _eager_grads(model, params, batch, backend)
    print(f"fallback: eager step after the failed capture, gradients ||d||/||ref|| "
          f"{float((after - before).norm() / before.norm()):.2e} from the eager step before it")  # fmt: skip


def layer_costs(tokens: int = 16384, rank: int = 12, dev: str = "cuda") -> None:
    from hive_train import kernels
    from hive_train.fast_adapters import _Layer
    from hive_train.kernels import rank_padding

    shapes = {"q": (2048, 1024), "k/v/o-in": (1024, 1024), "o": (1024, 2048), "up/gate": (3072, 1024),
              "down": (1024, 3072)}  # fmt: skip
    dt = torch.bfloat16
    print(f"\n{tokens} tokens, rank {rank}")
    print("| layer (out x in) | base GEMMs fwd+bwd ms | DoRA stacked ms | DoRA separate GEMMs ms | "
          "DoRA separate, PyTorch ends ms |")  # fmt: skip
    print("|---|---|---|---|---|")
    for name, (n, k) in shapes.items():
        x = torch.randn(tokens, k, device=dev, dtype=dt, requires_grad=True)
        w = torch.randn(n, k, device=dev, dtype=dt) * 0.02
        dy = torch.randn(tokens, n, device=dev, dtype=dt)
        lin = torch.nn.Linear(k, n, bias=False, device=dev, dtype=dt)
        a = torch.nn.Parameter(torch.randn(rank, k, device=dev) * 0.02)
        b = torch.nn.Parameter(torch.randn(n, rank, device=dev) * 0.02)
        m = torch.nn.Parameter(torch.ones(n, device=dev))
        layer = _Layer(module=lin, base=lin, lora_a=a, lora_b=b, magnitude=m, scaling=2.0, dense=w)
        layer.a, layer.b_s, layer.g = a.to(dt), (b * 2).to(dt), torch.rand(n, device=dev) + 0.5
        layer.gs, layer.m32 = layer.g * 2, m.detach().float()

        padded = rank_padding(rank)
        zeros = torch.zeros(padded - rank, k, device=dev, dtype=dt)
        costs = [timed(_base_gemms, 20, x, w, dy)]
        layer.stacked, layer.padded = torch.cat([w, layer.a, zeros]), padded
        costs.append(timed(_dora_layer, 20, x, a, b, m, layer, dy))
        layer.stacked = None
        costs.append(timed(_dora_layer, 20, x, a, b, m, layer, dy))
        fused = kernels._fused
        kernels._fused = lambda *t: False
        costs.append(timed(_dora_layer, 20, x, a, b, m, layer, dy))
        kernels._fused = fused
        print(f"| {name} ({n} x {k}) | " + " | ".join(f"{c * 1e3:.3f}" for c in costs) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".bench/train")
    parser.add_argument(
        "--only",
        default="step,graph,fallback,layers,breakdown",
        help="step, graph, fallback, layers, breakdown",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(torch.__version__, torch.cuda.get_device_name())
    if "step" in only:
        whole_step(Path(args.data))
    if "graph" in only:
        graphed_step(Path(args.data))
    if "fallback" in only:
        fallback(Path(args.data))
    if "layers" in only:
        layer_costs()
        layer_costs(tokens=2048)
    if "breakdown" in only:
        breakdown(Path(args.data))


if __name__ == "__main__":
    main()
