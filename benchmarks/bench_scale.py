"""Scale: `hive-data normalize` and `hive-data pack` on generated datasets of 100k and 1M rows.

Each command runs as a real subprocess (`python -m hive_data ...`), so the peak RSS measured is that of
the command and its workers (`resource.getrusage(RUSAGE_CHILDREN)` after each run, in a fresh
process per measurement). Both commands stream: the figures that matter are peak RSS (issue 7: under
4 GB at 1M rows) and rows/s at 1M within 20% of the 100k rate.

The dataset is gretel-style text-to-SQL rows (MySQL schemas and answers, normalized to PostgreSQL)
generated here, no corpus needed; 1% of the rows are broken on purpose (bad JSON, missing answer,
unparsable SQL) so the rejects path is exercised at scale too. Pack uses the fixture tokenizer
(`fixtures/tokenizer`). Files go to `.bench/scale/` (ignored), never the repo.

    .venv/bin/python benchmarks/bench_scale.py                       # 100k and 1M rows
    .venv/bin/python benchmarks/bench_scale.py --rows 100000,200000 --verify parse --num-proc 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "fixtures" / "tokenizer"
PEAK_RSS_LIMIT = 4 << 30

_TYPES = ("INT(11)", "BIGINT", "VARCHAR(80)", "TEXT", "DECIMAL(10,2)", "DATETIME", "TINYINT(1)", "DATE")
_WORDS = (
    "customer order product city name total price user account region store item amount year "
    "status category supplier employee salary department project invoice"
).split()


def _schema(k: int) -> tuple[str, list[tuple[str, list[str]]]]:
    """A MySQL schema of 2-5 tables (the k-th of a fixed family) and its tables with their columns."""
    rng = random.Random(k)
    tables = []
    stmts = []
    for t in range(rng.randint(2, 5)):
        name = f"{rng.choice(_WORDS)}_{k}_{t}"
        cols = ["id"] + [f"{rng.choice(_WORDS)}_{c}" for c in range(rng.randint(2, 8))]
        defs = ["`id` INT(11) NOT NULL AUTO_INCREMENT"]
        defs += [f"`{c}` {rng.choice(_TYPES)}" for c in cols[1:]]
        defs.append("PRIMARY KEY (`id`)")
        if tables:
            parent = tables[-1][0]
            defs.append(f"`{parent}_id` INT(11)")
            defs.append(f"FOREIGN KEY (`{parent}_id`) REFERENCES `{parent}` (`id`)")
            cols.append(f"{parent}_id")
        stmts.append(f"CREATE TABLE `{name}` ({', '.join(defs)}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;")
        tables.append((name, cols))
    stmts.append(f"INSERT INTO `{tables[0][0]}` (`id`) VALUES (1), (2);")
    return "\n".join(stmts), tables


def _answer(rng: random.Random, tables: list[tuple[str, list[str]]], i: int) -> tuple[str, str]:
    name, cols = rng.choice(tables)
    col = rng.choice(cols[1:])
    shape = i % 4
    if shape == 0:
        return f"How many {name} have {col} above {i}?", f"SELECT COUNT(*) FROM `{name}` WHERE `{col}` > {i}"
    if shape == 1:
        return (
            f"List {col} of the first {i % 50 + 1} {name} by id.",
            f"SELECT `{col}` FROM `{name}` ORDER BY `id` LIMIT {i % 50 + 1}",
        )
    if shape == 2:
        return (
            f"Count {name} per {col}, most common first (case {i}).",
            f"SELECT `{col}`, COUNT(*) AS n FROM `{name}` GROUP BY `{col}` ORDER BY n DESC LIMIT {i % 7 + 1}",
        )
    return (
        f"Which {name} ids have {col} equal to 'v{i}'?",
        f"SELECT t.`id` FROM `{name}` AS t WHERE t.`{col}` = 'v{i}'",
    )


def generate(path: str | os.PathLike, rows: int, schemas: int = 200, seed: int = 0) -> Path:
    """Write `rows` gretel-style JSONL rows (written to a temporary name, then renamed). 1% are broken:
    bad JSON, a missing answer, or an answer that does not parse."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    family = [_schema(k) for k in range(schemas)]
    rng = random.Random(seed)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for i in range(rows):
            ddl, tables = family[rng.randrange(schemas)]
            question, sql = _answer(rng, tables, i)
            row = {"id": i + 1, "sql_prompt": question, "sql_context": ddl, "sql": sql, "sql_explanation": ""}
            if i % 100 == 37:
                kind = (i // 100) % 3
                if kind == 0:
                    out.write(f'{{"id": {i + 1}, "sql_prompt": "broken\n')
                    continue
                if kind == 1:
                    del row["sql"]
                else:
                    row["sql"] = "SELEC nothing FROM"
            out.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return path


def run_measured(args: list[str], *, env: dict | None = None) -> dict:
    """Run a command in a child of a fresh Python process; its wall time, peak RSS of the child tree
    (the largest single process: ru_maxrss of reaped children) and exit status."""
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)\n"
        "s = time.perf_counter() - t\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'rc': p.returncode, 'seconds': s, 'maxrss': r.ru_maxrss * 1024,\n"
        "                  'stdout': p.stdout[-2000:], 'stderr': p.stderr[-2000:]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout)


