"""Disk full while writing (issue 7): a real size limit on the command's files.

The real `hive-data pack` / `hive-data normalize` run in a subprocess under `RLIMIT_FSIZE` (what
`ulimit -f` sets), with SIGXFSZ ignored so that a write past the limit fails with EFBIG, as a write to
a full disk fails with ENOSPC. Limits are chosen to hit different writes: the token spill, the shards,
the normalized rows. Each time: exit status 1, one `error:` line, no traceback, the previous output
byte for byte intact, and no partial file under a final name or left behind.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hive_data.shards import open_shards

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = str(ROOT / "fixtures" / "tokenizer")
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("HIVE_DEBUG", None)


def run_limited(args: list[str], limit_bytes: int) -> subprocess.CompletedProcess:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "hive_data", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )


def run(args: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "hive_data", *args], env=ENV, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res


def tree_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def assert_one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.replace("\r", "\n").splitlines() if ln.startswith("error")]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "too large" in lines[0].lower() or "no space" in lines[0].lower(), lines[0]
    return lines[0]


def write_rows(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    words = "how many orders per city name total price users where with the".split()
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            question = " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))
            conv = [
                {"role": "system", "content": f"CREATE TABLE t{i % 9} (id INT, name TEXT);"},
                {"role": "user", "content": f"{question} #{i}"},
                {"role": "assistant", "content": f"SELECT name FROM t{i % 9} WHERE id = {i}"},
            ]
            fh.write(json.dumps({"messages": conv}) + "\n")
    return path


@pytest.fixture(scope="module")
def pack_case(tmp_path_factory):
    base = tmp_path_factory.mktemp("diskfull-pack")
    src = write_rows(base / "rows.jsonl", 3000, seed=1)
    old = base / "old"
    run(
        [
            "pack",
            str(write_rows(base / "old.jsonl", 100, seed=2)),
            "-o",
            str(old),
            "--tokenizer",
            TOKENIZER,
            "-q",
        ]
    )
    probe = base / "probe"
    run(["pack", str(src), "-o", str(probe), "--tokenizer", TOKENIZER, "--seq", "256", "-q"])
    tokens = json.loads((probe / "manifest.json").read_text())["totals"]["tokens"]
    return src, old, tokens


@pytest.mark.slow
@pytest.mark.parametrize("where", ["spill", "shards"])
@pytest.mark.parametrize("num_proc", [1, 2])
def test_pack_on_a_full_disk(pack_case, tmp_path, where, num_proc):
    src, old_dir, tokens = pack_case
    out = tmp_path / "out"
    shutil.copytree(old_dir, out)
    old = tree_bytes(out)
    # the spill holds 4 bytes per token; one shard holds 5 bytes per token plus offsets
    limit = tokens * 2 if where == "spill" else tokens * 4 + tokens // 2
    args = ["pack", str(src), "-o", str(out), "--tokenizer", TOKENIZER, "--seq", "256"]
    res = run_limited([*args, "-q", "--num-proc", str(num_proc)], limit)
    assert_one_line_error(res)
    assert tree_bytes(out) == old
    open_shards(out, verify="sha256")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging directory or temp file left"
    # with room again, the same command completes
    run([*args, "-q"])
    open_shards(out, verify="sha256")


@pytest.mark.slow
def test_pack_on_a_full_disk_without_previous_output(pack_case, tmp_path):
    src, _, tokens = pack_case
    out = tmp_path / "out"
    res = run_limited(
        ["pack", str(src), "-o", str(out), "--tokenizer", TOKENIZER, "--seq", "256", "-q"], tokens
    )
    assert_one_line_error(res)
    assert list(tmp_path.iterdir()) == []


def load_bench_scale():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("num_proc", [1, 2])
def test_normalize_on_a_full_disk(tmp_path, suffix, num_proc):
    bench = load_bench_scale()
    src = bench.generate(tmp_path / "in" / "rows.jsonl", 1200, schemas=10, seed=5)
    old_src = bench.generate(tmp_path / "in" / "old.jsonl", 60, schemas=3, seed=6)
    work = tmp_path / "work"
    work.mkdir()
    out = work / f"clean{suffix}"
    run(["normalize", str(old_src), "-o", str(out), "--read", "mysql", "--num-proc", "1"])
    old = tree_bytes(work)
    assert set(old) == {out.name, f"{out.name}.rejects.jsonl"}
    limit = max(len(b) for b in old.values()) * 3  # the old pair fits, the new output does not
    res = run_limited(
        ["normalize", str(src), "-o", str(out), "--read", "mysql", "--num-proc", str(num_proc)], limit
    )
    assert_one_line_error(res)
    assert tree_bytes(work) == old, "previous output and rejects intact, no temp file left"
    run(["normalize", str(src), "-o", str(out), "--read", "mysql"])
    assert tree_bytes(work).keys() == old.keys() and tree_bytes(work) != old
