"""Crashes and Ctrl-C (issue 7): the real `hive-data pack` / `hive-data normalize` commands, killed for real.

Each run goes through `hive_data.cli.main` in a subprocess started by `PAUSER`, a small wrapper that
wraps one library function so the command stops (writes a marker file, then sleeps) at a chosen
phase: while reading rows, tokenizing, packing, writing shards, writing the manifest, swapping the
output directory in, and for normalize while working and just before each output file is renamed.
The production code has no test hooks; the wrapper only watches calls from outside.

At each pause and again after SIGKILL, nothing half-written exists under a final name: the output is
the previous complete one (or absent), `open_shards` accepts only complete output. A plain rerun of
the real command then gives output byte-identical to an uninterrupted run. SIGINT sent to the whole
process group (what Ctrl-C does) ends the command with exit status 130, one `interrupted:` line and
no traceback, with the same guarantees.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import kill_group, wait_paused

from hive_core.atomic import remove_stale
from hive_core.errors import ShardError
from hive_data.shards import open_shards

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = str(ROOT / "fixtures" / "tokenizer")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("HIVE_DEBUG", None)

# Wraps library functions from the outside and pauses the command at HIVE_PAUSE_PHASE (writing the
# file HIVE_PAUSE_MARK first), then runs the real `hive-data` click group with the given arguments.
PAUSER = r"""
import builtins, os, sys, time
PHASE, MARK = os.environ["HIVE_PAUSE_PHASE"], os.environ["HIVE_PAUSE_MARK"]
RENAME_DST = os.environ.get("HIVE_PAUSE_RENAME", "")

