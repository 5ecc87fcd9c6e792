"""`hive-data pack` vs TRL 1.16's own data preparation, side by side on the same rows.

Input: 20,000 Spider-derived chat rows (question + canonical schema + SQL answer, the prompt layout of
`hive_data.prompt`) built from ../shared/corpora/spider-mysql, with a Qwen3-compatible tokenizer built
offline by ../shared/tools/make_qwen_tokenizer.py into .bench/ (needs the `bench` extra:
`pip install -e .[bench]`).

Both sides get the same conversations, the same tokenizer, the same machine, in the same run:

- TRL: `SFTTrainer(..., SFTConfig(packing=True, max_length=2048, completion_only_loss=True,
  dataset_num_proc=2))` on a prompt/completion dataset; timed is the trainer construction, which is
  where TRL tokenizes, builds labels and packs (the tiny model is built before the clock starts);
- hive: the `hive-data pack` command in a subprocess with `--num-proc 2` (start-up, reading the JSONL,
  rendering, tokenizing, packing and writing the shards all inside the clock).

Assistant answers carry the empty think block on both sides (`<think>\\n\\n</think>\\n\\n`), hive's default
`--think empty`, so the texts are identical. Prints tokens/s of each, the ratio, fill efficiency and
tokens lost, plus the time to open the shards for training and hive's peak memory.

    .venv/bin/python benchmarks/bench_pack.py [--rows 20000] [--proc 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SPIDER = SHARED / "corpora" / "spider-mysql" / "dataset_mysql"
TOKENIZER_DIR = ROOT / ".bench" / "qwen3-tokenizer"
EMPTY_THINK = "<think>\n\n</think>\n\n"


def build_tokenizer() -> Path:
    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        TOKENIZER_DIR.parent.mkdir(parents=True, exist_ok=True)
        tool = SHARED / "tools" / "make_qwen_tokenizer.py"
        subprocess.run([sys.executable, str(tool), str(TOKENIZER_DIR)], check=True, stdout=subprocess.DEVNULL)
    return TOKENIZER_DIR


def spider_rows(n: int) -> list[list[dict]]:
    """n distinct text-to-SQL conversations: Spider's train+test pairs with their database schema, the
    pairs repeated under other target-dialect names when more rows are asked for than Spider has."""
    from hive_data.prompt import sql_messages

    schemas: dict[str, str] = {}
    pairs = []
    for name in ("train_queries.csv", "test_queries.csv"):
        with open(SPIDER / name, newline="", encoding="utf-8") as fh:
            pairs += [(r["database"], r["question"], r["sql"]) for r in csv.DictReader(fh)]
    rows, seen = [], set()
    for dialect in ("mysql", "postgres", "sqlite", "duckdb"):
        for db, question, sql in pairs:
            if db not in schemas:
                schemas[db] = (SPIDER / "databases" / db / "schema.sql").read_text(encoding="utf-8")
            key = (dialect, db, question, sql)
            if key in seen:
                continue
            seen.add(key)
            rows.append(sql_messages(question, schemas[db], dialect, sql))
            if len(rows) == n:
                return rows
    raise SystemExit(f"only {len(rows)} distinct rows available")


def run_trl(rows: list[list[dict]], tokenizer, proc: int, seq: int) -> dict:
    import datasets
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from trl import SFTConfig, SFTTrainer

    datasets.disable_caching()
    datasets.disable_progress_bars()
    data = datasets.Dataset.from_list(
        [
            {
                "prompt": r[:-1],
                "completion": [{"role": "assistant", "content": EMPTY_THINK + r[-1]["content"]}],
            }
            for r in rows
        ]
    )
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp,
            packing=True,
            max_length=seq,
            completion_only_loss=True,
            dataset_num_proc=proc,
            report_to="none",
            use_cpu=True,
        )
        start = time.perf_counter()
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        seconds = time.perf_counter() - start
    packed = trainer.train_dataset
    lengths = [len(x) for x in packed["input_ids"]]
    tokens = sum(lengths)
    return {"seconds": seconds, "tokens": tokens, "rows": len(lengths), "fill": tokens / (len(lengths) * seq)}


def run_hive(jsonl: Path, out: Path, proc: int, seq: int) -> dict:
    cmd = [
        str(Path(sys.executable).parent / "hive-data"),
        "pack",
        str(jsonl),
        "-o",
        str(out),
        "--tokenizer",
        str(TOKENIZER_DIR),
        "--seq",
        str(seq),
        "--num-proc",
        str(proc),
        "--val",
        "0",  # TRL makes no validation split: the same work on both sides
        "--force",
        "-q",
    ]
    # A small launcher runs the command and reports its peak RSS: Linux carries a process's peak RSS
    # across exec, so a child forked straight from this (large) process would report ours.
    launcher = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", launcher, *cmd], stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"hive-data pack failed with exit code {proc.returncode}")
    peak_kb = int(proc.stdout.split()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest["totals"]
    return {
        "seconds": seconds,
        "tokens": t["tokens"],
        "rows": t["sequences"],
        "fill": t["fill_efficiency"],
        "dropped": t["rows_dropped"],
        "peak_mb": peak_kb / 1024,
    }


def conversation_tokens(rows: list[list[dict]], tokenizer) -> tuple[int, list[int], float]:
    """Token count of every rendered conversation (bare batch encode, for the tokens-lost check)."""
    texts = [
        tokenizer.apply_chat_template(
            r[:-1] + [{"role": "assistant", "content": EMPTY_THINK + r[-1]["content"]}], tokenize=False
        )
        for r in rows
    ]
    start = time.perf_counter()
    enc = tokenizer.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    seconds = time.perf_counter() - start
    lengths = [len(e.ids) for e in enc]
    return sum(lengths), lengths, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--proc", type=int, default=2)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--skip-trl", action="store_true")
    opts = parser.parse_args()
    if not SPIDER.is_dir():
        raise SystemExit(f"{SPIDER} is absent")
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(build_tokenizer()))
    rows = spider_rows(opts.rows)
    total, lengths, bare_s = conversation_tokens(rows, tokenizer)
    overlong = [n for n in lengths if n > opts.seq]
    print(
        f"input: {len(rows)} Spider-derived chat rows, {total:,} tokens ({total / len(rows):.0f}/row), "
        f"{len(overlong)} rows ({sum(overlong):,} tokens) longer than {opts.seq}"
    )
    print(f"bare batch encode of the rendered texts: {total / bare_s:,.0f} tokens/s")

    with tempfile.TemporaryDirectory(dir=ROOT / ".bench") as tmp:
        jsonl = Path(tmp) / "spider_chat.jsonl"
        with open(jsonl, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({"messages": r}, ensure_ascii=False) + "\n")
        hive = run_hive(jsonl, Path(tmp) / "shards", opts.proc, opts.seq)
        from hive_data.shards import open_shards

        start = time.perf_counter()
        open_shards(Path(tmp) / "shards")
        open_s = time.perf_counter() - start
        trl = None if opts.skip_trl else run_trl(rows, tokenizer, opts.proc, opts.seq)

    hive_tps = hive["tokens"] / hive["seconds"]
    hive_lost = total - hive["tokens"] - sum(overlong)
    print(
        f"hive-data pack: {hive['seconds']:.1f} s, {hive_tps:,.0f} tokens/s, fill {hive['fill']:.2%}, "
        f"{hive['rows']} rows of {opts.seq}, dropped {hive['dropped'] or 'none'} "
        f"({sum(overlong):,} tokens, reported), tokens lost otherwise: {hive_lost:,}; "
        f"peak RSS of its largest process {hive['peak_mb']:.0f} MB; open_shards {open_s * 1000:.0f} ms"
    )
    if trl:
        trl_tps = trl["tokens"] / trl["seconds"]
        trl_lost = total - trl["tokens"]
        print(
            f"TRL {__import__('trl').__version__} SFTTrainer prep: {trl['seconds']:.1f} s, {trl_tps:,.0f} tokens/s, "
            f"fill {trl['fill']:.2%}, {trl['rows']} rows, tokens lost (silently truncated): "
            f"{trl_lost:,} ({trl_lost / total:.1%})"
        )
        print(f"ratio hive/TRL tokens/s: {hive_tps / trl_tps:.2f}x (target >= 3x); fill target >= 99.5%")


if __name__ == "__main__":
    main()
