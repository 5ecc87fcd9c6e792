"""Crashes, Ctrl-C, a full disk and bad or hostile inputs for `hive-train` (issue 7), done for real.

The trainer runs as a real process (`python -m hive_train` on the tiny fixture model, CPU). To stop it
at an exact point, `PAUSER` wraps library functions from outside, as `test_reliability_crash.py` does
for `hive-data` (the production code has no test hooks): it writes a marker file and sleeps inside a
chosen optimizer step, or while a checkpoint is being written (a torn file in the staging directory,
or a complete staging directory just before its rename), or just before the final adapter is renamed
into place. The test then sends SIGKILL (or SIGINT to the process group, as Ctrl-C does).

Every interrupted run is continued with `--resume` until it completes, and its adapter must be
bitwise identical to an uninterrupted run's, with the same per-step losses. A checkpoint interrupted
while being written is never picked up by `latest_checkpoint`.

The steps at which runs are killed are drawn at random; set HIVE_CRASH_SEED to replay a failure (the
seed is in every assertion message).
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
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from procs import kill_group, wait_paused
from safetensors.torch import load_file
from train_helpers import TINY_MODEL, TOKENIZER, write_shards

from hive_train import checkpoint
from hive_train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
ENV.pop("HIVE_DEBUG", None)
SEED = int(os.environ.get("HIVE_CRASH_SEED") or random.SystemRandom().randrange(1_000_000))
STEPS = 12  # the schedule crosses an epoch boundary (about 8 steps per epoch)
SAVE_EVERY = 2
ARGS = [
    "--model", str(TINY_MODEL), "--tokenizer", str(TOKENIZER), "--batch-size", "2", "--grad-accum", "1",
    "--max-steps", str(STEPS), "--save-every", str(SAVE_EVERY), "--eval-every", "4", "--lr", "2e-3", "-q",
]  # fmt: skip

# Wraps trainer functions from outside and pauses at HIVE_PAUSE_PHASE (writing the file HIVE_PAUSE_MARK
# first), then runs the real `hive-train` command with the given arguments.
#   step:        in the HIVE_PAUSE_AT-th optimizer step this process runs, after backward, before the update
#   ckpt-write:  checkpoint HIVE_PAUSE_AT half-written: optimizer.safetensors torn in the staging directory
#   ckpt-commit: checkpoint HIVE_PAUSE_AT complete in its staging directory, just before the rename
#   adapter:     the final adapter complete in its staging directory, just before the rename
PAUSER = r"""
import os, sys, time
PHASE, MARK = os.environ["HIVE_PAUSE_PHASE"], os.environ["HIVE_PAUSE_MARK"]
AT = int(os.environ.get("HIVE_PAUSE_AT", "0"))

def pause(name):
    if name == PHASE:
        with open(MARK + ".tmp", "w") as fh:
            fh.write(str(os.getpid()))
        os.replace(MARK + ".tmp", MARK)
        time.sleep(300)

import torch
steps = [0]
_step = torch.optim.AdamW.step
def step(self, *args, **kwargs):  # the update of an optimizer step, after its backward pass
    steps[0] += 1
    if steps[0] == AT:
        pause("step")
    return _step(self, *args, **kwargs)
torch.optim.AdamW.step = step

