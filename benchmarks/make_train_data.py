"""Make the packed shards and the tokenizer that `train_throughput.py` trains on.

Documents are chat rows (system + user prompt, assistant answer) whose token lengths follow a
lognormal distribution (median ~300 tokens, capped at 2048), built from the Spider corpus's
questions, schemas and SQL so the text is realistic; they are packed by `hive-data pack` with a
Qwen3-compatible tokenizer (real 151k vocabulary, built offline by
`../shared/tools/make_qwen_tokenizer.py`).

Usage (from the repo root; needs `pip install -e '.[bench]'`):
    python benchmarks/make_train_data.py --out .bench/train --tokens 1500000
The output folder holds `tokenizer/` and `shards/`; carry it to the device machine.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SPIDER = SHARED / "corpora" / "spider-mysql" / "dataset_mysql"


def build_tokenizer(out: Path) -> None:
    packed = out / "tokenizer.json.gz"
    if packed.exists() and not (out / "tokenizer.json").exists():
        with gzip.open(packed, "rb") as src, open(out / "tokenizer.json", "wb") as dst:
            shutil.copyfileobj(src, dst)
    if (out / "tokenizer.json").exists():
        return
    script = SHARED / "tools" / "make_qwen_tokenizer.py"
    subprocess.run([sys.executable, str(script), str(out)], check=True, stdout=subprocess.DEVNULL)


def spider_rows() -> list[tuple[str, str, str]]:
    with open(SPIDER / "train_queries.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    schemas: dict[str, str] = {}
    out = []
    for row in rows:
        db = row["database"]
        if db not in schemas:
            path = SPIDER / "databases" / db / "schema.sql"
            schemas[db] = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        out.append((row["question"], schemas[db], row["sql"]))
    return out


def documents(target_tokens: int, tokenizer, seed: int = 0):
    """Yield chat rows until about `target_tokens` tokens, each cut to a lognormal token budget."""
    rng = np.random.default_rng(seed)
    source = spider_rows()
    total = 0
    while total < target_tokens:
        question, schema, sql = source[int(rng.integers(len(source)))]
        budget = int(min(max(rng.lognormal(np.log(300), 0.75), 48), 2000))
        answer_ids = tokenizer(sql).input_ids
        answer_budget = max(8, budget // 4)
        if len(answer_ids) < answer_budget:  # longer answers: join several queries of the same kind
            extra = [
                source[int(rng.integers(len(source)))][2]
                for _ in range(answer_budget // max(len(answer_ids), 1))
            ]
            sql = ";\n".join([sql, *extra])
            answer_ids = tokenizer(sql).input_ids
        answer = tokenizer.decode(answer_ids[:answer_budget])
        prompt_budget = max(16, budget - answer_budget - 20)
        schema_ids = tokenizer(schema).input_ids
        while len(schema_ids) < prompt_budget:
            schema_ids = schema_ids + schema_ids
        system = "You translate questions into PostgreSQL.\n\n" + tokenizer.decode(schema_ids[:prompt_budget])
        total += budget
        yield {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".bench/train")
    parser.add_argument("--tokens", type=int, default=1_500_000)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(out / "tokenizer")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    rows = out / "rows.jsonl"
    with open(rows, "w", encoding="utf-8") as fh:
        for doc in documents(args.tokens, tokenizer):
            fh.write(json.dumps(doc) + "\n")
    from hive_data.pack import PackConfig, describe, pack_dataset

    result = pack_dataset(
        [rows],
        out / "shards",
        PackConfig(tokenizer=str(out / "tokenizer"), seq=2048, val=0.01, force=True, progress=False),
    )
    print(describe(result))
    rows.unlink()
    # the device call carries at most 64 MiB: ship the 18 MB tokenizer.json gzipped (2.8 MB)
    raw = out / "tokenizer" / "tokenizer.json"
    with open(raw, "rb") as src, gzip.open(raw.with_suffix(".json.gz"), "wb", compresslevel=9) as dst:
        shutil.copyfileobj(src, dst)
    raw.unlink()


if __name__ == "__main__":
    main()
