"""Generation for evaluation: hive's path against stock peft + `generate`, same run, same prompts.

1. hive: `hive_eval.generate.load_expert` (the DoRA adapter folded into plain bf16 weights once),
   `render_prompts`, `generate` (length-sorted batches, left padding, one static KV cache, each
   decoding step a CUDA graph replay on CUDA). Its wall time counts everything from loading the run
   to the last completion (loading, folding, rendering, capturing, generating).
2. stock: the run loaded as docs/training.md shows (NF4 base through bitsandbytes + `PeftModel`,
   DoRA unmerged), prompts batched in input order with the tokenizer's left padding, and
   `model.generate` with transformers' defaults (dynamic cache) under bf16 autocast (float32 on CPU).

Both decode greedily up to `--max-new-tokens` and stop at the end of the assistant turn; tokens/s
counts generated tokens up to and including each row's end-of-turn token. The JSON also reports
the share of rows whose two completions are identical, and a few that differ.

3. the whole evaluation (`--whole`): what `hive-eval RUN DATA` does, timed by phase: the rows written
   as a normalized dataset, `hive_eval.generate.predict` (load, render, generate, write) and
   `hive_eval.evaluate.evaluate` (parse, EXPLAIN, K=3 synthesized databases per gold query in the
   embedded PostgreSQL, execution, comparison); then scoring once more with gold as the predictions,
   so every row takes every check (the briefly trained random model's answers rarely parse).

The run: `--run RUN_DIR` (an existing hive-train run), or one made here: synthetic text-to-SQL rows
(`--rows`, several schemas, so prompts differ in length) are packed and a DoRA adapter is trained
on them for `--train-steps` steps (high constant learning rate, so the answers are partly learnt and
completions end at the end of the turn rather than at the token limit). On CUDA the base is
Qwen3-0.6B's exact architecture with random weights built offline from its config (speed depends on
the shapes, not the weights; as in `train_throughput.py`); with `--device cpu`, the tiny fixture
model. The tokenizer defaults to `fixtures/tokenizer` (Qwen3's special tokens and chat template;
pass `--tokenizer .bench/train/tokenizer` for the real Qwen3 vocabulary).

    python benchmarks/eval_generation.py --device cpu --rows 48 --out /tmp/eval-gen.json
    python benchmarks/eval_generation.py --device cuda --rows 500 --whole --out $OUT/eval_generation.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TABLES = {
    "users": ["id INT", "name TEXT", "city TEXT", "age INT", "signup DATE"],
    "orders": ["id INT", "user_id INT", "total NUMERIC(10, 2)", "placed_at TIMESTAMP", "status TEXT"],
    "products": ["id INT", "title TEXT", "price NUMERIC(10, 2)", "stock INT", "category TEXT"],
    "flights": ["id INT", "origin TEXT", "destination TEXT", "departs TIMESTAMP", "seats INT"],
    "books": ["id INT", "title TEXT", "author TEXT", "year INT", "pages INT"],
    "employees": ["id INT", "name TEXT", "department TEXT", "salary NUMERIC(12, 2)", "hired DATE"],
}
WORDS = ["Paris", "Rome", "Oslo", "Lima", "Kyoto", "Cairo", "Quito", "Dakar", "Perth", "Turin"]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    """Text-to-SQL rows in the normalized create_context shape (question, context, answer, dialect),
    over schemas of 1 to 6 tables so prompt lengths vary."""
    rng = random.Random(seed)
    names = list(TABLES)
    rows = []
    for i in range(n):
        chosen = rng.sample(names, rng.randint(1, len(names)))
        schema = "-- Dialect: postgres\n" + "\n".join(
            f"CREATE TABLE {t} ({', '.join(TABLES[t])});" for t in chosen
        )
        table = chosen[0]
        column = TABLES[table][rng.randrange(1, len(TABLES[table]))].split()[0]
        word = rng.choice(WORDS)
        kind = i % 4
        if kind == 0:
            q, a = f"How many {table} are there?", f"SELECT COUNT(*) FROM {table}"
        elif kind == 1:
            q, a = f"List the {column} of every row in {table}.", f"SELECT {column} FROM {table}"
        elif kind == 2:  # a text column: a word compared with a date or a number would not run
            column = rng.choice([c.split()[0] for c in TABLES[table] if c.endswith("TEXT")])
            q = f"Which {table} have {column} equal to {word}?"
            a = f"SELECT * FROM {table} WHERE {column} = '{word}'"
        else:
            q = f"Show the {rng.randint(2, 9)} largest {column} values in {table}."
            a = f"SELECT {column} FROM {table} ORDER BY {column} DESC LIMIT {q.split()[2]}"
        rows.append({"question": q, "context": schema, "answer": a, "dialect": "postgres"})
    return rows


def qwen3_06b_dir(path: Path) -> Path:
    """Qwen3-0.6B's architecture with random weights (seeded), saved once in bf16."""
    if not (path / "config.json").exists():
        from train_throughput import qwen3_06b_config  # this folder is on sys.path
        from transformers import Qwen3ForCausalLM

        config = qwen3_06b_config()
        config.eos_token_id, config.pad_token_id = 151645, 151643  # Qwen3's <|im_end|>, <|endoftext|>
        torch.manual_seed(0)
        Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    return path


