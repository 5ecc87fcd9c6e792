"""Training throughput: TRL's SFTTrainer (stock and hand-tuned) against hive-train, in one process.

All setups train the same adapter (QLoRA NF4 double-quant, bf16 compute, DoRA r=12 alpha=24 on
q/k/v/o/up/down) on the same packed shards (made by `benchmarks/make_train_data.py` with
`hive-data pack`), with the same tokens per optimizer step (8 rows x 2048), on Qwen3-0.6B's exact
architecture with random weights (speed depends on the shapes, not the weights).

1. TRL stock, as its documentation recommends for QLoRA + DoRA: packing (bfd, rows pre-packed by
   hive so both see the same rows), padding_free=True, SDPA, use_liger_kernel=True, TRL's other
   defaults (gradient checkpointing on), lora_dropout=0.05.
2. TRL tuned by hand for an 80 GB GPU: gradient_checkpointing=False, lora_dropout=0.
3. hive-train with its defaults for an 80 GB GPU (`--vram 80`).
Then hive-train at each `--vram` tier (8, 12, 16, 24), the numerics of hive's fast path against
stock bitsandbytes + peft on one batch, and hive-train's start-up time (command to first step).

Throughput counts real tokens (no padding exists in packed rows) over timed steps after warm-up.
MFU uses hive's own FLOP count for every setup (`hive_train.metrics.step_flops`, the formula
hive-train writes to metrics.jsonl and report.md): per token, forward 2N + input-gradient backward
2N over the decoder's linear layers (N = 440M; frozen weights get no weight gradient, the small
adapter matmuls are left out); the LM head's 4·vocab·hidden per *loss* token (the logits a
training step needs); causal attention over the real document lengths. Peak: 989 TFLOP/s dense
bf16 (H100/H200 SXM datasheet).

Run on the device machine (see BENCHMARKS.md for the exact command).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
PEAK_FLOPS = 989e12
ROWS_PER_STEP = 8


def qwen3_06b_config():
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=151936,
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )


def nf4_config(compute: torch.dtype = torch.bfloat16):
    """QLoRA's quantization, the same for every setup: NF4, double quantization, bf16 compute
    (float32 compute only for the numerics reference)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )


