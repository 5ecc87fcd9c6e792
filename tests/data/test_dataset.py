"""`normalize_dataset`: canonical schemas, verified answers, rejects with reasons, dedup, outputs."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from hive_core.errors import ConfigError, RecordError
from hive_data.normalize_rows import iter_output, normalize_dataset, rejects_path
from hive_data.records import row_to_messages


@pytest.fixture
def ds(fixtures_dir):
    return fixtures_dir / "datasets"


def rejects_of(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def input_rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def check_accounting(summary):
    assert summary.rows_in == summary.rows_out + summary.rows_rejected + summary.duplicates


def test_gretel_rows_are_rewritten_in_place(ds, tmp_path, pg_uri):
    out = tmp_path / "clean.jsonl"
    s = normalize_dataset(ds / "gretel.jsonl", out, read="mysql", verify="explain", pg_uri=pg_uri, num_proc=1)
    check_accounting(s)
    assert (s.rows_in, s.rows_out, s.rows_rejected, s.duplicates) == (4, 4, 0, 0)
    assert s.schemas == 1 and s.formats == {"gretel": 4}
    assert s.dropped == {"INSERT": 2}  # the four rows share one context holding two INSERTs
    rows, original = list(iter_output(out)), input_rows(ds / "gretel.jsonl")
    for row, orig in zip(rows, original):
        assert list(row) == list(orig) + ["dialect"]  # same fields, same order, plus dialect
        assert (row["id"], row["domain"], row["sql_prompt"], row["sql_explanation"]) == (
            orig["id"],
            orig["domain"],
            orig["sql_prompt"],
            orig["sql_explanation"],
        )
        assert row["dialect"] == "postgres"
        assert row["sql_context"].startswith(
            "-- Dialect: postgres\n-- Table: customers\nCREATE TABLE customers ("
        )
        assert "INSERT" not in row["sql_context"] and "`" not in row["sql"]
    assert rows[0]["sql"] == "SELECT COUNT(*) FROM customers WHERE city = 'London'"
    assert (
        rows[2]["sql"]
        == "SELECT id, placed_at FROM orders ORDER BY placed_at DESC NULLS LAST LIMIT 2 OFFSET 1"
    )
    assert rows[3]["sql"].startswith("SELECT DISTINCT UPPER(c.name)")
    assert rejects_of(rejects_path(out)) == []
    # the rows feed the shared prompt layout directly
    msgs = row_to_messages(rows[0], "gretel")
    assert msgs[0]["content"].startswith(
        "You translate questions into PostgreSQL SQL. Answer with one SQL query and nothing else.\n\n-- Dialect: postgres"
    )


def test_keep_data_keeps_transpiled_inserts(ds, tmp_path, pg_uri):
    out = tmp_path / "clean.jsonl"
    s = normalize_dataset(
        ds / "gretel.jsonl", out, read="mysql", verify="explain", keep_data=True, pg_uri=pg_uri, num_proc=1
    )
    assert s.rows_out == 4 and not s.dropped.get("INSERT")
    context = next(iter_output(out))["sql_context"]
    tables_end = context.index("INSERT INTO")
    assert "CREATE TABLE orders" in context[:tables_end]  # data after all tables
    assert "INSERT INTO customers VALUES (1, 'Ada', 'London'), (2, 'Linus', 'Helsinki');" in context


def test_spider_with_schema_dir(ds, tmp_path, pg_uri):
    out = tmp_path / "spider.jsonl"
    s = normalize_dataset(
        ds / "spider.csv",
        out,
        schema_dir=ds / "databases",
        schema_key="database",
        read="mysql",
        verify="explain",
        pg_uri=pg_uri,
        num_proc=1,
    )
    check_accounting(s)
    assert (s.rows_out, s.schemas) == (4, 2)  # shop/schema.sql and school.sql
    rows = list(iter_output(out))
    assert [list(r) for r in rows] == [["database", "question", "sql", "schema", "dialect"]] * 4
    assert rows[0]["schema"].startswith("-- Dialect: postgres\n-- Table: product\n")
    assert "shop." not in rows[0]["schema"]  # one schema: qualifiers dropped
    assert rows[2]["schema"].startswith("-- Dialect: postgres\n-- Table: Student\n")
    assert rows[2]["sql"] == "SELECT MAX(Age) FROM Student"
    assert rows[3]["question"] == "List last names of students,\nyoungest first."


def test_broken_rows_land_in_rejects_with_reasons(ds, tmp_path, pg_uri):
    out = tmp_path / "clean.jsonl"
    s = normalize_dataset(ds / "broken.jsonl", out, read="mysql", verify="explain", pg_uri=pg_uri, num_proc=1)
    check_accounting(s)
    assert (s.rows_in, s.rows_out, s.rows_rejected, s.duplicates) == (10, 2, 7, 1)
    rej = {r["row"]: r for r in rejects_of(rejects_path(out))}
    assert sorted(rej) == [2, 3, 4, 5, 6, 7, 10]
    src = str(ds / "broken.jsonl")
    assert all(r["file"] == src and r["input_line"] == r["row"] for r in rej.values())

    # bad JSON: the raw line is kept, with the JSON error's column
    assert rej[2]["step"] == "read" and rej[2]["reason"].startswith("bad JSON")
    assert rej[2]["original"].startswith('{"sql_prompt": "bad json"') and rej[2]["line"] == 2
    # missing field
    assert rej[3]["step"] == "fields" and rej[3]["reason"] == "missing field 'sql' (gretel answer)"
    assert rej[3]["original"]["sql_prompt"] == "Where is the answer?"
    # a column that does not exist, found by PostgreSQL
    assert rej[4]["step"] == "explain" and rej[4]["reason"].startswith(
        'EXPLAIN: column "email" does not exist'
    )
    assert (rej[4]["line"], rej[4]["col"]) == (1, 8)
    # MySQL-only syntax: REPLACE INTO (unreadable) and ON DUPLICATE KEY UPDATE (no PostgreSQL form)
    assert rej[5]["step"] == "answer" and "unsupported REPLACE syntax" in rej[5]["reason"]
    assert rej[6]["step"] == "parse" and "does not parse as postgres" in rej[6]["reason"]
    assert "ON DUPLICATE KEY UPDATE has no postgres form" in rej[6]["reason"]
    # plain garbage, with line and column
    assert rej[7]["step"] == "answer" and rej[7]["line"] == 1 and rej[7]["col"] is not None
    # a byte that is not UTF-8
    assert rej[10]["step"] == "read" and rej[10]["reason"] == "not UTF-8: byte 0xe9 at column 20"
    # the rejects keep the original rows untouched
    originals = {
        i + 1: json.loads(line)
        for i, line in enumerate(open(src, encoding="utf-8", errors="replace"))
        if i + 1 in (3, 4, 5, 6, 7)
    }
    assert all(rej[n]["original"] == originals[n] for n in originals)
    assert [r["sql_prompt"] for r in iter_output(out)] == [
        "How many customers live in London?",
        "Total spent per customer name, biggest first.",
    ]


def test_parse_level_needs_no_database(ds, tmp_path):
    out = tmp_path / "clean.jsonl"
    s = normalize_dataset(ds / "broken.jsonl", out, read="mysql", verify="parse", num_proc=1)
    check_accounting(s)
    # the unknown column passes a parse check; everything else is still caught
    rej = {r["row"]: r["step"] for r in rejects_of(rejects_path(out))}
    assert rej == {2: "read", 3: "fields", 5: "answer", 6: "parse", 7: "answer", 10: "read"}
    assert s.rows_out == 3


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("messages.jsonl", "messages"),
        ("prompt_completion.jsonl", "prompt_completion"),
        ("alpaca.jsonl", "alpaca"),
        ("text_chatml.jsonl", "text"),
        ("text_legacy.jsonl", "text"),
    ],
)
def test_chat_rows_pass_through(ds, tmp_path, name, fmt):
    out = tmp_path / "clean.jsonl"
    s = normalize_dataset(ds / name, out, num_proc=1)
    assert s.formats == {fmt: s.rows_in} and s.rows_out == s.rows_in
    assert list(iter_output(out)) == input_rows(ds / name)


def test_chat_duplicates_and_bad_conversations(tmp_path):
    src = tmp_path / "chat.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    spaced = {"messages": [{"role": "user", "content": " hi "}, {"role": "assistant", "content": "hello"}]}
    bad = {"messages": [{"role": "user", "content": "hi"}]}
    src.write_text("".join(json.dumps(r) + "\n" for r in (good, spaced, bad, good)))
    out = tmp_path / "out.jsonl"
    s = normalize_dataset(src, out, num_proc=1)
    assert (s.rows_out, s.duplicates, s.rejected) == (1, 2, {"messages": 1})
    (rej,) = rejects_of(rejects_path(out))
    assert rej["row"] == 3 and rej["reason"] == "does not end with a non-empty assistant message"


def test_parquet_in_and_out(ds, tmp_path):
    out_jsonl, out_parquet = tmp_path / "a.jsonl", tmp_path / "b.parquet"
    normalize_dataset(ds / "gretel.jsonl", out_jsonl, read="mysql", num_proc=1)
    normalize_dataset(ds / "gretel.jsonl", out_parquet, read="mysql", num_proc=1)
    assert pq.read_table(out_parquet).to_pylist() == list(iter_output(out_jsonl))
    assert rejects_path(out_parquet).name == "b.parquet.rejects.jsonl"
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    # parquet as input, normalized again: canonical output is a fixed point
    again = tmp_path / "c.jsonl"
    s = normalize_dataset(out_parquet, again, read="postgres", num_proc=1)
    assert s.rows_out == 4
    assert list(iter_output(again)) == list(iter_output(out_jsonl))


def test_output_does_not_depend_on_num_proc(ds, tmp_path):
    src = tmp_path / "mixed.jsonl"
    lines = (ds / "broken.jsonl").read_bytes() + (ds / "gretel.jsonl").read_bytes()
    src.write_bytes(lines * 5)
    outs = []
    for procs in (1, 2):
        out = tmp_path / f"out{procs}.jsonl"
        s = normalize_dataset(src, out, read="mysql", num_proc=procs, batch_size=3)
        check_accounting(s)
        outs.append((out.read_bytes(), rejects_path(out).read_bytes(), s.rows_out, s.duplicates, s.rejected))
    assert outs[0] == outs[1]


def test_strict_and_bad_sources(ds, tmp_path):
    out = tmp_path / "clean.jsonl"
    with pytest.raises(RecordError, match=r"6 rows rejected \(--strict\)"):
        normalize_dataset(ds / "broken.jsonl", out, read="mysql", strict=True, num_proc=1)
    assert out.exists() and len(rejects_of(rejects_path(out))) == 6  # written before the error
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(RecordError, match="empty input"):
        normalize_dataset(empty, tmp_path / "x.jsonl", num_proc=1)
    assert not (tmp_path / "x.jsonl").exists()
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"a": 1}\n')
    with pytest.raises(RecordError, match="unknown record format") as err:
        normalize_dataset(unknown, tmp_path / "y.jsonl", num_proc=1)
    assert str(err.value).startswith(f"{unknown}:1: row 1: unknown record format")
    assert not (tmp_path / "y.jsonl").exists() and not (tmp_path / "y.jsonl.rejects.jsonl").exists()
    with pytest.raises(ConfigError, match="must end in .jsonl or .parquet"):
        normalize_dataset(ds / "gretel.jsonl", tmp_path / "out.csv")
    with pytest.raises(ConfigError, match="--read: unknown SQL dialect 'mysqll'"):
        normalize_dataset(ds / "gretel.jsonl", out, read="mysqll")
    with pytest.raises(ConfigError, match="needs --dialect postgres"):
        normalize_dataset(ds / "gretel.jsonl", out, verify="explain", dialect="mysql")


def test_schema_dir_problems(ds, tmp_path):
    src = tmp_path / "q.csv"
    src.write_text(
        "db_id,question,sql\nnowhere,Q?,SELECT 1\n../shop,Q2?,SELECT 1\nshop,Q3?,SELECT title FROM product\n"
    )
    out = tmp_path / "out.jsonl"
    s = normalize_dataset(src, out, schema_dir=ds / "databases", read="mysql", num_proc=1)
    rej = rejects_of(rejects_path(out))
    assert [(r["row"], r["step"]) for r in rej] == [(1, "schema"), (2, "schema")]
    assert rej[0]["reason"].startswith("no schema for 'nowhere'")
    assert "not a plain name" in rej[1]["reason"]
    assert s.rows_out == 1
