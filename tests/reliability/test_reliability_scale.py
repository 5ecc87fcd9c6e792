"""Scale (issue 7): a generated 200,000-row dataset normalizes and packs with bounded memory.

The CI guard of `benchmarks/bench_scale.py` (which prints the 100k and 1M figures, rows/s and peak RSS;
speed is measured there, not here). Both commands run as real subprocesses at their defaults (all
cores); peak RSS is the largest `ru_maxrss` of the command's processes, read with
`getrusage(RUSAGE_CHILDREN)` in a fresh parent so that nothing else is counted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from hive_data.shards import open_shards

ROOT = Path(__file__).resolve().parents[2]
ROWS = 200_000
RSS_LIMIT = 4 << 30


def bench_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_200k_rows_normalize_and_pack_with_bounded_memory(tmp_path):
    bench = bench_scale()
    src = bench.generate(tmp_path / "rows.jsonl", ROWS)
    clean = tmp_path / "clean.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    norm = bench.run_measured(
        [sys.executable, "-m", "hive_data", "normalize", str(src), "-o", str(clean), "--read", "mysql"],
        env=env,
    )
    assert norm["rc"] == 0, norm["stderr"]
    print(f"\nnormalize {ROWS} rows: {norm['seconds']:.1f} s, peak RSS {norm['maxrss'] / 2**20:.0f} MB")
    assert norm["maxrss"] < RSS_LIMIT
    # streaming: far less memory than the input holds (a whole-file load alone would exceed it)
    assert norm["maxrss"] < src.stat().st_size, (norm["maxrss"], src.stat().st_size)
    rejects = tmp_path / "clean.jsonl.rejects.jsonl"
    out_rows = sum(1 for _ in open(clean, encoding="utf-8"))
    rejected = sum(1 for _ in open(rejects, encoding="utf-8"))
    assert out_rows + rejected <= ROWS and rejected >= ROWS // 100  # the generator breaks 1% of the rows
    assert f"rows: in {ROWS} = out {out_rows} + rejected {rejected}" in norm["stderr"]

    shards = tmp_path / "shards"
    tokenizer = str(ROOT / "fixtures" / "tokenizer")
    pack = bench.run_measured(
        [
            sys.executable,
            "-m",
            "hive_data",
            "pack",
            str(clean),
            "-o",
            str(shards),
            "--tokenizer",
            tokenizer,
            "-q",
        ],
        env=env,
    )
    assert pack["rc"] == 0, pack["stderr"]
    print(f"pack {out_rows} rows: {pack['seconds']:.1f} s, peak RSS {pack['maxrss'] / 2**20:.0f} MB")
    assert pack["maxrss"] < RSS_LIMIT
    manifest = json.loads((shards / "manifest.json").read_text())
    totals = manifest["totals"]
    assert totals["rows_in"] == out_rows
    assert totals["rows_packed"] + sum(totals["rows_dropped"].values()) == out_rows
    opened = open_shards(shards, verify="size")
    assert sum(t.num_rows for t in opened.tables.values()) == totals["sequences"]