import safetensors.torch  # wrapped before the trainer imports save_file from it
_save_file = safetensors.torch.save_file
def save_file(tensors, filename, *args, **kwargs):
    _save_file(tensors, filename, *args, **kwargs)
    name = str(filename)
    if f".step-{AT:08d}." in name and name.endswith("optimizer.safetensors"):
        with open(name, "r+b") as fh:  # torn: only the first half reached the disk
            fh.truncate(os.path.getsize(name) // 2)
        pause("ckpt-write")
safetensors.torch.save_file = save_file

_replace = os.replace
def replace(src, dst, *args, **kwargs):
    if str(src).endswith(".staging"):  # a finished staging directory about to take its final name
        name = os.path.basename(str(dst))
        if name == f"step-{AT:08d}":
            pause("ckpt-commit")
        if name == "adapter":
            pause("adapter")
    return _replace(src, dst, *args, **kwargs)
os.replace = replace

from hive_train.cli import main
main(args=sys.argv[1:], prog_name="hive-train")
"""


def train_cmd(shards: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hive_train", str(shards), "-o", str(out), *ARGS, *extra]


def run_train(shards: Path, out: Path, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    """The real `hive-train`, uninterrupted."""
    kwargs.setdefault("env", ENV)
    return subprocess.run(
        train_cmd(shards, out, *extra), capture_output=True, text=True, timeout=300, **kwargs
    )


def start_paused(
    shards: Path, out: Path, phase: str, at: int, tmp: Path, *extra: str
) -> tuple[subprocess.Popen, Path]:
    mark = tmp / f"paused-{phase}-{time.monotonic_ns()}"
    env = {**ENV, "HIVE_PAUSE_PHASE": phase, "HIVE_PAUSE_MARK": str(mark), "HIVE_PAUSE_AT": str(at)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSER, *train_cmd(shards, out, *extra)[3:]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: Ctrl-C is sent to the group, as a terminal does
    )
    return proc, mark


def interrupt_and_kill(shards, out, phase, at, tmp, *extra) -> None:
    proc, mark = start_paused(shards, out, phase, at, tmp, *extra)
    try:
        wait_paused(proc, mark, f"hive-train (seed {SEED})")
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL


def adapter(run: Path) -> dict:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def assert_same_result(run: Path, reference: Path, why: str) -> None:
    """Bitwise the same adapter as the uninterrupted run, and the same train and validation losses."""
    got, want = adapter(run), adapter(reference)
    assert got.keys() == want.keys()
    differ = [k for k in want if not (got[k].dtype == want[k].dtype and got[k].equal(want[k]))]
    assert not differ, f"{why} (seed {SEED}): adapter tensors differ, e.g. {differ[:3]}"
    losses = {r["step"]: (r["loss"], r["val_loss"]) for r in read_metrics(run / "metrics.jsonl")}
    expected = {r["step"]: (r["loss"], r["val_loss"]) for r in read_metrics(reference / "metrics.jsonl")}
    assert losses == expected, f"{why} (seed {SEED}): per-step losses differ"


def tree_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def leftovers(run: Path) -> list[str]:
    """Hidden temporaries anywhere in the run directory (staging directories, temp files); the
    ownership marker `.hive-owned` is meant to stay."""
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*") if p != run / ".hive-owned")


def step_of(path: Path | None) -> int:
    return int(path.name.split("-")[1]) if path else 0


def saved_before(step: int) -> int:
    """The newest checkpoint step completed before optimizer step `step` (1-based) started."""
    return (step - 1) // SAVE_EVERY * SAVE_EVERY


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards") / "s", seq=96, train_docs=40, val_docs=8)


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """An uninterrupted run: the result every interrupted run must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("reference") / "run"
    res = run_train(shards, out)
    assert res.returncode == 0, res.stderr
    assert step_of(checkpoint.latest_checkpoint(out)) == STEPS
    return out


def partial_copy(reference: Path, dest: Path, keep_step: int) -> Path:
    """The reference run as a run killed right after writing checkpoint `keep_step` would leave it."""
    shutil.copytree(reference, dest)
    shutil.rmtree(dest / "adapter")
    for path in checkpoint.list_checkpoints(dest):
        if step_of(path) > keep_step:
            shutil.rmtree(path)
    assert step_of(checkpoint.latest_checkpoint(dest)) == keep_step
    return dest


# ------------------------------------------------------------------------------------ SIGKILL


@pytest.mark.slow  # ~40 s (and ~20 s of shared setup) on a 2-core machine
def test_sigkill_at_random_steps_and_mid_checkpoint_then_resume_is_bitwise_identical(
    shards, reference, tmp_path
):
    rng = random.Random(SEED)
    out = tmp_path / "run"

    # 1. killed inside a random optimizer step of a fresh run
    first = rng.randrange(3, STEPS - 3)
    interrupt_and_kill(shards, out, "step", first, tmp_path)
    resumed_from = checkpoint.latest_checkpoint(out)
    assert step_of(resumed_from) == saved_before(first), f"seed {SEED}"
    assert not (out / "adapter").exists()

    # 2. resumed, then killed while a later checkpoint is half-written (a torn file in its staging
    # directory): that checkpoint is never picked up, the previous one stays the newest
    torn = rng.choice(range(step_of(resumed_from) + SAVE_EVERY, STEPS + 1, SAVE_EVERY))
    previous = checkpoint.checkpoint_dir(out, torn - SAVE_EVERY)
    proc, mark = start_paused(shards, out, "ckpt-write", torn, tmp_path, "--resume")
    try:
        wait_paused(proc, mark, f"hive-train (seed {SEED})")
        staged = list((out / "checkpoints").glob(f".step-{torn:08d}.*.staging"))
        assert len(staged) == 1 and (staged[0] / "trainable.safetensors").is_file()
        assert checkpoint.latest_checkpoint(out) == previous, f"seed {SEED}"
        before = tree_bytes(previous)
    finally:
        kill_group(proc)
    assert not checkpoint.checkpoint_dir(out, torn).exists()
    assert checkpoint.latest_checkpoint(out) == previous and tree_bytes(previous) == before, f"seed {SEED}"
    assert list((out / "checkpoints").glob(".step-*")), "the torn staging directory is left by the kill"

    # 3. resumed to the end: the same adapter, bit for bit, and no leftovers
    res = run_train(shards, out, "--resume")
    assert res.returncode == 0, res.stderr
    assert_same_result(out, reference, f"killed at step {first}, then while writing checkpoint {torn}")
    assert leftovers(out) == []


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["ckpt-commit", "adapter"])
def test_sigkill_just_before_a_rename_then_resume_is_bitwise_identical(shards, reference, tmp_path, phase):
    """Killed with a complete checkpoint (or the final adapter) in its staging directory, not yet renamed."""
    out = tmp_path / "run"
    if phase == "adapter":  # resuming from the final checkpoint only writes the adapter
        partial_copy(reference, out, STEPS)
        at, extra = 0, ["--resume"]
    else:
        at, extra = random.Random(SEED).choice(range(2 * SAVE_EVERY, STEPS + 1, SAVE_EVERY)), []
    interrupt_and_kill(shards, out, phase, at, tmp_path, *extra)
    assert not (out / "adapter").exists()
    if phase == "ckpt-commit":
        assert list((out / "checkpoints").glob(f".step-{at:08d}.*.staging"))
        assert step_of(checkpoint.latest_checkpoint(out)) == at - SAVE_EVERY, f"seed {SEED}"
    else:
        assert list(out.glob(".adapter.*.staging"))
    res = run_train(shards, out, "--resume")
    assert res.returncode == 0, res.stderr
    assert_same_result(out, reference, f"killed at {phase} {at}")
    assert leftovers(out) == []


