"""`hive-eval DATA --predictions FILE -o OUT` end to end in a subprocess: no torch, outputs, summary
table, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SCHEMA = """-- Dialect: postgres
-- Table: singer
CREATE TABLE singer (
  singer_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  country TEXT,
  age INTEGER
);
"""

# (question, gold, prediction, difficulty, correct?)
ROWS = [
    ("How many singers from France?", "SELECT COUNT(*) FROM singer WHERE country = 'France'",
     "SELECT count(*) FROM singer AS s WHERE 'France' = s.country", "easy", True),
    ("Names of singers over 30", "SELECT name FROM singer WHERE age > 30",
     "SELECT name FROM singer WHERE age >= 30", "easy", False),
    ("Countries", "SELECT DISTINCT country FROM singer", "SELECT country FROM singer", "hard", False),
    ("Name and age", "SELECT name, age FROM singer WHERE age < 40", "SELECT age, name FROM singer WHERE 40 > age",
     "hard", True),
    ("Drop it", "SELECT name FROM singer", "DROP TABLE singer", "hard", False),
]  # fmt: skip

# Reports whether torch or transformers were imported, whatever way the command exits.
RUNNER = """
import atexit, sys
atexit.register(lambda: sys.stderr.write(
    "\\nHEAVY:" + ",".join(m for m in ("torch", "transformers") if m in sys.modules) + "\\n"))
