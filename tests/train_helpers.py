"""Shared helpers for the trainer tests: synthetic packed shards written with `hive_data.shards`.

Token ids are random (seeded); every document has a prompt part (no loss) and a completion part,
and rows are packed first-fit up to `seq` tokens, as `hive-data pack` lays them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from hive_data.shards import FORMAT, FORMAT_VERSION, ShardWriter, rows_to_batch, write_manifest

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ROOT / "fixtures" / "tiny-qwen3"
TOKENIZER = ROOT / "fixtures" / "tokenizer"


def tokenizer_meta() -> dict:
    from transformers import AutoTokenizer

    from hive_data.pack import tokenizer_info

    return tokenizer_info(AutoTokenizer.from_pretrained(str(TOKENIZER)))


def make_documents(n: int, seed: int, min_len: int = 6, max_len: int = 40, vocab: int = 4000) -> list[tuple]:
    """(ids, completion_mask) documents with a learnable pattern: completions repeat the prompt."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        half = int(rng.integers(min_len // 2, max_len // 2 + 1))
        prompt = rng.integers(10, vocab, size=half).astype(np.int32)
        ids = np.concatenate([prompt, prompt])
        mask = np.concatenate([np.zeros(half, np.int8), np.ones(half, np.int8)])
        docs.append((ids, mask))
    return docs


def packed_table(docs: list[tuple], seq: int):
    """`pack_rows` of `docs` as the trainer's `RowTable`."""
    import pyarrow as pa

    from hive_train.data import RowTable

    rows = pack_rows(docs, seq)
    batch = rows_to_batch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    return RowTable.from_arrow(pa.Table.from_batches([batch]))


def pack_rows(docs: list[tuple], seq: int) -> list[tuple]:
    """Greedy first-fit into rows of at most `seq` tokens: (ids, seq_lengths, mask) per row."""
    rows: list[list[tuple]] = []
    used: list[int] = []
    for doc in docs:
        n = len(doc[0])
        for i, u in enumerate(used):
            if u + n <= seq:
                rows[i].append(doc)
                used[i] += n
                break
        else:
            rows.append([doc])
            used.append(n)
    return [
        (
            np.concatenate([d[0] for d in row]),
            np.array([len(d[0]) for d in row], np.int32),
            np.concatenate([d[1] for d in row]),
        )
        for row in rows
    ]


def write_shards(
    directory: Path,
    *,
    seq: int = 128,
    train_docs: int = 48,
    val_docs: int = 8,
    seed: int = 0,
    shard_tokens: int = 1500,
    tokenizer: dict | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    infos = []
    for split, count, split_seed in (("train", train_docs, seed), ("val", val_docs, seed + 1000)):
        if not count:
            continue
        rows = pack_rows(make_documents(count, split_seed, max_len=min(40, seq)), seq)
        writer = ShardWriter(directory, split, shard_tokens=shard_tokens)
        for start in range(0, len(rows), 4):
            chunk = rows[start : start + 4]
            writer.write(rows_to_batch([r[0] for r in chunk], [r[1] for r in chunk], [r[2] for r in chunk]))
        infos.extend(info.to_json() for info in writer.close())
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "seq": seq,
        "shards": infos,
        "tokenizer": tokenizer if tokenizer is not None else tokenizer_meta(),
        "chat_template_sha256": None,
        "loss": "assistant",
        "think": "empty",
        "seed": seed,
        "totals": {"rows": sum(i["rows"] for i in infos), "tokens": sum(i["tokens"] for i in infos)},
    }
    write_manifest(directory, manifest)
    return directory


def conversations(n: int) -> list[dict]:
    """n small text-to-SQL conversations in the messages format (five tables, distinct answers)."""
    return [
        {
            "messages": [
                {"role": "system", "content": f"Schema:\nCREATE TABLE t{i % 5} (id INT, name TEXT);"},
                {"role": "user", "content": f"question number {i} about names"},
                {"role": "assistant", "content": f"SELECT name FROM t{i % 5} WHERE id = {i}"},
            ]
        }
        for i in range(n)
    ]


# 16 text-to-SQL rows (normalized, create_context format) the tiny model memorises in ~100 steps:
# the same pairs `tests/eval/test_eval_generate.py` trains and scores.
SQL_SCHEMA = "-- Dialect: postgres\nCREATE TABLE users (id INT, name TEXT, city TEXT, age INT);"
SQL_PAIRS = [
    ("How many users are there?", "SELECT COUNT(*) FROM users"),
    ("List all user names.", "SELECT name FROM users"),
    ("Which users live in Paris?", "SELECT name FROM users WHERE city = 'Paris'"),
    ("What is the average age?", "SELECT AVG(age) FROM users"),
    ("Who is the oldest user?", "SELECT name FROM users ORDER BY age DESC LIMIT 1"),
    ("How many users live in Rome?", "SELECT COUNT(*) FROM users WHERE city = 'Rome'"),
    ("List the cities.", "SELECT DISTINCT city FROM users"),
    ("Show users older than 30.", "SELECT name FROM users WHERE age > 30"),
    ("What is the maximum age?", "SELECT MAX(age) FROM users"),
    ("Count users per city.", "SELECT city, COUNT(*) FROM users GROUP BY city"),
    ("Find the youngest age.", "SELECT MIN(age) FROM users"),
    ("Show the id of Alice.", "SELECT id FROM users WHERE name = 'Alice'"),
    ("List users sorted by name.", "SELECT name FROM users ORDER BY name"),
    ("Total age of all users?", "SELECT SUM(age) FROM users"),
    ("Which city does Bob live in?", "SELECT city FROM users WHERE name = 'Bob'"),
    ("Users under 18?", "SELECT name FROM users WHERE age < 18"),
]


def sql_rows() -> list[dict]:
    return [{"question": q, "context": SQL_SCHEMA, "answer": a, "dialect": "postgres"} for q, a in SQL_PAIRS]


def interpret(script: str, *args: str):
    """Run `script` in a fresh interpreter with Triton's interpreter on (read when the kernels are
    defined) and return the JSON its last line prints."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


_RUN_MANY = """
import contextlib, io, json, sys, traceback
out = {}
for name, (code, args) in json.loads(sys.argv[1]).items():
    buf = io.StringIO()
    sys.argv = ["-c", *args]
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, name, "exec"), {"__name__": "__main__"})
        out[name] = json.loads(buf.getvalue().strip().splitlines()[-1])
    except Exception:
        out[name] = {"error": traceback.format_exc()[-2000:]}
print(json.dumps(out))
"""


def interpret_many(jobs: dict[str, tuple[str, list[str]]]) -> dict:
    """`interpret` for several scripts in one interpreter process (one start-up of torch and
    Triton instead of one each), in order: name -> the JSON its last line printed, or
    {"error": traceback} when it raised."""
    return interpret(_RUN_MANY, json.dumps(jobs))