@pytest.mark.slow
def test_sigkill_at_a_random_moment_then_resume_is_bitwise_identical(shards, reference, tmp_path):
    """No pause point: the plain command is killed at a random time after its first checkpoint,
    wherever it is (a step, an evaluation, a metrics line, a checkpoint write)."""
    out = tmp_path / "run"
    proc = subprocess.Popen(
        train_cmd(shards, out, "--save-every", "1"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while checkpoint.latest_checkpoint(out) is None and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(random.Random(SEED).uniform(0, 0.5))
    finally:
        kill_group(proc)
    assert checkpoint.latest_checkpoint(out) is not None
    res = run_train(shards, out, "--resume", "--save-every", "1")  # cadence may change on resume
    assert res.returncode == 0, res.stderr
    assert_same_result(out, reference, "killed at a random moment")
    assert leftovers(out) == []


# ------------------------------------------------------------------------------------ Ctrl-C


def assert_clean_interrupt(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), err[-3000:]


@pytest.mark.slow  # ~30 s a phase on a 2-core machine
@pytest.mark.parametrize("phase", ["step", "ckpt-write"])
def test_ctrl_c_stops_cleanly_and_the_run_resumes_to_the_same_result(shards, reference, tmp_path, phase):
    out = tmp_path / "run"
    at = random.Random(SEED).choice(
        range(3, STEPS - 1) if phase == "step" else range(2 * SAVE_EVERY, STEPS, SAVE_EVERY)
    )
    proc, mark = start_paused(shards, out, phase, at, tmp_path)
    try:
        wait_paused(proc, mark, f"hive-train (seed {SEED})")
        os.killpg(proc.pid, signal.SIGINT)
        assert_clean_interrupt(proc)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    expected = saved_before(at) if phase == "step" else at - SAVE_EVERY
    assert step_of(checkpoint.latest_checkpoint(out)) == expected, f"seed {SEED}"
    assert leftovers(out) == [], "Ctrl-C removes a half-written checkpoint's staging directory"
    assert not (out / "adapter").exists()
    res = run_train(shards, out, "--resume")
    assert res.returncode == 0, res.stderr
    assert_same_result(out, reference, f"Ctrl-C at {phase} {at}")


# ------------------------------------------------------------------------------------ full disk


def run_limited(shards: Path, out: Path, limit_bytes: int, *extra: str) -> subprocess.CompletedProcess:
    """`hive-train` under a real file size limit (`ulimit -f`); with SIGXFSZ ignored a write past it
    fails with EFBIG, as a write to a full disk fails with ENOSPC."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return run_train(shards, out, *extra, preexec_fn=limit)


@pytest.mark.slow  # ~30 s on a 2-core machine
def test_full_disk_while_writing_a_checkpoint(shards, reference, tmp_path):
    """The limit lets the adapter weights through but not the optimizer state (about twice their
    size): the checkpoint fails half-written. One line, exit 1, the previous checkpoint intact and
    resumable, nothing partial left."""
    out = partial_copy(reference, tmp_path / "run", STEPS - SAVE_EVERY)
    previous = checkpoint.latest_checkpoint(out)
    sizes = {p.name: p.stat().st_size for p in previous.iterdir()}
    limit = (sizes["trainable.safetensors"] + sizes["optimizer.safetensors"]) // 2
    before = tree_bytes(previous)

    res = run_limited(shards, out, limit, "--resume")
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    assert "optimizer.safetensors" in lines[0] and "File too large" in lines[0], lines[0]
    assert checkpoint.latest_checkpoint(out) == previous and tree_bytes(previous) == before
    assert not checkpoint.checkpoint_dir(out, STEPS).exists() and not (out / "adapter").exists()
    assert leftovers(out) == [], "no staging directory or temp file is left"

    res = run_train(shards, out, "--resume")
    assert res.returncode == 0, res.stderr
    assert_same_result(out, reference, "after a full disk")


# ------------------------------------------------------------------------------------ corrupted inputs
# (flipped bytes under the default --verify sha256, a truncated shard, and manifest tokenizer fields
# that disagree are in test_train_errors.py)


def cli(*args) -> tuple[int, str]:
    from hive_train.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 1, (code, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def shards_copy(shards, tmp_path) -> Path:
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    return copy


@pytest.mark.parametrize("lie", ["rows", "tokens", "bytes"])
@pytest.mark.parametrize("verify", ["sha256", "size"])
def test_manifest_that_lies_about_a_shard_is_refused(shards_copy, tmp_path, lie, verify):
    path = shards_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = manifest["shards"][0]
    entry[lie] += 1  # the shard file itself is intact
    path.write_text(json.dumps(manifest))
    code, err = cli(shards_copy, "-o", tmp_path / "run", *ARGS, "--verify", verify)
    assert_one_line_error(code, err, str(shards_copy / entry["file"]))
    assert not (tmp_path / "run").exists()


def other_tokenizer(directory: Path) -> Path:
    """The fixture tokenizer with the ids of two ordinary tokens swapped: it loads, has the same size
    and special ids, and encodes differently."""
    shutil.copytree(TOKENIZER, directory)
    data = json.loads((directory / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    a, b = (t for t, i in vocab.items() if i in (300, 301))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (directory / "tokenizer.json").write_text(json.dumps(data))
    return directory


def test_tokenizer_directory_that_does_not_match_the_shards_is_refused(shards, tmp_path):
    tok = other_tokenizer(tmp_path / "tok")
    args = [a if a != str(TOKENIZER) else str(tok) for a in ARGS]
    code, err = cli(shards, "-o", tmp_path / "run", *args)
    assert_one_line_error(code, err, str(tok), "tokenizer content differs")


def test_damaged_tokenizer_file_is_refused(shards, tmp_path):
    tok = tmp_path / "tok"
    shutil.copytree(TOKENIZER, tok)
    data = json.loads((tok / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    name = next(t for t, i in vocab.items() if i > 300 and t.isalpha())
    vocab[name + "zq"] = vocab.pop(name)  # the merges now name a token that is not in the vocabulary
    (tok / "tokenizer.json").write_text(json.dumps(data))
    args = [a if a != str(TOKENIZER) else str(tok) for a in ARGS]
    code, err = cli(shards, "-o", tmp_path / "run", *args)
    assert_one_line_error(code, err, str(tok), "cannot load tokenizer")


def test_packing_tokenizer_changed_since_the_shards_were_made_is_refused(tmp_path):
    """No --tokenizer: the trainer finds the directory named in the manifest, whose files changed."""
    from transformers import AutoTokenizer

    from hive_data.pack import tokenizer_info

    tok = tmp_path / "tok"
    shutil.copytree(TOKENIZER, tok)
    meta = tokenizer_info(AutoTokenizer.from_pretrained(str(tok)))
    shards = write_shards(tmp_path / "shards", seq=96, train_docs=16, val_docs=0, tokenizer=meta)
    shutil.rmtree(tok)
    other_tokenizer(tok)
    args = [a for a in ARGS if a not in ("--tokenizer", str(TOKENIZER))]
    code, err = cli(shards, "-o", tmp_path / "run", *args)
    assert_one_line_error(code, err, str(tok), "tokenizer content differs")


# ------------------------------------------------------------------------------------ hostile inputs


@pytest.mark.parametrize(
    "payload",
    [
        "train: !!python/object/apply:os.system ['touch {marker}']\n",
        "train:\n  rank: !!python/object/apply:subprocess.check_output [['touch', '{marker}']]\n",
        "train:\n  model: !!python/object/new:os.system ['touch {marker}']\n",
    ],
)
def test_recipe_with_python_tags_is_refused(shards, tmp_path, payload):
    marker = tmp_path / "MARKER"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(payload.format(marker=marker))
    code, err = cli(shards, "-o", tmp_path / "run", "--config", recipe, *ARGS)
    line = assert_one_line_error(code, err, "invalid YAML")
    assert line.startswith(f"error: {recipe}:")
    assert not marker.exists() and not (tmp_path / "run").exists()


EVIL = """\
import pathlib
pathlib.Path({marker!r}).write_text("ran")
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

class EvilConfig(Qwen3Config):
    model_type = "evil-qwen3"

class EvilForCausalLM(Qwen3ForCausalLM):
    config_class = EvilConfig

class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


def remote_code_model(directory: Path) -> Path:
    """The tiny model, but its config names a model type only its own `evil.py` defines."""
    shutil.copytree(TINY_MODEL, directory)
    (directory / "evil.py").write_text(EVIL.format(marker=str(directory / "REMOTE_CODE_RAN")))
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "evil-qwen3"
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilForCausalLM"}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def remote_code_tokenizer(directory: Path) -> Path:
    shutil.copytree(TOKENIZER, directory)
    (directory / "evil.py").write_text(EVIL.format(marker=str(directory / "REMOTE_CODE_RAN")))
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("tokenizer_class", None)
    config["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("what", ["model", "tokenizer"])
def test_remote_code_is_refused_without_the_flag_even_when_answering_yes(shards, tmp_path, what):
    """transformers asks on stdin whether to run such code; hive-train never lets it ask. The test
    answers "y" on stdin, as a user might: the code still must not run."""
    evil = (remote_code_model if what == "model" else remote_code_tokenizer)(tmp_path / what)
    flag = "--model" if what == "model" else "--tokenizer"
    res = run_evil(shards, tmp_path, flag, evil, input="y\ny\n")
    assert res.returncode == 1, (res.returncode, res.stderr[-3000:])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {evil}: "), res.stderr[-3000:]
    assert "--trust-remote-code" in lines[0]
    assert not (evil / "REMOTE_CODE_RAN").exists(), f"the {what}'s own code ran"
    assert not (tmp_path / "run").exists()


def run_evil(shards: Path, tmp: Path, flag: str, evil: Path, *extra: str, **kwargs):
    args = [str(evil) if before == flag else a for before, a in zip([None, *ARGS], ARGS)]
    env = {**ENV, "HF_MODULES_CACHE": str(tmp / "modules")}  # where transformers copies such code
    return subprocess.run(
        [sys.executable, "-m", "hive_train", str(shards), "-o", str(tmp / "run"), *args, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


@pytest.mark.slow
def test_trust_remote_code_lets_such_a_model_train(shards, tmp_path):
    evil = remote_code_model(tmp_path / "model")
    res = run_evil(shards, tmp_path, "--model", evil, "--trust-remote-code", stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (evil / "REMOTE_CODE_RAN").exists()
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