from hive_eval.cli import main
main()
"""


def _write(tmp_path, with_ids=False):
    data, preds = tmp_path / "data.jsonl", tmp_path / "preds.jsonl"
    with open(data, "w") as d, open(preds, "w") as p:
        for i, (q, gold, pred, level, _) in enumerate(ROWS, 1):
            row = {"question": q, "sql": gold, "schema": SCHEMA, "dialect": "postgres", "difficulty": level}
            if with_ids:
                row["id"] = f"q{i}"
            d.write(json.dumps(row) + "\n")
            key = {"id": f"q{i}"} if with_ids else {"row": i}
            p.write(json.dumps({**key, "prediction": pred}) + "\n")
    return data, preds


def _run(*args):
    return subprocess.run(
        [sys.executable, "-c", RUNNER, *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_scores_a_prediction_file_end_to_end_without_torch(tmp_path):
    data, preds = _write(tmp_path)
    out = tmp_path / "eval"
    res = _run(data, "--predictions", preds, "-o", out, "--no-progress")  # embedded PostgreSQL
    assert res.returncode == 0, res.stderr
    assert "HEAVY:\n" in res.stderr  # neither torch nor transformers was imported
    rows = [json.loads(line) for line in open(out / "predictions.jsonl")]
    assert [r["ex"] for r in rows] == [r[4] for r in ROWS]
    assert rows[4]["error"].startswith("not a query")
    assert {
        "row",
        "question",
        "gold",
        "prediction",
        "parses",
        "valid",
        "exact",
        "similarity",
        "error",
    } <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["ex"] == pytest.approx(2 / 5)
    assert summary["by"]["difficulty"]["easy"]["ex"] == pytest.approx(1 / 2)
    assert summary["by"]["difficulty"]["hard"]["rows"] == 3
    assert summary["config"]["compare"] == "bag" and summary["config"]["databases"] == 3
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["rows", "EX", "valid", "parses", "exact", "sim"]
    assert lines[1].split()[:3] == ["all", "5", "40.0%"]
    assert any(line.strip().startswith("easy") for line in lines)


def test_ids_run_dir_and_set_compare(tmp_path, pg_uri):
    data, preds = _write(tmp_path, with_ids=True)
    run = tmp_path / "run"
    run.mkdir()
    res = _run(
        run, data, "-p", preds, "--compare", "set", "--pg-uri", pg_uri, "--limit", "3", "--no-progress"
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in open(run / "eval" / "predictions.jsonl")]
    assert [r["id"] for r in rows] == ["q1", "q2", "q3"]
    assert [r["ex"] for r in rows] == [True, False, True]  # set: DISTINCT no longer matters
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["inputs"]["run_dir"] == str(run) and summary["config"]["limit"] == 3


def test_missing_prediction_scores_wrong_and_is_counted(tmp_path, pg_uri):
    data, preds = _write(tmp_path)
    preds.write_text("\n".join(preds.read_text().splitlines()[1:]) + "\n")  # no prediction for row 1
    res = _run("-", data, "-p", preds, "-o", tmp_path / "o", "--pg-uri", pg_uri, "--no-progress")
    assert res.returncode == 0, res.stderr
    first = json.loads(open(tmp_path / "o" / "predictions.jsonl").readline())
    assert first["missing"] and first["ex"] is False and first["error"] == "no prediction"
    assert "1 rows without a prediction" in res.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"row": 1, "prediction": "SELECT 1"}\n{"row": 2, "prediction": \n', ":2: not JSON"),
        ('{"prediction": "SELECT 1"}\n', ":1: each prediction needs `row`"),
        ('{"row": 1, "prediction": "a"}\n{"row": 1, "prediction": "b"}\n', ":2: row 1 predicted twice"),
        ('{"row": 1, "prediction": 5}\n', ":1: field 'prediction' is int"),
    ],
)
def test_bad_prediction_files_fail_with_one_line(tmp_path, content, message):
    data, _ = _write(tmp_path)
    preds = tmp_path / "bad.jsonl"
    preds.write_text(content)
    res = _run(data, "-p", preds, "-o", tmp_path / "o")
    assert res.returncode == 1
    err = res.stderr.replace("\nHEAVY:\n", "").strip()
    assert err.startswith(f"error: {preds}") and message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jsonl", "-p", "{preds}", "-o", "o"], "missing.jsonl: no such file or directory"),
        (  # one argument without --predictions is RUN_DIR (its validation split): a data file is not one
            ["{data}", "-o", "o"],
            "not a run directory (no config.yaml): pass RUN_DIR [DATA] to generate, or DATA --predictions FILE",
        ),
        (["{data}", "-p", "{preds}"], "missing -o OUT"),
        (["nodir", "{data}", "-p", "{preds}"], "nodir: no such run directory"),
    ],
)
def test_usage_errors(tmp_path, args, message):
    data, preds = _write(tmp_path)
    res = _run(*[a.format(data=data, preds=preds) for a in args])
    assert res.returncode == 1 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_help_names_every_option():
    res = _run("--help")
    assert res.returncode == 0
    for option in ("--predictions", "--compare", "--databases", "--seed", "--limit", "--timeout-ms", "-o"):
        assert option in res.stdout


def test_json_and_text_rows_need_no_postgres(tmp_path):
    from hive_eval.evaluate import EvalConfig, evaluate

    data, preds = tmp_path / "d.jsonl", tmp_path / "p.jsonl"
    rows = [
        ({"prompt": "give a point", "completion": '{"x": 1, "y": 2}'}, '{"y": 2, "x": 1}'),
        ({"prompt": "give a point", "completion": '{"x": 1, "y": 2}'}, '{"x": 1}'),
        ({"instruction": "greet", "output": "hello  world", "source": "alpaca-like"}, "hello world"),
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r, _ in rows[:2]))
    preds.write_text(
        "".join(json.dumps({"row": i, "prediction": p}) + "\n" for i, (_, p) in enumerate(rows[:2], 1))
    )
    summary = evaluate(
        data, preds, tmp_path / "out", EvalConfig(pg_uri="postgresql://nowhere.invalid/x"), progress=False
    )
    got = [json.loads(line) for line in open(tmp_path / "out" / "predictions.jsonl")]
    assert [r["kind"] for r in got] == ["json", "json"]
    assert [r["exact"] for r in got] == [True, False] and got[0]["exact_text"] is False
    assert summary["overall"]["exact"] == 0.5 and "ex" not in summary["overall"]

    data.write_text(json.dumps(rows[2][0]) + "\n")
    preds.write_text(json.dumps({"row": 1, "prediction": rows[2][1]}) + "\n")
    summary = evaluate(data, preds, tmp_path / "out2", EvalConfig(), progress=False)
    assert summary["overall"]["exact_text"] == 1.0 and summary["by"]["source"]["alpaca-like"]["rows"] == 1


def test_a_recipes_eval_section_sets_the_defaults_and_flags_win(tmp_path):
    data, preds = _write(tmp_path)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("eval:\n  compare: set\n  databases: 2\n  timeout_ms: 3000\n")
    done = _run(
        data, "-p", preds, "-o", tmp_path / "a", "--config", recipe, "--databases", "1", "--no-progress"
    )
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "a" / "summary.json").read_text())["config"]
    assert (config["compare"], config["databases"], config["timeout_ms"]) == ("set", 1, 3000)
    recipe.write_text("eval:\n  compare: set\n  temprature: 0.2\n")  # a typo: refused where it is
    done = _run(data, "-p", preds, "-o", tmp_path / "b", "--config", recipe)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "temprature" in done.stderr and f"{recipe}:3:3" in done.stderr


@pytest.mark.parametrize("name", ["sql-postgres", "json", "cypher", "typescript"])
def test_every_pipelines_eval_section_is_read_by_hive_eval(name):
    from pathlib import Path

    from click.testing import CliRunner

    from hive_eval.cli import main

    recipe = Path(__file__).resolve().parents[2] / "pipelines" / f"{name}.yaml"
    result = CliRunner().invoke(main, ["--config", str(recipe), "--help"])
    assert result.exit_code == 0, result.output