def make_run(work: Path, rows: list[dict], tokenizer: str, device: str, steps: int) -> Path:
    """Pack `rows` and train a DoRA adapter on them (hive-train, NF4 base) into work/run."""
    from hive_data.pack import pack_dataset
    from hive_train.config import TrainConfig
    from hive_train.loop import train

    data = work / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cuda = device.startswith("cuda")
    # CPU: short packed rows (the block-diagonal attention mask is quadratic in a micro-batch's tokens)
    seq = 1024 if cuda else 512
    pack_dataset([data], work / "shards", tokenizer=tokenizer, seq=seq, val=0.0, progress=False, force=True)
    model = qwen3_06b_dir(work / "qwen3-0.6b-random") if cuda else ROOT / "fixtures" / "tiny-qwen3"
    cfg = TrainConfig(
        model=str(model),
        tokenizer=tokenizer,
        rank=12,
        alpha=24,
        batch_size=16 if cuda else 2,
        grad_accum=1,
        lr=5e-3,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        max_steps=steps,
        eval_every=0,
        save_every=0,
        device=device,
        seed=0,
    )
    train(cfg, work / "shards", work / "run", overwrite=True, progress=False)
    return work / "run"


VARIANTS = {name: {"decoder": name} for name in ("graphs", "static", "hf")}


def hive_path(run: Path, rows: list[dict], args, result: dict, save=lambda: None) -> list[str]:
    """hive's default path, timed from loading the run to the last completion; then, on the loaded
    model, a warm second pass (`--repeat`) and the other decoders (`--variants`)."""
    from hive_eval.generate import GenerationStats, generate, load_expert, render_prompts

    started = time.perf_counter()
    expert = load_expert(run, device=args.device)
    loaded = time.perf_counter()
    prompts = render_prompts(rows, expert.tokenizer, expert.prompt_settings)
    stats = GenerationStats()
    common = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    outputs = generate(expert.model, expert.tokenizer, prompts, stats=stats, **common)
    _sync()
    result.update(load_s=round(loaded - started, 3), wall_s=round(time.perf_counter() - started, 3))
    result.update(stats.to_dict())
    save()
    result["notes"] = expert.notes + stats.notes
    runs = [("warm", {})] if args.repeat else []
    runs += [(name, VARIANTS[name]) for name in args.variants.split(",") if name]
    for name, options in runs:  # on the same loaded model
        again = GenerationStats()
        other = generate(
            expert.model, expert.tokenizer, prompts, stats=again, progress=False, **common, **options
        )
        _sync()
        timed = result.setdefault("variants", {})[name] = again.to_dict()
        timed["same_outputs_as_first"] = other == outputs
        save()
    del expert
    _free()
    return outputs


