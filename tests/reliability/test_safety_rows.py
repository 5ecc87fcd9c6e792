"""Every row accounted for, bounded memory (issue 13): hostile rows become rejects, never a crash.

- `hive-data normalize`: a lone surrogate, very deep JSON, Parquet values Python or JSON cannot hold,
  NaN/Infinity (written as null and counted), a deeply nested SQL answer: each is one reject or one
  nulled value, the other rows go through, and every output line is strict JSON in UTF-8.
- A `.sql` file nested 100k parentheses deep: a one-line error, exit 1.
- `hive-data pack`: a 50 MB row is dropped as overlong from its length without being tokenized (run
  under a 3 GB address-space limit), `--seq` is bounded, and a pack that drops most rows as overlong
  says so.
- `normalize_dataset` called from a script without the `__main__` guard works.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from hive_core.errors import ConfigError
from hive_data.cli import main as cli
from hive_data.normalize_rows import iter_output, normalize_dataset
from hive_data.pack import describe, pack_dataset

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "fixtures" / "tokenizer"
MEMORY_LIMIT = 3 * 1024**3  # the address space a hostile row must fit in


def chat(i: int, **extra) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ],
        **extra,
    }


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def normalize(src: Path, tmp_path: Path, **options):
    """Run normalize in this process; returns (summary, output rows, rejects) after checking that every
    line written is strict JSON (no NaN/Infinity) in valid UTF-8 and that every row is accounted for."""
    out, rej = tmp_path / "out.jsonl", tmp_path / "rejects.jsonl"
    summary = normalize_dataset(src, out, rejects=rej, num_proc=1, progress=False, **options)

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))

    rows = [strict(line) for line in out.read_bytes().decode("utf-8").splitlines()]
    rejects = [strict(line) for line in rej.read_bytes().decode("utf-8").splitlines()]
    assert summary.rows_in == summary.rows_out + summary.rows_rejected + summary.duplicates
    assert len(rows) == summary.rows_out and len(rejects) == summary.rows_rejected
    return summary, rows, rejects


def limited(limit: int = MEMORY_LIMIT):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def run_limited(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """`hive-data ARGS` in a child process under an address-space limit (a blow-up fails, not the host)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "hive_data", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limited(),
    )


# --------------------------------------------------------------------------- normalize


def test_lone_surrogate_row_is_a_reject(tmp_path):
    src = write_lines(
        tmp_path / "rows.jsonl",
        [
            json.dumps(chat(1)),
            '{"messages": [{"role": "user", "content": "bad \\ud800 here"}, '
            '{"role": "assistant", "content": "x"}]}',
            json.dumps(chat(3, note="a real pair \U0001f600 is fine")),
        ],
    )
    summary, rows, rejects = normalize(src, tmp_path)
    assert summary.rows_out == 2 and [r["row"] for r in rejects] == [2]
    assert rejects[0]["step"] == "read" and "surrogate" in rejects[0]["reason"]
    assert rows[1]["note"].endswith("\U0001f600 is fine")
    # pack reads rows the same way: the row is rejected as unreadable, the others are packed
    result = pack_dataset(
        src, tmp_path / "shards", tokenizer=str(TOKENIZER), seq=64, num_proc=1, progress=False
    )
    assert result.manifest["totals"]["rows_dropped"] == {"unreadable": 1}