def dora_model(
    model_dir: Path, attn_implementation: str, dtype: torch.dtype = torch.bfloat16, device: str = "cuda"
):
    """NF4 base + a seeded DoRA adapter (r=12, alpha 24, dropout 0) whose B is not zero, so the
    adapter contributes as it does after some training; in training mode. The NF4 codes are the
    same for every `dtype` (quantized from the same bf16 checkpoint); `dtype` is the compute dtype."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=nf4_config(dtype),
        dtype=dtype,
        attn_implementation=attn_implementation,
        device_map={"": 0 if device == "cuda" else device},
    )
    torch.manual_seed(1)
    model = get_peft_model(
        model, LoraConfig(r=12, lora_alpha=24, lora_dropout=0.0, use_dora=True, target_modules=TARGETS)
    )
    torch.manual_seed(2)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model.train()


def make_model_dir(path: Path) -> Path:
    if not (path / "config.json").exists():
        from transformers import Qwen3ForCausalLM

        torch.manual_seed(0)
        Qwen3ForCausalLM(qwen3_06b_config()).to(torch.bfloat16).save_pretrained(path)
    return path


def unpack_tokenizer(path: Path) -> Path:
    raw, packed = path / "tokenizer.json", path / "tokenizer.json.gz"
    if not raw.exists() and packed.exists():
        with gzip.open(packed, "rb") as src, open(raw, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return path


def model_info(model_dir: Path):
    from hive_train.model import read_model_info

    return read_model_info(str(model_dir))


def row_flops(info, tokens: int, completion_mask: np.ndarray, doc_lengths: np.ndarray) -> float:
    """hive's FLOP count (`step_flops`) for one packed row, from its completion mask: a completion
    token that starts a document is never a target (as in `RowTable.row_loss_tokens`)."""
    from hive_train.metrics import step_flops

    mask = np.asarray(completion_mask, dtype=np.int64)
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    loss_tokens = int(mask.sum() - mask[starts[starts < len(mask)]].sum())
    return step_flops(info, tokens, loss_tokens, lengths)


def cleanup() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------------------- TRL


def run_trl(
    name: str, shards: Path, tokenizer_dir: Path, model_dir: Path, *, tuned: bool, steps: int, warmup: int
):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from hive_data.trl_compat import load_for_trl

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    quant = nf4_config()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=quant,
        dtype=torch.bfloat16,
        attn_implementation="sdpa",
        device_map={"": 0},
    )
    adapter = LoraConfig(
        r=12,
        lora_alpha=24,
        lora_dropout=0.0 if tuned else 0.05,
        use_dora=True,
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    info = model_info(model_dir)
    fetched: list[tuple[int, float]] = []  # (tokens, hive's FLOP count) per row, in fetch order
    dataset = load_for_trl(shards, "train")
    to_trl = dataset.format["format_kwargs"]["transform"]

    def counting(batch):  # the same transform, counting the rows the trainer reads
        # the "labels" column holds the completion mask until `to_trl` turns it into labels
        for ids, mask, lengths in zip(batch["input_ids"], batch["labels"], batch["seq_lengths"]):
            fetched.append((len(ids), row_flops(info, len(ids), mask, lengths)))
        return to_trl(batch)

    dataset.set_transform(counting)

    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            torch.cuda.synchronize()
            marks.append(time.perf_counter())

    out = Path(tempfile.mkdtemp(prefix=f"trl-{name}-"))
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=ROWS_PER_STEP,
        gradient_accumulation_steps=1,
        max_steps=warmup + steps,
        learning_rate=2e-4,
        logging_steps=10_000,
        save_strategy="no",
        report_to="none",
        bf16=True,
        packing=True,
        padding_free=True,
        use_liger_kernel=True,
        max_length=2048,
        dataset_kwargs={"skip_prepare_dataset": True},
        **({"gradient_checkpointing": False} if tuned else {}),
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=adapter,
        callbacks=[Clock()],
    )
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = slice(warmup, warmup + steps)
    seconds = marks[warmup + steps - 1] - marks[warmup - 1]
    rows = fetched[timed.start * ROWS_PER_STEP : timed.stop * ROWS_PER_STEP]
    tokens = sum(t for t, _ in rows)
    flops = sum(f for _, f in rows)
    result = {
        "setup": name,
        "tokens_per_s": tokens / seconds,
        "mfu": flops / seconds / PEAK_FLOPS,
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9,
        "gradient_checkpointing": bool(trainer.args.gradient_checkpointing),
    }
    del trainer, model
    shutil.rmtree(out, ignore_errors=True)
    cleanup()
    return result


# --------------------------------------------------------------------------------------- hive


def hive_config(model_dir: Path, tokenizer_dir: Path, steps: int, vram: str, **overrides):
    """hive-train's configuration for `vram`, with 8 rows per optimizer step. The batching is not
    explicit: `train` plans it for the tier (`hive_train.setup.plan_memory`), keeping 8 rows per
    step; `overrides` (a batching, say) only change what the plan starts from."""
    from hive_train.config import TrainConfig

    settings = dict(
        model=str(model_dir),
        tokenizer=str(tokenizer_dir),
        batch_size=ROWS_PER_STEP,
        grad_accum=1,
        max_steps=steps,
        lr=2e-4,
        eval_every=0,
        save_every=0,
        warmup_ratio=0.0,
        vram=vram,
    )
    return TrainConfig(**{**settings, **overrides}).check()


def run_hive(
    name: str,
    shards: Path,
    tokenizer_dir: Path,
    model_dir: Path,
    *,
    vram: str,
    steps: int,
    warmup: int,
    explicit: tuple[str, ...] = (),
    **overrides,
):
    """One hive-train run (`train`, in this process) at `vram`: it plans its memory for the tier
    and, on a bigger GPU, caps itself at the tier's size (`hive_train.setup.vram_cap`). Throughput
    over the timed steps, peak allocated and reserved GPU memory, and the plan it ran."""
    from hive_core.errors import TrainError
    from hive_train.loop import train
    from hive_train.metrics import read_metrics

    out = Path(tempfile.mkdtemp(prefix=f"hive-{name.replace(' ', '_')}-"))
    cfg = hive_config(model_dir, tokenizer_dir, warmup + steps, vram, **overrides)
    cleanup()  # nothing cached from an earlier setup counts as this run's reserved memory
    try:
        try:
            done = train(cfg, shards, out, overwrite=True, progress=False, explicit=explicit)
        except TrainError as err:  # hive-train's out-of-memory advice: report it as the OOM it was
            if "out of memory" not in str(err):
                raise
            raise torch.OutOfMemoryError(str(err)) from None
        peak_allocated, peak_reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        used_graphs, plan = done.cuda_graphs, done.memory_plan or {}
        del done  # its model, so that `cleanup` hands the memory back before the next setup
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)  # `train` lifts its cap; make sure of it
    records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r and "step" in r]
    timed = records[warmup : warmup + steps]
    seconds = sum(r["step_time"] for r in timed)
    tokens = sum(r["step_tokens"] for r in timed)
    flops = sum(r["nominal_flops"] for r in timed)
    result = {
        "setup": name,
        "tokens_per_s": tokens / seconds,
        "mfu": flops / seconds / PEAK_FLOPS,
        "peak_gb": peak_allocated / 1e9,
        "peak_reserved_gb": peak_reserved / 1e9,
        "gradient_checkpointing": bool(plan.get("checkpoint_layers") or cfg.gradient_checkpointing),
        "cuda_graphs": used_graphs,
        "micro_batch_rows": plan.get("micro_rows", cfg.batch_size),
        "grad_accum": plan.get("grad_accum", cfg.grad_accum),
        "checkpoint_layers": plan.get("checkpoint_layers"),
        "lean_layers": plan.get("lean_layers", 0),
        "loss_chunk": plan.get("loss_chunk"),
        "predicted_peak_gb": plan.get("peak_gb"),
        "predicted_step_gb": plan.get("step_gb"),
        "plan": plan.get("description"),
    }
    from hive_train import fast_adapters

    # whether DoRA's per-step norms multiplied bf16 into float32 directly (no float32 copy of W)
    result["mixed_bmm"] = list(fast_adapters._MIXED_BMM)
    from hive_train.attention import newer_flash_attention, triton_kernels_chosen

    # packed-row attention: hive's Triton kernels, or torch's FlashAttention (HIVE_ATTENTION_KERNEL=flash)
    flash = newer_flash_attention(torch.cuda.current_device()) or "FA2"
    result["attention_kernel"] = "hive Triton" if triton_kernels_chosen() else flash
    shutil.rmtree(out, ignore_errors=True)
    cleanup()
    return result


def graph_agreement(
    shards: Path, tokenizer_dir: Path, model_dir: Path, steps: int = 10, warmup: int = 2, **overrides
) -> dict:
    """hive-train `--vram 80` for `steps` steps with CUDA graphs and without (`--no-cuda-graphs`),
    from the same seed on the same schedule: per-step loss and gradient norm, and the trained
    adapters, compared (the graph replays must train the same model as the eager steps); and the
    tokens/s of each after `warmup` steps. `overrides` go to the config (the batching, say)."""
    from safetensors.torch import load_file

    from hive_train.loop import train
    from hive_train.metrics import read_metrics

    runs = {}
    for graphs in (False, True):
        out = Path(tempfile.mkdtemp(prefix="hive-graphs-"))
        cfg = hive_config(model_dir, tokenizer_dir, steps, "80", cuda_graphs=graphs, **overrides)
        result = train(cfg, shards, out, overwrite=True, progress=False)
        records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r and "step" in r]
        adapter = load_file(out / "adapter" / "adapter_model.safetensors")
        runs[graphs] = {
            "used_graphs": result.cuda_graphs,
            "loss": np.array([r["loss"] for r in records]),
            "grad_norm": np.array([r["grad_norm"] for r in records]),
            "lora_B": torch.cat([t.float().flatten() for k, t in sorted(adapter.items()) if "lora_B" in k]),
            "tokens_per_s": sum(r["step_tokens"] for r in records[warmup:])
            / sum(r["step_time"] for r in records[warmup:]),
            "batching": f"{cfg.batch_size} x {cfg.grad_accum}",
        }
        del result
        shutil.rmtree(out, ignore_errors=True)
        cleanup()
    eager, graph = runs[False], runs[True]
    return {
        "steps": steps,
        "batching": graph["batching"],
        "tokens_per_s_eager": eager["tokens_per_s"],
        "tokens_per_s_graph": graph["tokens_per_s"],
        "graph_run_used_graphs": graph["used_graphs"],
        "eager_run_used_graphs": eager["used_graphs"],
        "loss_rel_max": float(np.max(np.abs(graph["loss"] - eager["loss"]) / np.abs(eager["loss"]))),
        "grad_norm_rel_max": float(
            np.max(np.abs(graph["grad_norm"] - eager["grad_norm"]) / eager["grad_norm"])
        ),
        # B starts at zero, so it holds only what training put there
        "lora_B_rel": float((graph["lora_B"] - eager["lora_B"]).norm() / eager["lora_B"].norm()),
        "losses_eager": eager["loss"].round(5).tolist(),
        "losses_graph": graph["loss"].round(5).tolist(),
    }


def startup(shards: Path, tokenizer_dir: Path, model_dir: Path, runs: int = 3) -> dict:
    """`hive-train` from launch to the end of its first optimizer step, `runs` times in fresh
    processes (the first is the coldest), with the machine's bytecode facts and import profile
    (`benchmarks/startup.py` has the details)."""
    from startup import bytecode_facts, import_profile, run_once

    timed = [run_once(str(shards), str(model_dir), str(tokenizer_dir), ["--vram", "80"]) for _ in range(runs)]
    return {"runs": timed, "bytecode": bytecode_facts(), "import_profile": import_profile(top=12)}


RUN_FILES = ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "tokenizer/tokenizer.json",
             "config.yaml", "metrics.jsonl", "loss.png", "report.md", "generation_config.json")  # fmt: skip


def recipe_run(shards: Path, tokenizer_dir: Path, model_dir: Path) -> dict:
    """The user's command with a shipped recipe, on the GPU: is the run directory complete?"""
    out = Path(tempfile.mkdtemp(prefix="hive-recipe-"))
    cmd = [
        sys.executable, "-m", "hive_train", str(shards), "-o", str(out), "--overwrite",
        "--config", str(ROOT / "pipelines" / "sql-postgres.yaml"),
        "--model", str(model_dir), "--tokenizer", str(tokenizer_dir), "--max-steps", "3", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(
        cmd, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, capture_output=True, text=True
    )
    present = {name: (out / name).is_file() and (out / name).stat().st_size > 0 for name in RUN_FILES}
    from hive_train.metrics import read_metrics

    records = read_metrics(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
    result = {
        "command": "hive-train SHARDS -o RUN --config pipelines/sql-postgres.yaml --model M --tokenizer T --max-steps 3",
        "exit": done.returncode,
        "files_present": all(present.values()),
        "missing": [n for n, ok in present.items() if not ok],
        "steps": [r.get("step") for r in records],
        "val_loss": records[-1].get("val_loss") if records else None,
        "stderr_tail": done.stderr[-400:] if done.returncode else "",
    }
    shutil.rmtree(out, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------------- numerics


NUMERICS_ROWS = 4  # stock peft at float32 keeps about twice the 63 GB its bf16 run peaks at with 8 rows


def numerics(shards: Path, model_dir: Path, device: str = "cuda", rows: int = NUMERICS_ROWS) -> dict:
    """Loss and adapter gradients of hive's fast path vs stock bnb + peft on one batch.

    Every variant sees the same batch (the first `rows` rows), the same NF4 codes, the same seeded
    adapter, document-isolated attention and the same LM-head loss:

    - stock: peft's own DoRA layers on bitsandbytes Linear4bit, under bf16 autocast, as TRL runs
      them (peft keeps its adapters in float32, so its DoRA output and the residual stream come
      out float32);
    - stock, no autocast: the same layers without autocast (peft then casts the adapter output
      back to bf16, so the residual stream stays bf16, as in hive): a second stock configuration;
      the difference between the two stock runs shows how far apart two correct bf16 executions
      of this model land;
    - hive: the fast path, bf16, as hive-train runs it;
    - stock fp32 and hive fp32: both with float32 compute on the same NF4 codes, TF32 off, SDPA
      attention: the same math, so they must agree to float32 rounding; stock fp32 is also the
      high-precision reference that each bf16 run is measured against.

    On the CPU (`device="cpu"`) the bf16 runs use SDPA with a block-diagonal mask instead of
    FlashAttention, and peft casts its DoRA output to bf16 under autocast too (it asks whether
    CUDA autocast is on), so "stock" there has a bf16 residual stream.
    """

    from hive_data.shards import open_shards
    from hive_train import attention
    from hive_train.data import RowTable, flatten
    from hive_train.fast_adapters import FastAdapters
    from hive_train.kernels import apply_fast_kernels
    from hive_train.loss import micro_loss

    attention.register()
    table = RowTable.from_arrow(open_shards(shards).split("train"))
    batch = flatten(table, np.arange(rows)).to(device)
    half = attention.choose_backend("auto", torch.device(device))  # varlen on CUDA, sdpa on the CPU

    def grads(fast: bool, dtype: torch.dtype, autocast: bool):
        torch.backends.cuda.matmul.allow_tf32 = dtype != torch.float32
        model = dora_model(model_dir, attention.NAME, dtype, device)
        if fast:
            FastAdapters.install(model, keep_4bit=False, dtype=dtype)
            apply_fast_kernels(model)
        backend = half if dtype != torch.float32 else "sdpa"  # FlashAttention is half precision only
        context = torch.autocast(device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with context:
            loss = micro_loss(model, batch, backend)
        (loss / batch.loss_tokens).backward()
        g = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad])
        del model
        cleanup()
        return float(loss) / batch.loss_tokens, g

    variants = {
        "stock": (False, torch.bfloat16, True),
        "stock_no_autocast": (False, torch.bfloat16, False),
        "hive": (True, torch.bfloat16, False),
        "stock_fp32": (False, torch.float32, False),
        "hive_fp32": (True, torch.float32, False),
    }
    runs, failed = {}, {}
    for name, (fast, dtype, autocast) in variants.items():
        try:
            runs[name] = grads(fast, dtype, autocast)
        except torch.OutOfMemoryError as err:  # report it and keep the other comparisons
            cleanup()
            failed[name] = f"out of memory: {str(err)[:120]}"
    torch.backends.cuda.matmul.allow_tf32 = True

    def compare(a: str, b: str) -> dict:
        if a not in runs or b not in runs:
            return {"loss_rel": float("nan"), "grad_rel": float("nan")}
        (loss_a, ga), (loss_b, gb) = runs[a], runs[b]
        return {
            "loss_rel": abs(loss_a - loss_b) / abs(loss_b),
            "grad_rel": ((ga - gb).norm() / gb.norm()).item(),
        }

    pairs = [
        ("hive", "stock"),
        ("hive", "stock_no_autocast"),  # the same dtype flow as hive: bf16 residual stream
        ("stock_no_autocast", "stock"),
        ("hive", "stock_fp32"),
        ("stock", "stock_fp32"),
        ("stock_no_autocast", "stock_fp32"),
        ("hive_fp32", "stock_fp32"),
    ]
    return {
        "device": device,
        "tokens": batch.length,
        "loss_tokens": batch.loss_tokens,
        "losses": {name: loss for name, (loss, _) in runs.items()},
        "failed": failed,
        "pairs": {f"{a} vs {b}": compare(a, b) for a, b in pairs},
    }


# --------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".bench/train", help="output of make_train_data.py")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per setup")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", default="hive,graphs,tiers,numerics,startup,recipe,trl_tuned,trl_stock")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--device",
        default="cuda",
        choices=("cuda", "cpu"),
        help="cpu: only the numerics check, in bf16 on this machine's CPU (see numerics())",
    )
    parser.add_argument("--numerics-rows", type=int, default=NUMERICS_ROWS, help="rows in the numerics batch")
    args = parser.parse_args()
    if args.device == "cpu":
        args.only = "numerics"
    import peft
    import transformers

    data = Path(args.data)
    shards, tokenizer_dir = data / "shards", unpack_tokenizer(data / "tokenizer")
    model_dir = make_model_dir(Path(tempfile.gettempdir()) / "qwen3-0.6b-random")
    only = set(args.only.split(","))
    versions = {
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else "none (CPU)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    try:
        import bitsandbytes
        import trl

        versions.update(bitsandbytes=bitsandbytes.__version__, trl=trl.__version__)
    except ImportError:
        pass
    print(json.dumps(versions), flush=True)
    results: dict = {"versions": versions, "setups": [], "tiers": []}

    # hive first: TRL's Liger switch patches transformers' Qwen3 classes for the rest of the process
    def guarded(fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except torch.OutOfMemoryError as err:
            cleanup()
            return {"setup": kw.get("name", a[0] if a else "?"), "error": f"out of memory: {str(err)[:120]}"}

    # "lean": every layer lean at --vram 80, nothing else changed: the time lean layers add, which
    # `hive_train.memory_plan.LEAN_COST` models
    eighty = {
        "hive": ("hive-train --vram 80", {}),
        "lean": ("--vram 80, all layers lean", {"explicit": ("lean_layers",), "lean_layers": 1000}),
    }
    for key, (name, extra) in eighty.items():
        if key not in only:
            continue
        results["setups"].append(
            guarded(
                run_hive,
                name,
                shards,
                tokenizer_dir,
                model_dir,
                vram="80",
                steps=args.steps * 3,
                warmup=args.warmup,
                **extra,
            )
        )
        print(results["setups"][-1], flush=True)
    if "tiers" in only:
        for tier in ("8", "12", "16", "24"):
            res = guarded(
                run_hive,
                f"--vram {tier}",
                shards,
                tokenizer_dir,
                model_dir,
                vram=tier,
                steps=args.steps,
                warmup=args.warmup,
            )
            res["tier_gb"] = int(tier)
            if "peak_reserved_gb" in res:
                res["reserved_over_tier"] = res["peak_reserved_gb"] / int(tier)
            results["tiers"].append(res)
            print(res, flush=True)
    if "graphs" in only:
        try:
            results["graph_agreement"] = graph_agreement(shards, tokenizer_dir, model_dir)
            print(results["graph_agreement"], flush=True)
            # the shipped recipes' batching at --vram 80: 4 micro-batches of 16 rows per step
            results["graph_agreement_accum"] = graph_agreement(
                shards, tokenizer_dir, model_dir, steps=8, batch_size=16, grad_accum=4
            )
        except Exception as err:  # keep the TRL comparison that follows
            cleanup()
            results["graph_agreement_error"] = f"{type(err).__name__}: {str(err)[:300]}"
            print(results["graph_agreement_error"], flush=True)
        print(results.get("graph_agreement_accum"), flush=True)
    if "numerics" in only:
        results["numerics"] = numerics(shards, model_dir, args.device, args.numerics_rows)
        print(results["numerics"], flush=True)
    if "startup" in only:
        results["startup"] = startup(shards, tokenizer_dir, model_dir)
        print(results["startup"], flush=True)
    if "recipe" in only:
        results["recipe_run"] = recipe_run(shards, tokenizer_dir, model_dir)
        print(results["recipe_run"], flush=True)
    if "trl_tuned" in only:
        results["setups"].append(
            guarded(
                run_trl,
                "TRL tuned",
                shards,
                tokenizer_dir,
                model_dir,
                tuned=True,
                steps=args.steps,
                warmup=args.warmup,
            )
        )
        print(results["setups"][-1], flush=True)
    if "trl_stock" in only:
        results["setups"].append(
            guarded(
                run_trl,
                "TRL stock",
                shards,
                tokenizer_dir,
                model_dir,
                tuned=False,
                steps=args.steps,
                warmup=args.warmup,
            )
        )
        print(results["setups"][-1], flush=True)

    if results["setups"]:
        print("\n| setup | tokens/s | MFU | peak GB | checkpointing |\n|---|---|---|---|---|")
    for r in results["setups"]:
        if "error" in r:
            print(f"| {r['setup']} | {r['error']} | | | |")
            continue
        print(
            f"| {r['setup']} | {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {r['peak_gb']:.1f} | {r['gradient_checkpointing']} |"
        )
    by = {r["setup"]: r["tokens_per_s"] for r in results["setups"] if "tokens_per_s" in r}
    hive = by.get("hive-train --vram 80")
    for other in ("TRL stock", "TRL tuned"):
        if hive and other in by:
            print(f"hive-train / {other}: {hive / by[other]:.2f}x")
    if results["tiers"]:
        # each tier against the --vram 80 run of this same call; targets: reserved <= 90% of the
        # tier, throughput 24 GB >= 95%, 16 GB >= 85%, 12 GB >= 80%, 8 GB >= 60%
        print(
            "\n| --vram | tokens/s | vs --vram 80 | peak allocated GB | peak reserved GB | reserved / tier "
            "| micro-batch rows x accum | checkpointed layers | lean layers | loss chunk | predicted peak GB "
            "| CUDA graphs |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
        )
        rows = list(results["tiers"])
        top = next((r for r in results["setups"] if r.get("setup") == "hive-train --vram 80"), None)
        if top is not None and "error" not in top:
            rows.append({**top, "tier_gb": 80, "reserved_over_tier": top["peak_reserved_gb"] / 80})
        for r in rows:
            if "error" in r:
                print(f"| {r['tier_gb']} | {r['error']} | | | | | | | | | | |")
                continue
            relative = f"{r['tokens_per_s'] / hive:.1%}" if hive else "n/a"
            print(
                f"| {r['tier_gb']} | {r['tokens_per_s']:,.0f} | {relative} | {r['peak_gb']:.2f} | "
                f"{r['peak_reserved_gb']:.2f} | {r['reserved_over_tier']:.0%} | "
                f"{r['micro_batch_rows']} x {r['grad_accum']} | {r['checkpoint_layers']} | {r.get('lean_layers', 0)} | "
                f"{r['loss_chunk']} | "
                f"{r['predicted_peak_gb']} | {r['cuda_graphs']} |"
            )
    if "startup" in results:
        for i, run in enumerate(results["startup"]["runs"], 1):
            phases = ", ".join(f"{k} {v:.1f}" for k, v in run["phases_s"].items())
            print(f"start-up run {i}: {run['startup_s']:.1f} s to the first step "
                  f"({run['before_train_s']:.1f} s before train(); then {phases})")  # fmt: skip
    if "numerics" in results:
        n = results["numerics"]
        print(f"\nnumerics on {n['device']}, {n['tokens']} tokens ({n['loss_tokens']} under loss)")
        print("| comparison | loss, relative | adapter gradients, ‖Δ‖/‖ref‖ |\n|---|---|---|")
        for pair, d in n["pairs"].items():
            print(f"| {pair} | {d['loss_rel']:.1e} | {d['grad_rel']:.2e} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