def stock_path(run: Path, rows: list[dict], args) -> tuple[list[str], dict]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from hive_eval.generate import render_prompts, stop_ids
    from hive_train.export import base_model_source, run_config

    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg, recorded = run_config(run)
    started = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(
        base_model_source(cfg, recorded, run),
        quantization_config=BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        ),
        dtype=dtype,
        device_map={"": args.device},
    )
    from bitsandbytes.nn import Linear4bit

    for module in base.modules():  # docs/training.md's snippet
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
    model = PeftModel.from_pretrained(base, str(run / "adapter")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(run / "tokenizer"), padding_side="left")
    loaded = time.perf_counter()
    from hive_eval.generate import prompt_settings

    prompts = render_prompts(rows, tokenizer, prompt_settings(run)[0])
    stops = sorted(stop_ids(tokenizer, model))
    outputs, new_tokens = [], 0
    gen_started = time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    for start in range(0, len(prompts), args.batch_size):
        batch = tokenizer(
            prompts[start : start + args.batch_size],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(args.device)
        with torch.inference_mode(), autocast:
            out = model.generate(
                **batch,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
            )
        for tokens in out[:, batch["input_ids"].shape[1] :].tolist():
            cut = next((k for k, t in enumerate(tokens) if t in stops), None)
            kept = tokens if cut is None else tokens[:cut]
            new_tokens += len(kept) + (cut is not None)
            outputs.append(tokenizer.decode(kept, skip_special_tokens=False))
    _sync()
    seconds = time.perf_counter() - gen_started
    result = {
        "load_s": round(loaded - started, 3),
        "wall_s": round(time.perf_counter() - started, 3),
        "seconds": round(seconds, 4),
        "new_tokens": new_tokens,
        "tokens_per_s": round(new_tokens / seconds, 2),
        "rows_per_s": round(len(prompts) / seconds, 3),
    }
    del model, base
    _free()
    return outputs, result


def whole_evaluation(run: Path, rows: list[dict], args) -> dict:
    """`hive-eval RUN DATA` through its library calls, each phase timed (see the module docstring)."""
    from hive_eval.evaluate import EvalConfig, evaluate
    from hive_eval.generate import predict

    out = Path(tempfile.mkdtemp(prefix="hive-eval-whole-"))
    data = out / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    started = time.perf_counter()
    stats = predict(
        run, data, out / "completions.jsonl", device=args.device, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, progress=False,
    )  # fmt: skip
    generated = time.perf_counter()
    summary = evaluate(data, out / "completions.jsonl", out, EvalConfig(), progress=False)
    done = time.perf_counter()
    # the model's answers (random weights, briefly trained) rarely parse, which makes scoring cheap;
    # scoring gold as the predictions runs every check (EXPLAIN, K databases, execution) on every row
    gold = out / "gold.jsonl"
    gold.write_text(
        "".join(json.dumps({"row": i, "prediction": r["answer"]}) + "\n" for i, r in enumerate(rows, 1))
    )
    gold_summary = evaluate(data, gold, out / "gold", EvalConfig(), progress=False)
    gold_done = time.perf_counter()
    overall = summary["overall"]
    return {
        "rows": summary["counts"]["rows"],
        "generate_s": round(generated - started, 3),
        "score_s": round(done - generated, 3),
        "total_s": round(done - started, 3),
        "generation": stats.to_dict(),
        "verdicts": {k: overall.get(k) for k in ("ex", "valid", "parses", "exact")},
        "databases_loaded": summary["counts"]["databases_loaded"],
        "score_gold_s": round(gold_done - done, 3),
        "gold_verdicts": {k: gold_summary["overall"].get(k) for k in ("ex", "valid", "parses", "exact")},
        "gold_databases_loaded": gold_summary["counts"]["databases_loaded"],
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--run", default=None, help="an existing hive-train run (else one is made here)")
    parser.add_argument("--work", default=None, help="where to make the run (default: a temporary directory)")
    parser.add_argument("--tokenizer", default=str(ROOT / "fixtures" / "tokenizer"))
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--data", default=None, help="jsonl of rows to use instead of synthetic ones")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on CUDA, 8 on CPU")
    parser.add_argument("--train-steps", type=int, default=None, help="default: 60 on CUDA, 40 on CPU")
    parser.add_argument("--whole", action="store_true", help="also time a whole hive-eval (generate + score)")
    parser.add_argument("--repeat", action="store_true", help="hive: a second, warm pass")
    parser.add_argument(
        "--variants",
        default=None,
        help="hive decoders also timed, comma-separated: graphs, static (the same loop without CUDA "
        "graphs), hf (transformers' generate on the folded model); default: static,hf on CUDA, none on CPU",
    )
    parser.add_argument("--skip-stock", action="store_true")
    parser.add_argument("--make-run-in", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", required=True, help="write the results (JSON) here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = args.device.startswith("cuda")
    args.batch_size = args.batch_size or (64 if cuda else 8)
    if args.variants is None:
        args.variants = "static,hf" if cuda else ""
    steps = args.train_steps if args.train_steps is not None else (60 if cuda else 40)

    if args.data:
        rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line]
        rows = rows[: args.rows]
    else:
        rows = synthetic_rows(args.rows)
    started = time.perf_counter()
    if args.make_run_in:  # the child process below
        make_run(Path(args.make_run_in), rows, args.tokenizer, args.device, steps)
        return
    if args.run:
        run = Path(args.run)
    else:
        # trained in a child process: training patches kernels into transformers' Qwen3 code (Liger's
        # RoPE on CUDA) that must not reach the two generation paths measured here
        work = Path(args.work or tempfile.mkdtemp(prefix="hive-eval-gen-"))
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, *sys.argv, "--make-run-in", str(work)], check=True)
        run = work / "run"
    made = time.perf_counter() - started
    print(f"run ready ({made:.1f} s): {run}", file=sys.stderr, flush=True)

    import peft
    import transformers

    results: dict = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "device": torch.cuda.get_device_name()
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "command": " ".join(sys.argv),
        "run": str(run),
        "run_made_s": round(made, 2) if not args.run else None,
        "rows": len(rows),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
    }

    def save() -> None:  # after every stage: a run cut short still leaves what it measured
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    results["hive"] = {}
    hive_out = hive_path(run, rows, args, results["hive"], save)
    save()
    print(json.dumps({"hive": results["hive"]}), file=sys.stderr, flush=True)
    if not args.skip_stock:
        stock_out, results["stock"] = stock_path(run, rows, args)
        save()
        print(json.dumps({"stock": results["stock"]}), file=sys.stderr, flush=True)
        results["speedup_tokens_per_s"] = round(
            results["hive"]["tokens_per_s"] / max(results["stock"]["tokens_per_s"], 1e-9), 3
        )
        same = [a == b for a, b in zip(hive_out, stock_out)]
        results["identical_share"] = round(sum(same) / len(same), 4)
        results["differing_examples"] = [
            {"row": i, "hive": hive_out[i][:200], "stock": stock_out[i][:200]}
            for i, s in enumerate(same)
            if not s
        ][:3]
    from hive_eval.generate import strip_think

    results["hive_exact_answers"] = sum(strip_think(o) == r.get("answer") for o, r in zip(hive_out, rows))
    if args.whole:
        results["whole_evaluation"] = whole_evaluation(run, rows, args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