def test_deep_json_rows_are_rejects(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000  # past the json module's recursion limit
    medium = "[" * 500 + "]" * 500  # readable, but too deep to pass through every encoder safely
    nested_string = json.dumps("[" * 100_000 + "]" * 100_000)  # a messages field holding deep JSON text
    src = write_lines(
        tmp_path / "rows.jsonl",
        [
            json.dumps(chat(1)),
            '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], '
            f'"extra": {deep}}}',
            json.dumps(chat(3))[:-1] + f', "extra": {medium}}}',
            '{"messages": ' + nested_string + "}",
            json.dumps(chat(5)),
        ],
    )
    summary, rows, rejects = normalize(src, tmp_path)
    assert summary.rows_out == 2
    assert [r["row"] for r in rejects] == [2, 3, 4]
    assert all("nested too deeply" in r["reason"] or "nested deeper" in r["reason"] for r in rejects), rejects
    assert all(r["step"] != "internal" for r in rejects)
    result = pack_dataset(
        src, tmp_path / "shards", tokenizer=str(TOKENIZER), seq=64, num_proc=1, progress=False
    )
    assert result.manifest["totals"]["rows_packed"] == 2
    assert sum(result.manifest["totals"]["rows_dropped"].values()) == 3


def test_parquet_values_json_or_python_cannot_hold(tmp_path):
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    msgs = [chat(i)["messages"] for i in range(3)]
    table = pa.table(
        {
            "messages": msgs,
            "blob": pa.array([b"\x00\xff", b"ab", b""], pa.binary()),
            "price": pa.array([decimal.Decimal("1.50"), None, decimal.Decimal("2")], pa.decimal128(10, 2)),
            "day": pa.array([datetime.date(2024, 1, 2)] * 3, pa.date32()),
            "took": pa.array([90, 1, 2], pa.duration("s")),
            # row 3: year 33658, which Python's datetime cannot hold
            "seen": pa.array([0, 86_400, 10**12], pa.timestamp("s")),
        }
    )
    src = tmp_path / "rows.parquet"
    pq.write_table(table, src)
    summary, rows, rejects = normalize(src, tmp_path)
    assert summary.rows_out == 2 and [r["row"] for r in rejects] == [3]
    assert "'seen'" in rejects[0]["reason"] and rejects[0]["step"] == "read"
    assert rows[0]["took"] == 90 and rows[0]["blob"] == "AP8=" and rows[0]["price"] == "1.50"
    assert rows[0]["day"] == "2024-01-02" and rows[1]["seen"] == "1970-01-02T00:00:00"


def test_nan_and_infinity_are_written_as_null_and_counted(tmp_path):
    src = write_lines(
        tmp_path / "rows.jsonl",
        [
            json.dumps(chat(1)),
            json.dumps(chat(2))[:-1] + ', "score": NaN, "range": [1.5, Infinity, -Infinity]}',
        ],
    )
    summary, rows, _ = normalize(src, tmp_path)
    assert rows[1]["score"] is None and rows[1]["range"] == [1.5, None, None]
    assert summary.nulled == 3
    assert "written as null: 3" in summary.text()


def test_deeply_nested_sql_answer_is_a_reject(tmp_path):
    deep = "SELECT " + "(" * 100_000 + "1" + ")" * 100_000 + " FROM t"
    rows = [
        {"sql_prompt": "ids", "sql_context": "CREATE TABLE t (id INT);", "sql": "SELECT id FROM t"},
        {"sql_prompt": "deep", "sql_context": "CREATE TABLE t (id INT);", "sql": deep},
        {
            "sql_prompt": "deep schema",
            "sql_context": "CREATE TABLE u (id INT CHECK ("
            + "(" * 100_000
            + "id > 0"
            + ")" * 100_000
            + "));",
            "sql": "SELECT id FROM u",
        },
    ]
    src = write_lines(tmp_path / "rows.jsonl", [json.dumps(r) for r in rows])
    summary, out, rejects = normalize(src, tmp_path)
    assert summary.rows_out == 1
    assert [(r["row"], r["step"]) for r in rejects] == [(2, "answer"), (3, "schema")]
    assert all("nested too deeply" in r["reason"] for r in rejects), rejects


def test_deeply_nested_sql_file_is_a_one_line_error(tmp_path):
    src = tmp_path / "deep.sql"
    src.write_text("CREATE TABLE t (id INT CHECK (" + "(" * 100_000 + "id > 0" + ")" * 100_000 + "));\n")
    result = CliRunner().invoke(cli, ["normalize", str(src)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {src}:1:1: "), lines
    assert "nested too deeply" in lines[0]


def test_unguarded_script_calling_normalize_dataset(tmp_path):
    write_lines(tmp_path / "rows.jsonl", [json.dumps(chat(i)) for i in range(40)])
    script = tmp_path / "clean.py"
    script.write_text(
        textwrap.dedent(
            """
            from hive_data.normalize_rows import normalize_dataset

            summary = normalize_dataset("rows.jsonl", "out.jsonl", num_proc=2, progress=False)
            print("rows out", summary.rows_out)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rows out 40" in proc.stdout
    assert "Traceback" not in proc.stderr and "guard" in proc.stderr
    assert len(list(iter_output(tmp_path / "out.jsonl"))) == 40


# --------------------------------------------------------------------------- pack


def test_50mb_row_is_dropped_as_overlong_in_bounded_memory(tmp_path):
    huge = chat(0)
    huge["messages"][0]["content"] = "word " * 10_000_000  # 50 MB of text, 10M+ tokens
    src = write_lines(tmp_path / "rows.jsonl", [json.dumps(chat(1)), json.dumps(huge), json.dumps(chat(2))])
    out = tmp_path / "shards"
    proc = run_limited(
        [
            "pack",
            str(src),
            "-o",
            str(out),
            "--tokenizer",
            str(TOKENIZER),
            "--seq",
            "256",
            "--num-proc",
            "1",
            "-q",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["rows_packed"] == 2
    assert manifest["totals"]["rows_dropped"] == {"overlong": 1}
    (reject,) = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert reject["row"] == 2 and reject["reason"] == "overlong" and reject["length"] > 256


def test_huge_seq_is_a_one_line_error(tmp_path):
    src = write_lines(tmp_path / "rows.jsonl", [json.dumps(chat(i)) for i in range(3)])
    proc = run_limited(
        [
            "pack",
            str(src),
            "-o",
            str(tmp_path / "shards"),
            "--tokenizer",
            str(TOKENIZER),
            "--seq",
            "300000000",
            "--num-proc",
            "1",
            "-q",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--seq 300000000" in lines[0], lines
    # the tokenizer's own limit (model_max_length 32768) bounds it too
    with pytest.raises(ConfigError, match="model_max_length 32768"):
        pack_dataset(
            src, tmp_path / "shards", tokenizer=str(TOKENIZER), seq=40_000, num_proc=1, progress=False
        )


def test_pack_warns_when_most_rows_are_overlong(tmp_path):
    long_rows = [chat(i) for i in range(7)]
    for row in long_rows:
        row["messages"][1]["content"] = " ".join(f"w{j}" for j in range(200))
    src = write_lines(
        tmp_path / "rows.jsonl", [json.dumps(r) for r in long_rows + [chat(i) for i in range(7, 10)]]
    )
    result = pack_dataset(
        src, tmp_path / "shards", tokenizer=str(TOKENIZER), seq=64, num_proc=1, progress=False
    )
    text = describe(result)
    assert result.manifest["totals"]["rows_dropped"] == {"overlong": 7}
    assert "warning: 7 of 10 rows (70%) were dropped as longer than --seq 64" in text
    assert "raise --seq" in text
    few = write_lines(
        tmp_path / "few.jsonl", [json.dumps(r) for r in long_rows[:2] + [chat(i) for i in range(7, 10)]]
    )
    result = pack_dataset(
        few, tmp_path / "shards2", tokenizer=str(TOKENIZER), seq=64, num_proc=1, progress=False
    )
    assert "warning" not in describe(result)


def test_parquet_output_rejects_rows_that_fit_no_column_type(tmp_path):
    import pyarrow.parquet as pq

    src = write_lines(
        tmp_path / "rows.jsonl",
        [
            json.dumps(chat(1, n=1)),
            json.dumps(chat(2, n=10**30)),  # beyond 64 bits
            json.dumps(chat(3, n="three")),  # a string where the rows before hold integers
            json.dumps(chat(4, n=2.5)),  # widens the column to double: kept
        ],
    )
    out, rej = tmp_path / "out.parquet", tmp_path / "rejects.jsonl"
    summary = normalize_dataset(src, out, rejects=rej, num_proc=1, progress=False)
    rejects = [json.loads(line) for line in rej.read_text().splitlines()]
    assert [(r["row"], r["step"]) for r in rejects] == [(2, "convert"), (3, "convert")]
    assert summary.rows_out == 2 and summary.rows_in == 4
    assert [r["n"] for r in pq.read_table(out).to_pylist()] == [1.0, 2.5]


def test_text_length_rule_never_drops_a_row_that_fits():
    """The overlong rule drops a row without tokenizing it when its rendered text has more than
    seq * bound characters; that is only right if no text has fewer than len(text) / bound tokens.
    Checked on the texts that pack the most characters into a token."""
    from hive_data.chat import chars_per_token_bound
    from hive_data.pack import load_tokenizer

    tok = load_tokenizer(str(TOKENIZER))
    bound = chars_per_token_bound(tok)
    assert bound is not None
    backend = tok.backend_tokenizer
    longest = max(tok.get_vocab(), key=len)
    texts = [
        backend.decoder.decode([longest]) * 50,  # the longest vocabulary entry, repeated
        "<|im_start|>" * 50 + "<|object_ref_start|>" * 50,  # special tokens, one token each
        "\u1100\u1161\u11a8" * 200,  # Hangul jamo that NFC composes three into one
        "\u03a9\u0314\u0342\u0345" * 200,  # four code points NFC composes into one
        " " * 5000,
        "a" * 5000,
    ]
    for text in texts:
        n = len(backend.encode(text, add_special_tokens=False).ids)
        assert n * bound >= len(text), (text[:20], n, bound)
