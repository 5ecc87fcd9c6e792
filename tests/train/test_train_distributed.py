"""Data-parallel training under a real torchrun (gloo, 2 CPU processes, the NF4 + DoRA fast path):

- 2 ranks give the same losses and adapter as 1 process accumulating over the same micro-batches,
  also when a step has an uneven number of micro-batches, fewer micro-batches than ranks (rows
  split) or a single row (a rank idles);
- a run stopped on 2 ranks resumes on 1 process, and the other way round (through `--gpus 2`),
  ending where the uninterrupted run ends;
- rank 0 alone writes the run directory.

Plus the pure parts: a step's share per rank, loss tokens per row, the `--gpus` argv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_helpers import ROOT, TINY_MODEL, TOKENIZER, write_shards

from hive_data.shards import open_shards
from hive_train.config_sources import resolve_config
from hive_train.data import RowTable, build_schedule, flatten, shard_micro_batches
from hive_train.distributed import strip_gpus
from hive_train.loop import train
from hive_train.metrics import read_metrics

# 46 documents pack into 13 rows of 96 tokens
BASE = dict(
    model=str(TINY_MODEL),
    tokenizer=str(TOKENIZER),
    rank=4,
    alpha=8,
    dropout=0.0,  # the fast adapter path
    lr=2e-3,
    epochs=2,
    eval_every=2,
    save_every=2,
    seed=5,
    device="cpu",
)
UNEVEN = dict(BASE, batch_size=2, grad_accum=3)  # steps of 3, 3 and 1 micro-batches; the last one row
SPLIT = dict(BASE, batch_size=5, grad_accum=2)  # steps of 2 micro-batches, then 1 of 3 rows


def cli_args(flags: dict) -> list[str]:
    return [f"--{key.replace('_', '-')}={value}" for key, value in flags.items()] + ["-q"]


def run_cli(args: list[str], *, torchrun: bool) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"] if torchrun else []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, *launcher, "-m", "hive_train", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def single(flags: dict, shards, out, **kwargs):
    cfg, _ = resolve_config(None, dict(flags))
    return train(cfg, shards, out, progress=False, **kwargs)


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")]


def assert_same_training(a, b) -> None:
    """Same losses per step and the same final adapter, up to float32 summation order."""
    np.testing.assert_allclose(losses(a), losses(b), rtol=1e-5)
    wa = load_file(a / "adapter" / "adapter_model.safetensors")
    wb = load_file(b / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        # Adam divides by the gradient's own scale, so a float32 summation-order difference in a
        # near-zero gradient moves a weight by a few 1e-6 (seen with peft 0.21.2); a wrong resume or
        # a lost micro-batch moves them by about the learning rate
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "s", seq=96, train_docs=46, val_docs=8)


@pytest.fixture(scope="module")
def table(shards):
    return RowTable.from_arrow(open_shards(shards).split("train"))


def plan(table, flags) -> list[list[np.ndarray]]:
    schedule = build_schedule(
        table.row_tokens,
        seed=flags["seed"],
        epochs=flags["epochs"],
        max_steps=None,
        batch_size=flags["batch_size"],
        grad_accum=flags["grad_accum"],
        tokens_per_micro=None,
        tokens_per_step=None,
    )
    return [schedule.micro_batches(step) for step in range(schedule.total_steps)]


# ---- pure parts ------------------------------------------------------------------------------


def test_each_step_is_shared_out_disjointly_and_completely():
    rng = np.random.default_rng(0)
    for _ in range(200):
        micros = [rng.permutation(100)[: rng.integers(1, 6)] for _ in range(rng.integers(1, 6))]
        world = int(rng.integers(1, 9))
        shares = [shard_micro_batches(micros, r, world) for r in range(world)]
        rows = np.concatenate([m for share in shares for m in share])
        assert sorted(rows.tolist()) == sorted(np.concatenate(micros).tolist())  # each row once
        # every piece lies within one planned micro-batch (token budgets hold)
        for piece in (m for share in shares for m in share):
            assert any(set(piece.tolist()) <= set(m.tolist()) for m in micros)
        # no rank idles while a piece of two rows could still be split
        if any(not share for share in shares):
            assert all(len(m) == 1 for share in shares for m in share)
        assert shard_micro_batches(micros, 0, 1) == micros
    micros = [np.arange(4), np.arange(4, 6), np.arange(6, 9)]
    assert [m.tolist() for m in shard_micro_batches(micros, 0, 2)] == [[0, 1, 2, 3], [6, 7, 8]]
    assert [m.tolist() for m in shard_micro_batches(micros[:1], 1, 2)] == [[2, 3]]


def test_loss_tokens_per_row_match_flattening(table):
    per_row = table.row_loss_tokens()
    assert per_row.shape == (table.rows,)
    for row in range(table.rows):
        assert per_row[row] == flatten(table, np.array([row])).loss_tokens
    rows = np.random.default_rng(1).permutation(table.rows)[:7]
    assert flatten(table, rows).loss_tokens == per_row[rows].sum()


def test_gpus_option_is_dropped_from_the_launched_command():
    argv = ["shards", "-o", "run", "--gpus", "2", "--lr", "1e-3", "--gpus=4", "--resume"]
    assert strip_gpus(argv) == ["shards", "-o", "run", "--lr", "1e-3", "--resume"]


def test_the_test_schedules_cover_the_uneven_cases(table):
    assert table.rows == 13
    uneven = plan(table, UNEVEN)
    assert [len(s) for s in uneven] == [3, 3, 1] * 2 and len(uneven[2][0]) == 1  # 2 + 1; a rank idles
    split = plan(table, SPLIT)
    assert [len(s) for s in split] == [2, 1] * 2 and len(split[1][0]) == 3  # one micro-batch split


# ---- real torchrun ---------------------------------------------------------------------------


@pytest.mark.slow
def test_two_ranks_train_like_one_process_accumulating(shards, tmp_path):
    one = tmp_path / "one"
    single(SPLIT, shards, one)
    two = tmp_path / "two"
    done = run_cli([str(shards), "-o", str(two), *cli_args(SPLIT)], torchrun=True)
    assert_same_training(one, two)
    assert yaml.safe_load((two / "config.yaml").read_text())["world_size"] == 2

    # rank 0 alone wrote the run directory: one line per step, one set of outputs
    steps = [r["step"] for r in read_metrics(two / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    assert json.loads((two / "checkpoints" / "step-00000004" / "state.json").read_text())["world_size"] == 2
    assert done.stderr.count("error") == 0


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "whole"
    single(UNEVEN, shards, out)
    return out


@pytest.mark.slow
def test_resume_on_one_process_after_two_ranks(shards, uninterrupted, tmp_path):
    out = tmp_path / "run"
    run_cli([str(shards), "-o", str(out), *cli_args(UNEVEN), "--stop-after=2"], torchrun=True)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    rest = single(UNEVEN, shards, out, resume=True)
    assert rest.completed and rest.steps == 6
    assert_same_training(uninterrupted, out)


@pytest.mark.slow
def test_resume_on_two_ranks_after_one_process(shards, uninterrupted, tmp_path):
    out = tmp_path / "run"
    single(UNEVEN, shards, out, stop_after=3)
    # through the --gpus launcher (torchrun in-process, gloo on CPU)
    run_cli([str(shards), "-o", str(out), *cli_args(UNEVEN), "--resume", "--gpus=2"], torchrun=False)
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert_same_training(uninterrupted, out)


@pytest.mark.slow
def test_bad_input_is_one_line_from_rank_zero(shards, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "hive_train", str(shards), "-o", str(tmp_path / "r"), "--gpus=2"]
        + cli_args(dict(BASE, seq=100)),
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "seq 100 disagrees" in lines[0], done.stderr


@pytest.mark.slow
def test_ctrl_c_stops_every_rank_with_one_message(shards, tmp_path):
    import signal
    import time

    out = tmp_path / "r"
    flags = dict(BASE, batch_size=1, grad_accum=2, max_steps=10_000, eval_every=0, save_every=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hive_train", str(shards), "-o", str(out), "--gpus=2", *cli_args(flags)],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").stat().st_size):
        assert proc.poll() is None and time.monotonic() < deadline, "training never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == ["interrupted: stopped cleanly; completed outputs are intact"], stderr