def pause(name):
    if name == PHASE:
        with builtins.open(MARK + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(MARK + ".tmp", MARK)
        time.sleep(300)

import hive_data.normalize_rows, hive_data.pack, hive_data.records, hive_data.shards

def counting(fn, phase, at):
    calls = [0]
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        calls[0] += 1
        if calls[0] == at:
            pause(phase)
        return out
    return wrapper

def reading(fn):
    def wrapper(*args, **kwargs):
        for i, rec in enumerate(fn(*args, **kwargs)):
            if i == 700:
                pause("read")
            yield rec
    return wrapper

hive_data.records.iter_records = reading(hive_data.records.iter_records)
hive_data.normalize_rows.iter_records = reading(hive_data.normalize_rows.iter_records)
# (wrapped only when needed: with worker processes these functions are pickled by name)
if PHASE == "tokenize":
    hive_data.pack._encode_task = counting(hive_data.pack._encode_task, "tokenize", 2)
if PHASE == "work":
    hive_data.normalize_rows._work = counting(hive_data.normalize_rows._work, "work", 3)
hive_data.shards.ShardWriter.write = counting(hive_data.shards.ShardWriter.write, "shards", 2)
def packing(fn):
    def wrapper(*args, **kwargs):
        pause("pack")
        return fn(*args, **kwargs)
    return wrapper
for name in ("pack_documents", "best_fit_decreasing"):  # whichever the pipeline calls
    if hasattr(hive_data.pack, name):
        setattr(hive_data.pack, name, packing(getattr(hive_data.pack, name)))

class HalfThenPause:
    # the manifest's temporary file: half of the text reaches the disk, then the pause
    def __init__(self, fh):
        self.fh = fh
    def write(self, text):
        if PHASE == "manifest":
            self.fh.write(text[: len(text) // 2])
            self.fh.flush()
            pause("manifest")
        return self.fh.write(text)
    def __getattr__(self, name):
        return getattr(self.fh, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.fh.close()

def shard_open(file, mode="r", *args, **kwargs):
    fh = builtins.open(file, mode, *args, **kwargs)
    return HalfThenPause(fh) if os.path.basename(str(file)).startswith(".manifest") else fh
hive_data.shards.open = shard_open

_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if str(src).endswith(".staging"):
        pause("commit")  # the previous output (if any) has just been moved aside
    if RENAME_DST and os.path.basename(str(dst)) == RENAME_DST:
        pause("rename")
    return _replace(src, dst, *args, **kwargs)
os.replace = replace

from hive_data.cli import main
main(args=sys.argv[1:], prog_name="hive-data")
"""


def hive_data_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "hive-data"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "hive_data"]


def run_cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """The real `hive-data` command, uninterrupted."""
    return subprocess.run(
        hive_data_cmd() + args, env=ENV, capture_output=True, text=True, timeout=300, **kwargs
    )


def start_paused(args: list[str], phase: str, tmp: Path, rename: str = "") -> tuple[subprocess.Popen, Path]:
    mark = tmp / f"paused-{phase}-{time.monotonic_ns()}"
    env = {**ENV, "HIVE_PAUSE_PHASE": phase, "HIVE_PAUSE_MARK": str(mark), "HIVE_PAUSE_RENAME": rename}
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSER, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C is sent to the group, as a terminal does
    )
    return proc, mark


def sigkill_main(proc: subprocess.Popen) -> None:
    """SIGKILL the command's main process only (as the OOM killer does), then reap it. Its worker
    processes must not outlive it for long; whatever is left of the group is killed after a grace period."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()
    deadline = time.monotonic() + 15
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = group_alive(proc.pid)
    if orphans:
        subprocess.run(f"ps -o pid,ppid,stat,cmd -g {proc.pid} | cut -c1-200", shell=True)
        os.killpg(proc.pid, signal.SIGKILL)
    assert not orphans, "worker processes outlived the killed command by 15 s"


def group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every file under `path` by relative name (empty when `path` does not exist)."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def visible(directory: Path) -> set[str]:
    """Names in `directory` that are not hidden temporaries (leading dot)."""
    return {p.name for p in directory.iterdir() if not p.name.startswith(".")}


# ------------------------------------------------------------------------------------ pack


def conversation(i: int, rng: random.Random) -> list[dict]:
    words = "how many orders per city name total price users where with the".split()
    question = " ".join(rng.choice(words) for _ in range(rng.randint(3, 40)))
    return [
        {"role": "system", "content": f"Schema:\nCREATE TABLE t{i % 11} (id INT, name TEXT, v{i % 5} INT);"},
        {"role": "user", "content": f"{question} #{i}"},
        {
            "role": "assistant",
            "content": f"SELECT name FROM t{i % 11} WHERE id = {i} AND v{i % 5} > {i % 97}",
        },
    ]


def write_pack_input(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    convs = [conversation(i, rng) for i in range(n)]
    lines = [json.dumps({"messages": c}) for c in convs]
    lines.insert(10, "{broken json")
    lines.insert(20, lines[30])  # an exact duplicate
    long = [{"role": "user", "content": "long " * 50}, {"role": "assistant", "content": "SELECT 1 " * 300}]
    lines.insert(40, json.dumps({"messages": long}))  # overlong
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pack_args(src: Path, out: Path, num_proc: int = 1) -> list[str]:
    return [
        "pack", str(src), "-o", str(out), "--tokenizer", TOKENIZER, "--seq", "256",
        "--shard-tokens", "40000", "--num-proc", str(num_proc), "-q",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def pack_case(tmp_path_factory):
    """An input, its uninterrupted pack (the reference bytes), and an older complete output."""
    base = tmp_path_factory.mktemp("pack-case")
    src = write_pack_input(base / "rows.jsonl", 2600, seed=1)
    ref = base / "reference"
    res = run_cli(pack_args(src, ref))
    assert res.returncode == 0, res.stderr
    old = base / "old"
    res = run_cli(pack_args(write_pack_input(base / "older.jsonl", 300, seed=2), old))
    assert res.returncode == 0, res.stderr
    reference = tree_bytes(ref)
    assert len([n for n in reference if n.endswith(".arrow")]) >= 3 and "rejects.jsonl" in reference
    return src, reference, old


def check_shards_state(out: Path, old: dict[str, bytes] | None) -> None:
    """Under the final name there is the previous complete output (then unchanged) or nothing that
    `open_shards` accepts."""
    if old and out.exists():
        assert tree_bytes(out) == old
        open_shards(out, verify="sha256")
    else:
        with pytest.raises(ShardError):
            open_shards(out)


PACK_PHASES = ["read", "tokenize", "pack", "shards", "manifest", "commit"]


@pytest.mark.slow
@pytest.mark.parametrize("phase", PACK_PHASES)
def test_pack_sigkill_at_each_phase_then_rerun_is_identical(pack_case, tmp_path, phase):
    src, reference, old_dir = pack_case
    out = tmp_path / "out"
    with_old = phase != "tokenize"  # one phase starts from no previous output at all
    if with_old:
        shutil.copytree(old_dir, out)
    old = tree_bytes(out)
    proc, mark = start_paused(pack_args(src, out), phase, tmp_path)
    try:
        wait_paused(proc, mark)
        check_shards_state(out, old)
        staged = [p for p in tmp_path.glob(".out.*.staging")]
        if phase in ("tokenize", "pack", "shards", "manifest"):
            assert staged, "the pack should be building in a hidden staging directory"
        if phase == "shards":
            assert list(staged[0].glob(".train-*.part")), "a shard should be half-written under a temp name"
            assert not list(staged[0].glob("*.arrow"))
        if phase == "manifest":
            assert (staged[0] / ".manifest.json.tmp").stat().st_size > 0
            assert not (staged[0] / "manifest.json").exists()
        sigkill_main(proc)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    check_shards_state(out, old)
    if phase == "commit":
        assert not out.exists() and list(tmp_path.glob(".out.old-*")), "killed between the swap's renames"
        remove_stale(out)  # the first thing the next run does: the previous complete output is back
        assert tree_bytes(out) == old

    res = run_cli(pack_args(src, out))
    assert res.returncode == 0, res.stderr
    assert tree_bytes(out) == reference
    assert not list(tmp_path.glob(".out.*")), "the rerun clears the leftovers of the killed run"
    open_shards(out, verify="sha256")


@pytest.mark.slow
def test_pack_sigkill_with_workers_leaves_no_orphans(pack_case, tmp_path):
    """num_proc 2: the killed parent's pool workers go away, and the rerun is still identical."""
    src, reference, old_dir = pack_case
    out = tmp_path / "out"
    shutil.copytree(old_dir, out)
    old = tree_bytes(out)
    proc, mark = start_paused(pack_args(src, out, num_proc=2), "read", tmp_path)
    try:
        wait_paused(proc, mark)
        sigkill_main(proc)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    check_shards_state(out, old)
    res = run_cli(pack_args(src, out, num_proc=2))
    assert res.returncode == 0, res.stderr
    assert tree_bytes(out) == reference


def assert_clean_interrupt(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    messages = [ln for ln in lines if "interrupted" in ln.lower() or "error" in ln.lower()]
    assert len(messages) == 1 and messages[0].startswith("interrupted: "), err[-3000:]
    return messages[0]


def interrupt_when_paused(proc, mark) -> None:
    """Ctrl-C the paused command: one clean 'interrupted' line, and no worker outlives it."""
    try:
        wait_paused(proc, mark)
        os.killpg(proc.pid, signal.SIGINT)
        assert_clean_interrupt(proc)
        deadline = time.monotonic() + 15
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not group_alive(proc.pid), "worker processes outlived the interrupted command"
    finally:
        if proc.poll() is None or group_alive(proc.pid):
            kill_group(proc)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "num_proc"),
    [
        ("read", 2),
        ("shards", 1),
        ("manifest", 1),
    ],
)
def test_pack_ctrl_c_stops_cleanly(pack_case, tmp_path, phase, num_proc):
    src, reference, old_dir = pack_case
    out = tmp_path / "out"
    shutil.copytree(old_dir, out)
    old = tree_bytes(out)
    proc, mark = start_paused(pack_args(src, out, num_proc), phase, tmp_path)
    interrupt_when_paused(proc, mark)
    assert tree_bytes(out) == old
    assert not list(tmp_path.glob(".out.*")), "Ctrl-C removes the staging directory"
    res = run_cli(pack_args(src, out, num_proc))
    assert res.returncode == 0, res.stderr
    assert tree_bytes(out) == reference


# ------------------------------------------------------------------------------------ normalize


def load_bench_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def normalize_args(src: Path, out: Path, num_proc: int = 1) -> list[str]:
    return ["normalize", str(src), "-o", str(out), "--read", "mysql", "--num-proc", str(num_proc)]


@pytest.fixture(scope="module")
def normalize_case(tmp_path_factory):
    """A gretel-style input with broken rows, its uninterrupted output and rejects (reference bytes), and
    an older complete output pair."""
    base = tmp_path_factory.mktemp("normalize-case")
    bench = load_bench_scale()
    src = bench.generate(base / "rows.jsonl", 1500, schemas=20, seed=3)
    ref_dir = base / "reference"
    ref_dir.mkdir()
    res = run_cli(normalize_args(src, ref_dir / "clean.jsonl"))
    assert res.returncode == 0, res.stderr
    old_dir = base / "old"
    old_dir.mkdir()
    older = bench.generate(base / "older.jsonl", 200, schemas=5, seed=4)
    res = run_cli(normalize_args(older, old_dir / "clean.jsonl"))
    assert res.returncode == 0, res.stderr
    reference = tree_bytes(ref_dir)
    assert (
        set(reference) == {"clean.jsonl", "clean.jsonl.rejects.jsonl"}
        and reference["clean.jsonl.rejects.jsonl"]
    )
    return src, reference, tree_bytes(old_dir)


def check_normalize_state(directory: Path, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    """Each file under its final name is complete: byte-identical to the previous run's or the new run's."""
    assert visible(directory) <= set(old) | set(new)
    for name in visible(directory):
        assert (directory / name).read_bytes() in (old.get(name), new.get(name)), name


def seed_old(directory: Path, old: dict[str, bytes]) -> None:
    for name, data in old.items():
        (directory / name).write_bytes(data)


NORMALIZE_PHASES = [
    ("read", ""),
    ("work", ""),
    ("rename", "clean.jsonl.rejects.jsonl"),
    ("rename", "clean.jsonl"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "rename"), NORMALIZE_PHASES)
def test_normalize_sigkill_at_each_phase_then_rerun_is_identical(normalize_case, tmp_path, phase, rename):
    src, reference, old = normalize_case
    work = tmp_path / "work"
    work.mkdir()
    seed_old(work, old)
    out = work / "clean.jsonl"
    proc, mark = start_paused(normalize_args(src, out), phase, tmp_path, rename=rename)
    try:
        wait_paused(proc, mark)
        check_normalize_state(work, old, reference)
        if phase in ("read", "work"):
            assert tree_bytes(work).keys() >= set(old) and all(
                (work / n).read_bytes() == old[n] for n in old
            ), "the previous output pair is untouched while the new one is written"
            partial = [p for p in work.iterdir() if p.name.startswith(".clean.jsonl.")]
            assert partial, "rows are being written to a hidden temporary file"
        sigkill_main(proc)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    check_normalize_state(work, old, reference)

    res = run_cli(normalize_args(src, out))
    assert res.returncode == 0, res.stderr
    assert {n: (work / n).read_bytes() for n in visible(work)} == reference
    assert sorted(p.name for p in work.iterdir()) == sorted(reference), (
        "the rerun clears the killed run's temp files"
    )


@pytest.mark.slow
def test_normalize_sigkill_with_workers_leaves_no_orphans(normalize_case, tmp_path):
    src, reference, old = normalize_case
    work = tmp_path / "work"
    work.mkdir()
    seed_old(work, old)
    out = work / "clean.jsonl"
    proc, mark = start_paused(normalize_args(src, out, num_proc=2), "read", tmp_path)
    try:
        wait_paused(proc, mark)
        sigkill_main(proc)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    check_normalize_state(work, old, reference)
    assert {n: (work / n).read_bytes() for n in visible(work)} == old
    res = run_cli(normalize_args(src, out, num_proc=2))
    assert res.returncode == 0, res.stderr
    assert {n: (work / n).read_bytes() for n in visible(work)} == reference


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "num_proc", "rename"), [("read", 2, ""), ("rename", 1, "clean.jsonl")])
def test_normalize_ctrl_c_stops_cleanly(normalize_case, tmp_path, phase, num_proc, rename):
    src, reference, old = normalize_case
    work = tmp_path / "work"
    work.mkdir()
    seed_old(work, old)
    out = work / "clean.jsonl"
    proc, mark = start_paused(normalize_args(src, out, num_proc), phase, tmp_path, rename=rename)
    interrupt_when_paused(proc, mark)
    check_normalize_state(work, old, reference)
    if phase == "read":
        assert {n: (work / n).read_bytes() for n in visible(work)} == old
    assert not [p for p in work.iterdir() if p.name.endswith(".tmp")], "Ctrl-C removes temporary files"
    res = run_cli(normalize_args(src, out, num_proc))
    assert res.returncode == 0, res.stderr
    assert {n: (work / n).read_bytes() for n in visible(work)} == reference


def pg_dirs() -> set[Path]:
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("hive-pg-*"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "ctrl-c"])
def test_normalize_explain_leaves_no_postgres_behind(normalize_case, tmp_path, how):
    """--verify explain starts its own PostgreSQL (a detached server): it is stopped and its directory
    deleted when the command is killed or interrupted, not left running."""
    src, _, _ = normalize_case
    before = pg_dirs()
    args = normalize_args(src, tmp_path / "clean.jsonl") + ["--verify", "explain"]
    proc, mark = start_paused(args, "read", tmp_path)
    try:
        wait_paused(proc, mark)
        ours = pg_dirs() - before
        assert len(ours) == 1, ours
        pid = int((next(iter(ours)) / "data" / "postmaster.pid").read_text().split()[0])
        if how == "sigkill":
            sigkill_main(proc)
        else:
            os.killpg(proc.pid, signal.SIGINT)
            assert_clean_interrupt(proc)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    deadline = time.monotonic() + 30
    while (Path(f"/proc/{pid}").exists() or next(iter(ours)).exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the embedded PostgreSQL outlived the command"
    assert not next(iter(ours)).exists(), "its data directory is deleted"
