"""`hive-eval RUN_DIR` without DATA: the run's own validation split, read back from its shards, and
the evaluation's section in the run's report.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_eval_generate import SCHEMA, SQL_ROWS, tokenizer, write_jsonl
from train_helpers import TINY_MODEL, TOKENIZER

from hive_core.errors import ConfigError
from hive_data.pack import pack_dataset
from hive_data.prompt import parse_system_prompt, system_prompt
from hive_eval.generate import render_prompts
from hive_eval.val_split import val_rows
from hive_train.config import TrainConfig
from hive_train.loop import train

JSON_ROWS = [
    {"prompt": f"Make an object with key k{i} set to {i}.", "completion": f'{{"k{i}": {i}}}'}
    for i in range(8)
]


@pytest.fixture(scope="module")
def val_run(tmp_path_factory):
    """A two-step run on shards whose validation split holds about half of 16 SQL rows and 8 JSON rows."""
    tmp = tmp_path_factory.mktemp("valsplit")
    data = write_jsonl(tmp / "clean.jsonl", SQL_ROWS)
    other = write_jsonl(tmp / "json.jsonl", JSON_ROWS)
    pack_dataset(
        [data, other], tmp / "shards", tokenizer=str(TOKENIZER), seq=256, val=0.5, progress=False, num_proc=1
    )
    cfg = TrainConfig(
        model=str(TINY_MODEL), rank=4, alpha=8, batch_size=2, grad_accum=1, lr=1e-3, max_steps=2,
        eval_every=0, save_every=0, seed=0, device="cpu",
    )  # fmt: skip
    return train(cfg, tmp / "shards", tmp / "run", progress=False).run_dir


def test_system_prompt_round_trips():
    for dialect in ("postgres", "sqlite", "tsql", "clickhouse"):
        assert parse_system_prompt(system_prompt(SCHEMA, dialect)) == (dialect, SCHEMA)
    assert parse_system_prompt(system_prompt(None, "mysql")) == ("mysql", None)
    assert parse_system_prompt("You are a JSON expert.") is None
    assert parse_system_prompt(system_prompt(SCHEMA, "postgres") + "\nextra") == (
        "postgres",
        SCHEMA + "\nextra",
    )


def test_val_rows_are_the_packed_rows_prompts_and_answers(val_run):
    tok = tokenizer()
    rows = val_rows(val_run, tok)
    sql = {r["question"]: r for r in SQL_ROWS}
    js = {r["prompt"]: r for r in JSON_ROWS}
    assert 0 < len(rows) < len(SQL_ROWS) + len(JSON_ROWS)  # a split, not everything
    kinds = set()
    for row in rows:
        if row.dialect is not None:  # a text-to-SQL row: schema and dialect read back from the system prompt
            source = sql[row.question]
            assert (row.gold, row.schema, row.dialect) == (source["answer"], SCHEMA, "postgres")
            rendered = render_prompts([source], tok, {"think": "empty"})[0]
            kinds.add("sql")
        else:
            source = js[row.question]
            assert row.gold == source["completion"] and row.schema is None
            rendered = render_prompts([source], tok, {"think": "empty"})[0]
            kinds.add("json")
        # the prompt is token for token what pack wrote before the answer
        assert row.prompt_ids == tok(rendered, add_special_tokens=False)["input_ids"]
    assert kinds == {"sql", "json"}
    assert len(val_rows(val_run, tok, limit=2)) == 2


@pytest.mark.slow  # ~30 s on a 2-core machine
def test_hive_eval_on_the_validation_split_writes_the_report_section(val_run, tmp_path):
    cmd = [sys.executable, "-m", "hive_eval.cli", str(val_run), "--device", "cpu", "--max-new-tokens", "6"]
    for _ in range(2):  # a second evaluation replaces the report's section instead of adding one
        done = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    out = val_run / "eval"
    rows = [json.loads(x) for x in (out / "val_rows.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["rows"] == len(rows) == len(val_rows(val_run, tokenizer()))
    assert summary["counts"]["missing"] == 0
    kinds = [json.loads(x)["kind"] for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert "sql" in kinds and "json" in kinds  # SQL rows executed, JSON rows parsed
    report = (val_run / "report.md").read_text()
    assert report.count("<!-- hive-eval -->") == 1 and "## Evaluation (hive-eval)" in report
    assert "EX" in report and str(out / "predictions.jsonl") in report


def test_a_run_without_its_shards_or_not_a_run_fails_in_one_line(val_run, tmp_path):
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(val_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["shards"]["path"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="gone: pass DATA"):
        val_rows(run, tokenizer())
    done = subprocess.run(
        [sys.executable, "-m", "hive_eval.cli", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "not a run directory" in done.stderr and len(done.stderr.strip().splitlines()) == 1
