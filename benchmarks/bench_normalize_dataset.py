"""Benchmark `hive-data normalize` on a 100,000-row gretel-style dataset (MySQL -> PostgreSQL).

The dataset is generated from the Spider corpus in ../shared/corpora/spider-mysql: each row pairs a
Spider question and its MySQL answer with the full MySQL schema of its database as `sql_context`,
cycling through train and test pairs (later cycles mark the question with `(variant k)` so rows are
not exact duplicates). It goes to an ignored work directory (`.bench/` by default), never the repo.

    .venv/bin/python benchmarks/bench_normalize_dataset.py                 # both levels, all cores
    .venv/bin/python benchmarks/bench_normalize_dataset.py --levels parse --rows 20000
    .venv/bin/python benchmarks/bench_normalize_dataset.py --source sqlite --rows 10000 --levels parse,explain,execute

`--source sqlite` makes the rows SQLite-sourced, so that `--verify execute` has an engine to run the
source answers in: each schema is printed for SQLite by the normalizer and each answer transpiled
MySQL -> SQLite by sqlglot (the few pairs sqlglot cannot print are skipped).

Targets on the 2-core development machine: `--verify parse` under 60 s, `--verify explain` under 10 min
(100,000 MySQL rows); `--verify execute` is measured, without a target.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPIDER = ROOT.parent / "shared" / "corpora" / "spider-mysql" / "dataset_mysql"
TARGETS = {"parse": 60.0, "explain": 600.0, "execute": None}


def sqlite_pairs(pairs: list[tuple[str, str, str]]) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """The pairs with answers transpiled to SQLite, and each database's schema printed for SQLite."""
    import sqlglot

    from hive_core.errors import DDLError
    from hive_data.ddl import normalize_ddl

    schemas: dict[str, str | None] = {}
    out = []
    for db, question, sql in pairs:
        if db not in schemas:
            text = (SPIDER / "databases" / db / "schema.sql").read_text(encoding="utf-8")
            try:
                schemas[db] = normalize_ddl(text, read="mysql", dialect="sqlite").text
            except DDLError:
                schemas[db] = None
        try:
            answer = sqlglot.transpile(sql, read="mysql", write="sqlite")[0]
        except sqlglot.errors.SqlglotError:
            continue
        if schemas[db] is not None:
            out.append((db, question, answer))
    return out, {k: v for k, v in schemas.items() if v is not None}


def generate(path: Path, rows: int, source: str = "mysql") -> None:
    """Write `rows` gretel-style rows built from Spider's question/SQL pairs and schemas."""
    pairs = []
    for name in ("train_queries.csv", "test_queries.csv"):
        with open(SPIDER / name, encoding="utf-8", newline="") as fh:
            pairs += [(r["database"], r["question"], r["sql"]) for r in csv.DictReader(fh)]
    schemas: dict[str, str] = {}
    if source == "sqlite":
        pairs, schemas = sqlite_pairs(pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for i in range(rows):
            db, question, sql = pairs[i % len(pairs)]
            variant = i // len(pairs)
            if db not in schemas:
                schemas[db] = (SPIDER / "databases" / db / "schema.sql").read_text(encoding="utf-8")
            row = {
                "id": i + 1,
                "domain": db,
                "sql_prompt": question if variant == 0 else f"{question} (variant {variant})",
                "sql_context": schemas[db],
                "sql": sql,
                "sql_explanation": "",
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--workdir", type=Path, default=ROOT / ".bench")
    ap.add_argument("--levels", default="parse,explain", help="comma-separated: parse, explain, execute")
    ap.add_argument("--source", choices=("mysql", "sqlite"), default="mysql", help="the rows' source dialect")
    ap.add_argument("--num-proc", type=int, default=None, help="processes (default: all cores)")
    args = ap.parse_args()
    if not SPIDER.is_dir():
        print(f"skip: {SPIDER} is absent", file=sys.stderr)
        return 0

    from hive_data.normalize_rows import normalize_dataset

    src = args.workdir / f"gretel-spider-{args.source}-{args.rows}.jsonl"
    if not src.exists():
        start = time.perf_counter()
        generate(src, args.rows, args.source)
        print(f"generated {src} ({src.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
    print(f"cores: {os.cpu_count()}, num_proc: {args.num_proc or os.cpu_count()}")
    failed = False
    for level in args.levels.split(","):
        out = args.workdir / f"clean-{level}.jsonl"
        start = time.perf_counter()
        summary = normalize_dataset(
            src,
            out,
            read=args.source,
            dialect="postgres",
            verify=level,
            num_proc=args.num_proc,
            progress=False,
        )
        seconds = time.perf_counter() - start
        target = TARGETS[level]
        ok = target is None or seconds < target
        failed |= not ok
        verdict = "" if target is None else f" (target < {target:.0f} s: {'met' if ok else 'MISSED'})"
        print(
            f"\n--verify {level}: {summary.rows_in:,} rows in {seconds:.1f} s = "
            f"{summary.rows_in / seconds:,.0f} rows/s{verdict}"
        )
        print(summary.text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
