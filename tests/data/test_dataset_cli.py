"""`hive-data normalize` on datasets: the CLI edge (exit codes, one-line errors, summary on stderr)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hive_data.cli import main


@pytest.fixture
def ds(fixtures_dir):
    return fixtures_dir / "datasets"


def run(*args):
    result = CliRunner().invoke(main, ["normalize", *map(str, args)], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_normalize_gretel_file(ds, tmp_path):
    out = tmp_path / "clean.jsonl"
    code, stdout, stderr = run(ds / "gretel.jsonl", "--read", "mysql", "-o", out, "--num-proc", "1")
    assert code == 0, stderr
    assert "rows: in 4 = out 4 + rejected 0 + duplicates 0" in stderr
    assert "dropped from the distinct schemas: INSERT 2" in stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["dialect"] == "postgres" for r in rows)
    assert (tmp_path / "clean.jsonl.rejects.jsonl").read_text() == ""


def test_spider_csv_with_schema_dir_and_custom_rejects(ds, tmp_path):
    out, rej = tmp_path / "spider.parquet", tmp_path / "bad" / "r.jsonl"
    code, _, stderr = run(
        ds / "spider.csv", "--schema-dir", ds / "databases", "--schema-key", "database", "--read", "mysql",
        "--rejects", rej, "-o", out, "--num-proc", "1",
    )  # fmt: skip
    assert code == 0, stderr
    assert "rows: in 4 = out 4" in stderr and out.exists() and rej.exists()


def test_strict_exits_1_after_writing(ds, tmp_path):
    out = tmp_path / "clean.jsonl"
    code, _, stderr = run(ds / "broken.jsonl", "--read", "mysql", "--strict", "-o", out, "--num-proc", "1")
    assert code == 1
    assert (
        f"error: {ds / 'broken.jsonl'}: 6 rows rejected (--strict); reasons in {tmp_path / 'clean.jsonl.rejects.jsonl'}"
        in stderr
    )
    assert "Traceback" not in stderr and out.exists()
    # without --strict the same input succeeds and says where the rejects went
    code, _, stderr = run(ds / "broken.jsonl", "--read", "mysql", "-o", out, "--num-proc", "1")
    assert code == 0 and "rejected by step: answer 2, fields 1, parse 1, read 2" in stderr


def test_map_and_format_flags(tmp_path):
    src = tmp_path / "odd.jsonl"
    src.write_text(
        json.dumps({"q": "How many?", "ddl": "CREATE TABLE t (a INT)", "gold": "SELECT COUNT(*) FROM t"})
    )
    out = tmp_path / "o.jsonl"
    code, _, stderr = run(
        src, "--map", "question=q,schema=ddl,answer=gold", "--format", "create_context", "-o", out
    )
    assert code == 0, stderr
    row = json.loads(out.read_text())
    assert list(row) == ["q", "ddl", "gold", "dialect"]
    assert row["ddl"].startswith("-- Dialect: postgres\n-- Table: t\nCREATE TABLE t (")


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "empty input: no rows"),
        ('{"a": 1}\n', ":1: row 1: unknown record format: columns ['a']"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, content, message):
    src = tmp_path / "in.jsonl"
    src.write_text(content)
    code, _, stderr = run(src, "-o", tmp_path / "o.jsonl", "--num-proc", "1")
    assert code == 1 and "Traceback" not in stderr
    (line,) = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert line.startswith(f"error: {src}") and message in line
    assert not (tmp_path / "o.jsonl").exists()


def test_dataset_needs_an_output_file(ds, tmp_path):
    code, _, stderr = run(ds / "gretel.jsonl")
    assert code == 1 and "needs -o OUTPUT.jsonl or -o OUTPUT.parquet" in stderr
    code, _, stderr = run(tmp_path / "nope.jsonl", "-o", tmp_path / "o.jsonl")
    assert code == 1 and "no such file or directory" in stderr
    code, _, stderr = run(ds / "gretel.jsonl", "-o", tmp_path / "o.csv")
    assert code == 1 and "must end in .jsonl or .parquet" in stderr
