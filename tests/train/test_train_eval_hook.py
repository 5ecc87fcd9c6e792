"""Evaluation during training (`--eval-data`, `hive_eval.during_training`): the live adapter answers a
fixed subset at every evaluation and is scored; EX goes into metrics.jsonl, loss.png and report.md,
and best/ keeps the adapter of the best evaluation by `--select-by`.

Fast: the settings and their one-line errors, best/'s bookkeeping, the plot and report. Slow: the
tiny model trained on 16 text-to-SQL pairs through `hive-train`, with and without evaluation.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from train_helpers import TINY_MODEL, TOKENIZER, sql_rows

from hive_core.errors import ConfigError
from hive_train.best import BEST, RECORD, BestAdapter, read_best
from hive_train.cli import main
from hive_train.config import TrainConfig
from hive_train.config_sources import resolve_config
from hive_train.loop import eval_line, train
from hive_train.metrics import read_metrics
from hive_train.report import plot_losses, write_report

EVAL_LINE = re.compile(r"^step (\d+): EX (\d+\.\d)% \(valid \d+%, 16 rows, \d+\.\d s\)(; best so far.*)?$")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def one_line_error(result, *fragments) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# ---- settings ----------------------------------------------------------------------------------


def test_settings_default_and_check(tmp_path):
    data = write_jsonl(tmp_path / "val.jsonl", sql_rows()[:2])
    assert TrainConfig().selection == "val_loss"
    assert TrainConfig(eval_data=str(data)).check().selection == "ex"
    assert TrainConfig(eval_data=str(data), select_by="val_loss").check().selection == "val_loss"
    with pytest.raises(ConfigError, match="select_by ex needs eval_data"):
        TrainConfig(select_by="ex").check()
    with pytest.raises(ConfigError, match=r"eval_data does not exist .*nope\.jsonl"):
        TrainConfig(eval_data=str(tmp_path / "nope.jsonl")).check()
    with pytest.raises(ConfigError, match="select_by must be one of ex, val_loss"):
        TrainConfig(select_by="loss").check()


def test_recipe_keys_and_flags_fill_the_settings(tmp_path):
    data = write_jsonl(tmp_path / "val.jsonl", sql_rows()[:2])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"train:\n  eval_data: {data}\n  eval_rows: 50\n  eval_max_new_tokens: 64\n  select_by: val_loss\n"
    )
    cfg, _ = resolve_config(recipe, {})
    assert (cfg.eval_data, cfg.eval_rows, cfg.eval_max_new_tokens, cfg.select_by) == (
        str(data),
        50,
        64,
        "val_loss",
    )
    cfg, _ = resolve_config(recipe, {"eval_rows": 7, "select_by": "ex"})  # flags win
    assert (cfg.eval_rows, cfg.selection) == (7, "ex")
    recipe.write_text(f"train:\n  eval_data: {tmp_path / 'gone.jsonl'}\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(recipe, {})
    assert err.value.file == str(recipe) and err.value.line == 2 and "gone.jsonl" in str(err.value)


def test_bad_eval_data_is_a_one_line_error(shards, tmp_path):
    base = [
        shards,
        "-o",
        tmp_path / "run",
        "--model",
        TINY_MODEL,
        "--tokenizer",
        TOKENIZER,
        "--max-steps",
        2,
        "-q",
    ]

    def run(*extra):
        return CliRunner().invoke(main, [str(a) for a in [*base, *extra]])

    missing = tmp_path / "missing.jsonl"
    one_line_error(run("--eval-data", missing), "--eval-data", str(missing), "does not exist")
    one_line_error(run("--select-by", "ex"), "--select-by", "needs eval_data")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("this is not JSON\n")
    one_line_error(run("--eval-data", garbage), str(garbage))
    assert not (tmp_path / "run").exists(), "bad evaluation data stops the run before anything is written"


# ---- best/, the plot and the report -------------------------------------------------------------


class FakeModel:
    """Stands in for the peft model: `save_adapter` calls its `save_pretrained`."""

    def __init__(self):
        self.saved = 0

    def save_pretrained(self, directory, safe_serialization=True):
        self.saved += 1
        with open(f"{directory}/adapter_model.safetensors", "w") as fh:
            fh.write(str(self.saved))


def test_best_adapter_keeps_the_best_evaluation(tmp_path):
    model = FakeModel()
    best = BestAdapter(tmp_path, "val_loss")
    assert best.offer(2, {"val_loss": 2.0}, model)
    assert not best.offer(4, {"val_loss": 2.0}, model)  # a tie keeps the earlier step
    assert not best.offer(6, {"val_loss": math.nan}, model) and not best.offer(6, {"val_loss": None}, model)
    assert best.offer(8, {"val_loss": 1.5, "eval_ex": 0.25, "loss": 9.0}, model)
    assert not best.offer(10, {"val_loss": 1.7}, model)
    record = read_best(tmp_path)
    assert record == best.record and (record["step"], record["metric"], record["value"]) == (
        8,
        "val_loss",
        1.5,
    )
    assert record["scores"] == {"val_loss": 1.5, "eval_ex": 0.25}
    assert (tmp_path / BEST / "adapter_model.safetensors").read_text() == "2"
    assert not list(tmp_path.glob(".best.*")), "no staging directory is left"

    # EX: higher is better; a resume adopts the best only when it was chosen the same way
    scope = {"eval_data": "/data/val.jsonl", "eval_rows": 200}
    ex = BestAdapter(tmp_path, "ex", scope)
    assert ex.offer(3, {"eval_ex": 0.5}, model) and ex.offer(5, {"eval_ex": 0.75}, model)
    assert not BestAdapter(tmp_path, "ex", scope, resume=True).offer(7, {"eval_ex": 0.5}, model)
    assert BestAdapter(tmp_path, "ex", dict(scope, eval_rows=50), resume=True).offer(
        7, {"eval_ex": 0.5}, model
    )
    assert BestAdapter(tmp_path, "val_loss", resume=True).offer(9, {"val_loss": 9.0}, model)
    # a save killed before its rename leaves a staging directory: the next run removes it
    (tmp_path / f".{BEST}.x.staging").mkdir()
    BestAdapter(tmp_path, "ex", scope, resume=True)
    assert not list(tmp_path.glob(".best.*")) and read_best(tmp_path)["step"] == 9


def test_plot_and_report_show_ex_and_the_best_step(tmp_path):
    records = [
        {"step": s, "loss": 3.0 - s / 10, "val_loss": None, "tokens_per_s": 1.0, "mfu": None}
        for s in range(1, 9)
    ]
    for record, ex in zip(records[3::4], (0.25, 0.5)):
        record.update(val_loss=2.0, eval_ex=ex, eval_valid=0.75, eval_rows=16)
    plot_losses(records, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    summary = {
        "run_dir": str(tmp_path), "shards": "s", "manifest_sha256": "0" * 64, "seq": 96, "train_rows": 1,
        "train_tokens": 1, "val_rows": 0, "val_tokens": 0, "trainable_params": 1, "device": "cpu",
        "dtype": "float32", "attention": "sdpa", "steps": 8, "epochs": 1.0, "batching": "b",
        "peak_memory_gb": 0.1, "wall_s": 1.0,
        "best": {"step": 8, "metric": "ex", "value": 0.5, "scores": {"eval_ex": 0.5, "val_loss": 2.0}},
    }  # fmt: skip
    write_report(tmp_path / "report.md", summary=summary, config=TrainConfig().to_dict(), records=records)
    report = (tmp_path / "report.md").read_text()
    assert "final EX 50.0% (16 rows)" in report
    assert "best: step 8 by ex (EX 50.0%, val loss 2.0000), adapter in `best/`" in report
    assert eval_line(200, {"ex": 0.41, "valid": 0.88, "rows": 200, "seconds": 12.34}) == (
        "step 200: EX 41.0% (valid 88%, 200 rows, 12.3 s)"
    )
    assert (
        eval_line(8, {"exact_text": 0.5, "rows": 4, "seconds": 1.0})
        == "step 8: EX n/a, exact match 50.0% (4 rows, 1.0 s)"
    )


# ---- training with evaluation (slow) -----------------------------------------------------------


@pytest.fixture(scope="module")
def sql_data(tmp_path_factory):
    """The 16 text-to-SQL rows and their shards (every row in train: the model memorises them)."""
    from hive_data.pack import pack_dataset

    root = tmp_path_factory.mktemp("sql")
    data = write_jsonl(root / "clean.jsonl", sql_rows())
    pack_dataset(
        [data], root / "shards", tokenizer=str(TOKENIZER), seq=128, val=0.0, progress=False, num_proc=1
    )
    return data, root / "shards"


SQL_RUN = dict(
    model=str(TINY_MODEL), rank=16, alpha=32, batch_size=16, grad_accum=1, lr=1e-2, lr_scheduler="constant",
    warmup_ratio=0.0, seed=0, device="cpu",
)  # fmt: skip


@pytest.fixture(scope="module")
def evaluated_run(sql_data, tmp_path_factory):
    """40 steps through `hive-train` with --eval-data, evaluated and checkpointed every 8 steps."""
    data, shards = sql_data
    out = tmp_path_factory.mktemp("runs") / "run"
    flags = dict(SQL_RUN, max_steps=40, eval_every=8, save_every=8, keep_checkpoints=10)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items() if k not in ("lr_scheduler",)]
    args += ["--lr-scheduler", "constant", "--eval-data", str(data), "--eval-max-new-tokens", "40"]
    result = CliRunner().invoke(main, [str(shards), "-o", str(out), *args])
    assert result.exit_code == 0, (result.stderr, result.exception)
    return out, result.stderr


@pytest.mark.slow
def test_metrics_best_adapter_plot_and_report(evaluated_run):
    out, stderr = evaluated_run
    records = read_metrics(out / "metrics.jsonl")
    scored = [r for r in records if "eval_ex" in r]
    assert [r["step"] for r in scored] == [8, 16, 24, 32, 40]  # the --eval-every cadence
    for r in scored:
        assert r["eval_rows"] == 16 and 0 <= r["eval_ex"] <= r["eval_valid"] <= r["eval_parses"] <= 1
        summary = json.loads((out / "eval" / f"step-{r['step']:08d}" / "summary.json").read_text())
        assert summary["overall"]["ex"] == r["eval_ex"] and summary["counts"]["missing"] == 0
    assert max(r["eval_ex"] for r in scored) >= 0.25, scored  # it learns the pairs as it goes
    lines = [m for m in map(EVAL_LINE.match, stderr.splitlines()) if m]
    assert [int(m.group(1)) for m in lines] == [8, 16, 24, 32, 40], stderr

    # best/: the first evaluation with the highest EX, and exactly that step's adapter
    best = json.loads((out / BEST / RECORD).read_text())
    top = max(r["eval_ex"] for r in scored)
    assert best["metric"] == "ex" and best["value"] == top
    assert best["step"] == next(r["step"] for r in scored if r["eval_ex"] == top)
    saved = [int(m.group(1)) for m in lines if m.group(3)]
    assert saved[-1] == best["step"]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(out / BEST))
    weights = load_file(out / "checkpoints" / f"step-{best['step']:08d}" / "trainable.safetensors")
    params = dict(loaded.named_parameters())
    assert set(weights) <= set(params)
    for name, value in weights.items():
        assert torch.equal(params[name], value), name

    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert f"best: step {best['step']} by ex (EX {top:.1%}" in report and "final EX" in report
    assert len((out / "eval" / "rows.jsonl").read_text().splitlines()) == 16


@pytest.mark.slow  # 10-14 s here: keeps the quick subset under 5 minutes
def test_evaluation_leaves_training_unchanged(sql_data, tmp_path):
    """With dropout (peft's layers, RNG in use) the losses and adapter are bitwise those of a run
    without evaluation; the model goes back to training mode and hive's attention."""
    from hive_eval.during_training import live_generation
    from hive_eval.generate import generate, prompt_settings, render_prompts

    data, shards = sql_data
    cfg = TrainConfig(**SQL_RUN, max_steps=6, eval_every=2, save_every=0, dropout=0.1)
    plain = train(cfg, shards, tmp_path / "plain", progress=False)
    cfg.eval_data, cfg.eval_max_new_tokens = str(data), 24
    scored = train(cfg, shards, tmp_path / "scored", progress=False)
    assert scored.losses == plain.losses
    a = load_file(tmp_path / "plain" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "scored" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in read_metrics(tmp_path / "scored" / "metrics.jsonl") if "eval_ex" in r] == [
        2,
        4,
        6,
    ]
    assert scored.best is not None and scored.best["metric"] == "ex"
    assert not (tmp_path / "plain" / BEST).exists()  # no val split: no val_loss to select by

    model = scored.model
    assert model.training and model.get_base_model().config._attn_implementation == "hive_docs"
    # left-padded batches decode as single rows do: padding is masked on the live model
    tokenizer = plain_tokenizer(tmp_path / "scored")
    prompts = render_prompts(sql_rows(), tokenizer, prompt_settings(shards)[0])
    with live_generation(model, tokenizer):
        assert not model.training
        batched = generate(
            model, tokenizer, prompts, max_new_tokens=12, batch_size=8, progress=False, decoder="hf"
        )
        single = [
            generate(model, tokenizer, [p], max_new_tokens=12, batch_size=1, progress=False, decoder="hf")[0]
            for p in prompts
        ]
    assert batched == single
    assert model.training and model.get_base_model().config._attn_implementation == "hive_docs"


def plain_tokenizer(run_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(run_dir / "tokenizer"))


def test_best_tracks_val_loss_without_eval_data(shards, tmp_path):
    cfg = TrainConfig(
        model=str(TINY_MODEL), tokenizer=str(TOKENIZER), rank=4, alpha=8, batch_size=2, grad_accum=1, lr=5e-3,
        max_steps=6, eval_every=2, save_every=0, seed=1, device="cpu",
    )  # fmt: skip
    result = train(cfg, shards, tmp_path / "run", progress=False)
    val = {
        r["step"]: r["val_loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["val_loss"]
    }
    assert sorted(val) == [2, 4, 6]
    best = read_best(tmp_path / "run")
    assert best == result.best and best["metric"] == "val_loss"
    assert best["step"] == min(val, key=lambda s: (val[s], s)) and best["value"] == min(val.values())
    assert "eval_ex" not in json.dumps(best)


@pytest.mark.slow
def test_under_torchrun_the_ranks_share_generation_and_rank_0_scores(sql_data, tmp_path):
    """2 CPU ranks (gloo) answer half the rows each; rank 0 gathers and scores them: the same
    answers as one process accumulating over the same micro-batches."""
    import os
    import subprocess
    import sys

    from train_helpers import ROOT

    data, shards = sql_data
    flags = dict(SQL_RUN, batch_size=8, grad_accum=2, max_steps=16, eval_every=8, save_every=0)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in flags.items()]
    args += ["--eval-data", str(data), "--eval-max-new-tokens", "40", "-q"]
    for name, launcher in (
        ("one", []),
        ("two", ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]),
    ):
        done = subprocess.run(
            [sys.executable, *launcher, "-m", "hive_train", str(shards), "-o", str(tmp_path / name), *args],
            cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    for step in (8, 16):
        one, two = (
            tmp_path / name / "eval" / f"step-{step:08d}" / "completions.jsonl" for name in ("one", "two")
        )
        assert len(two.read_text().splitlines()) == 16
        assert two.read_text() == one.read_text()
    ex = [
        [r["eval_ex"] for r in read_metrics(tmp_path / name / "metrics.jsonl") if "eval_ex" in r]
        for name in ("one", "two")
    ]
    assert len(ex[1]) == 2 and ex[0] == ex[1]
    assert read_best(tmp_path / "two")["step"] == read_best(tmp_path / "one")["step"]