def hive_data(*args: str) -> list[str]:
    return [sys.executable, "-m", "hive_data", *args]


def measure(rows: int, workdir: Path, verify: str, num_proc: int | None, seq: int) -> dict:
    src = workdir / f"scale-{rows}.jsonl"
    if not src.exists():
        generate(src, rows)
    clean = workdir / f"clean-{rows}.jsonl"
    norm_args = ["normalize", str(src), "-o", str(clean), "--read", "mysql", "--verify", verify]
    pack_args = ["pack", str(clean), "-o", str(workdir / f"shards-{rows}"), "--tokenizer", str(TOKENIZER)]
    pack_args += ["--seq", str(seq), "--force", "-q"]
    if num_proc:
        norm_args += ["--num-proc", str(num_proc)]
        pack_args += ["--num-proc", str(num_proc)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    norm = run_measured(hive_data(*norm_args), env=env)
    if norm["rc"] != 0:
        raise SystemExit(f"normalize failed: {norm['stderr']}")
    pack = run_measured(hive_data(*pack_args), env=env)
    if pack["rc"] != 0:
        raise SystemExit(f"pack failed: {pack['stderr']}")
    return {"rows": rows, "normalize": norm, "pack": pack}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="100000,1000000", help="comma-separated row counts")
    ap.add_argument("--workdir", type=Path, default=ROOT / ".bench" / "scale")
    ap.add_argument("--verify", default="parse", choices=["parse", "explain"])
    ap.add_argument("--num-proc", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--seq", type=int, default=2048)
    args = ap.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]
    print(
        f"cores: {os.cpu_count()}, num_proc: {args.num_proc or 'all'}, verify: {args.verify}, seq {args.seq}"
    )
    results = [measure(n, args.workdir, args.verify, args.num_proc, args.seq) for n in sizes]
    base = results[0]
    print(f"\n{'rows':>10}  {'command':<9} {'seconds':>8} {'rows/s':>9} {'vs first':>9} {'peak RSS':>10}")
    ok = True
    for res in results:
        for cmd in ("normalize", "pack"):
            r = res[cmd]
            rate = res["rows"] / r["seconds"]
            rel = rate / (base["rows"] / base[cmd]["seconds"])
            ok &= r["maxrss"] < PEAK_RSS_LIMIT and (res is base or rel >= 0.8)
            print(
                f"{res['rows']:>10,}  {cmd:<9} {r['seconds']:>8.1f} {rate:>9,.0f} {rel:>8.0%} "
                f"{r['maxrss'] / 2**20:>8,.0f} MB"
            )
    print(f"\nbounds (peak RSS < 4 GB, rate >= 80% of the first size's): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
