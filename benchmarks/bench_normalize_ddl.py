"""Benchmark the DDL normalizer on the whole Spider corpus (157 MySQL schema files, 779 tables).

    .venv/bin/python benchmarks/bench_normalize_ddl.py            # best of 3 runs, --read auto
    .venv/bin/python benchmarks/bench_normalize_ddl.py --read mysql --repeat 5

Target on the 2-core development machine: under 3 s for the corpus, one process, cold caches of
the normalizer (files are read before the clock starts; sqlglot is imported before it too).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPIDER = ROOT.parent / "shared" / "corpora" / "spider-mysql" / "dataset_mysql" / "databases"
TARGET_S = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--read", default="auto", help="source dialect (default: detect per file)")
    parser.add_argument("--dialect", default="postgres", help="target dialect")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = parser.parse_args()

    files = sorted(SPIDER.glob("*/schema.sql"))
    if not files:
        print(f"no Spider corpus under {SPIDER}", file=sys.stderr)
        return 2
    texts = [(str(f), f.read_text(encoding="utf-8-sig")) for f in files]

    import sqlglot.tokens

    from hive_data.ddl import normalize_ddl

    times, tables = [], 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        tables = 0
        for name, text in texts:
            tables += len(normalize_ddl(text, read=args.read, dialect=args.dialect, source=name).tables)
        times.append(time.perf_counter() - start)
    best = min(times)
    compiled = getattr(sqlglot.tokens, "SQLGLOTC_INSTALLED", False)
    print(
        f"normalize_ddl: {len(texts)} files, {tables} tables, read={args.read}, sqlglotc={compiled}: "
        f"best {best:.2f} s of {args.repeat} (runs: {', '.join(f'{t:.2f}' for t in times)}); "
        f"target < {TARGET_S:.0f} s: {'OK' if best < TARGET_S else 'MISSED'}"
    )
    return 0 if best < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
