"""Record readers: every format from its fixture, detection, overrides, bad input, chat text round trips."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hive_core.errors import ConfigError, RecordError
from hive_data.prompt import sql_messages
from hive_data.records import (
    detect_format,
    iter_hub,
    iter_records,
    parse_chat_text,
    parse_mapping,
    render_chat_text,
    row_to_messages,
)


@pytest.fixture
def ds(fixtures_dir):
    return fixtures_dir / "datasets"


def read_all(src, **kw):
    return list(iter_records(src, **kw))


# ---------------------------------------------------------------- one fixture per format


def test_gretel(ds):
    recs = read_all(ds / "gretel.jsonl")
    assert [r.row for r in recs] == [1, 2, 3, 4] and [r.line for r in recs] == [1, 2, 3, 4]
    assert {r.fmt for r in recs} == {"gretel"}
    msgs = row_to_messages(recs[0].data, "gretel", dialect="mysql")
    data = recs[0].data
    assert msgs == sql_messages(data["sql_prompt"], data["sql_context"], "mysql", data["sql"])
    assert msgs[0]["content"].startswith("You translate questions into MySQL SQL.")
    assert "CREATE TABLE `customers`" in msgs[0]["content"]


def test_create_context_json_list(ds):
    recs = read_all(ds / "create_context.json")
    assert len(recs) == 3 and {r.fmt for r in recs} == {"create_context"}
    msgs = row_to_messages(recs[1].data, "create_context")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[1]["content"] == "List the name and born state of all heads, ordered by age."
    assert msgs[2]["content"] == "SELECT name, born_state FROM head ORDER BY age"


def test_spider_csv_with_multiline_field(ds):
    recs = read_all(ds / "spider.csv")
    assert {r.fmt for r in recs} == {"spider"}
    assert [r.row for r in recs] == [1, 2, 3, 4]
    # the header is line 1; the fourth row's question spans two lines
    assert [r.line for r in recs] == [2, 3, 4, 5]
    assert recs[3].data["question"] == "List last names of students,\nyoungest first."
    # Spider rows carry no schema until normalize attaches one; the dialect header then wins
    row = dict(
        recs[0].data, schema="-- Dialect: sqlite\n-- Table: product\nCREATE TABLE product (\n  x INTEGER\n);"
    )
    msgs = row_to_messages(row, "spider")
    assert msgs[0]["content"].startswith("You translate questions into SQLite SQL.")
    assert msgs[0]["content"].endswith(");")


def test_messages_and_sharegpt(ds):
    recs = read_all(ds / "messages.jsonl")
    assert {r.fmt for r in recs} == {"messages"}
    first = row_to_messages(recs[0].data, "messages")
    assert first == recs[0].data["messages"]
    assert row_to_messages(recs[2].data, "messages") == [
        {"role": "user", "content": "TypeScript type for a point?"},
        {"role": "assistant", "content": "type Point = { x: number; y: number };"},
    ]


def test_prompt_completion_strings_and_lists(ds):
    recs = read_all(ds / "prompt_completion.jsonl")
    assert {r.fmt for r in recs} == {"prompt_completion"}
    assert row_to_messages(recs[0].data, "prompt_completion") == [
        {"role": "user", "content": "Return the Cypher to count Movie nodes."},
        {"role": "assistant", "content": "MATCH (m:Movie) RETURN count(m)"},
    ]
    assert [m["role"] for m in row_to_messages(recs[1].data, "prompt_completion")] == [
        "system",
        "user",
        "assistant",
    ]


def test_alpaca_output_and_response(ds):
    recs = read_all(ds / "alpaca.jsonl")
    assert {r.fmt for r in recs} == {"alpaca"}
    msgs = row_to_messages(recs[0].data, "alpaca")
    assert msgs[0] == {
        "role": "user",
        "content": 'Convert to a TypeScript interface.\n\n{"id": 1, "name": "x"}',
    }
    assert row_to_messages(recs[1].data, "alpaca")[0]["content"] == "Say hello in JSON."
    (resp,) = read_all(ds / "alpaca_response.jsonl")
    assert resp.fmt == "alpaca"
    assert row_to_messages(resp.data, "alpaca")[-1]["content"].startswith("MATCH (m:Movie)")


@pytest.mark.parametrize("name", ["text_chatml.jsonl", "text_legacy.jsonl"])
def test_text_rows_parse_into_the_original_conversations(ds, name):
    conversations = json.loads((ds / "conversations.json").read_text())
    recs = read_all(ds / name)
    assert {r.fmt for r in recs} == {"text"}
    assert [row_to_messages(r.data, "text") for r in recs] == conversations


@pytest.mark.parametrize("style", ["chatml", "legacy"])
def test_chat_text_round_trip(ds, style):
    for conv in json.loads((ds / "conversations.json").read_text()):
        text = render_chat_text(conv, style)
        assert parse_chat_text(text) == conv
        # Qwen's template ends documents with <|endoftext|> in some exports; it is not content
        assert parse_chat_text(text + "<|endoftext|>") == conv
    # both styles give the same messages
    conv = json.loads((ds / "conversations.json").read_text())[0]
    assert parse_chat_text(render_chat_text(conv, "chatml")) == parse_chat_text(
        render_chat_text(conv, "legacy")
    )


def test_chat_text_errors():
    with pytest.raises(RecordError, match="neither"):
        parse_chat_text("just some prose")
    with pytest.raises(RecordError, match="unterminated"):
        parse_chat_text("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nno end")
    with pytest.raises(RecordError, match="stray text"):
        parse_chat_text("junk<|user|>\nhi<|end|>")
    with pytest.raises(RecordError, match="assistant"):
        row_to_messages({"text": "<|user|>\nonly a question<|end|>"}, "text")


# ---------------------------------------------------------------- detection and overrides


@pytest.mark.parametrize(
    "columns, fmt",
    [
        (["sql_prompt", "sql_context", "sql", "sql_explanation", "id"], "gretel"),
        (["question", "context", "answer"], "create_context"),
        (["question", "sql", "db_id"], "spider"),
        (["database", "question", "sql"], "spider"),
        (["question", "query", "db_id"], "spider"),
        (["messages"], "messages"),
        (["conversations"], "messages"),
        (["prompt", "completion"], "prompt_completion"),
        (["instruction", "input", "output"], "alpaca"),
        (["instruction", "response"], "alpaca"),
        (["text", "meta"], "text"),
    ],
)
def test_detect_format(columns, fmt):
    assert detect_format(columns) == fmt


def test_detect_unknown_format_names_columns():
    with pytest.raises(RecordError, match=r"unknown record format: columns \['a', 'b'\]"):
        detect_format(["a", "b"])


def test_map_and_format_overrides(tmp_path):
    src = tmp_path / "odd.jsonl"
    src.write_text(
        json.dumps({"q": "How many?", "ddl": "CREATE TABLE t (a INT)", "gold": "SELECT COUNT(*) FROM t"})
    )
    with pytest.raises(RecordError, match="unknown record format"):
        read_all(src)
    mapping = "question=q, schema=ddl, answer=gold"
    (rec,) = read_all(src, mapping=mapping)
    assert rec.fmt == "gretel"  # first text-to-SQL shape whose fields the mapping satisfies
    (rec,) = read_all(src, fmt="create_context", mapping=mapping)
    assert rec.fmt == "create_context"
    msgs = row_to_messages(rec.data, "create_context", parse_mapping(mapping))
    assert msgs[1:] == [
        {"role": "user", "content": "How many?"},
        {"role": "assistant", "content": "SELECT COUNT(*) FROM t"},
    ]
    with pytest.raises(ConfigError, match="no field bogus"):
        read_all(src, fmt="gretel", mapping="bogus=q")
    with pytest.raises(ConfigError, match="field=column"):
        parse_mapping("question")
    with pytest.raises(ConfigError, match="unknown format"):
        read_all(src, fmt="nope")


# ---------------------------------------------------------------- sources and bad input


def test_parquet_and_directory_sources(ds, tmp_path):
    rows = [json.loads(line) for line in (ds / "gretel.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "part-0.parquet")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "part-1.jsonl").write_text((ds / "gretel.jsonl").read_text())
    (tmp_path / "notes.txt").write_text("ignored")
    recs = read_all(tmp_path)
    assert [r.source for r in recs] == [str(tmp_path / "part-0.parquet")] * 4 + [
        str(tmp_path / "sub/part-1.jsonl")
    ] * 4
    assert [r.data for r in recs[:4]] == rows == [r.data for r in recs[4:]]


def test_hub_loader_with_a_local_dataset(ds, tmp_path):
    # hub ids go through datasets.load_dataset(name, config, split=..., streaming=True); it takes a local
    # directory the same way, so this exercises the code path used for org/name ids
    (tmp_path / "train.jsonl").write_text((ds / "gretel.jsonl").read_text())
    recs = list(iter_hub(str(tmp_path), split="train"))
    assert [r.row for r in recs] == [1, 2, 3, 4]
    assert recs[0].data["sql_prompt"] == "How many customers live in London?"
    with pytest.raises(RecordError, match="cannot load dataset"):
        list(iter_hub(str(tmp_path), split="validation"))


def test_unreadable_rows_carry_errors(ds):
    recs = read_all(ds / "broken.jsonl")
    bad = {r.row: r for r in recs if r.error}
    assert set(bad) == {2, 10}
    assert (
        bad[2].error.line == 2
        and "bad JSON" in bad[2].error.reason
        and bad[2].raw.startswith('{"sql_prompt": "bad json"')
    )
    assert bad[10].error.reason == "not UTF-8: byte 0xe9 at column 20"
    assert str(bad[10].error).startswith(f"{ds / 'broken.jsonl'}:10:20: row 10:")
    with pytest.raises(RecordError, match="missing field 'sql'"):
        row_to_messages(recs[2].data, "gretel")


def test_bad_sources(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(RecordError, match="empty input") as err:
        read_all(tmp_path / "empty.jsonl")
    assert err.value.file == str(tmp_path / "empty.jsonl")
    with pytest.raises(RecordError, match="no such file"):
        read_all(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(RecordError, match="unsupported file type"):
        read_all(tmp_path / "x.txt")
    (tmp_path / "bad.json").write_text('[{"text": 1},\n {"text": ]')
    with pytest.raises(RecordError, match="bad JSON") as err:
        read_all(tmp_path / "bad.json")
    assert (err.value.line, err.value.col) == (2, 11)
    (tmp_path / "short.csv").write_text("question,sql,db_id\nq,SELECT 1\n")
    (rec,) = read_all(tmp_path / "short.csv")
    assert rec.error.reason == "expected 3 fields, got 2" and rec.error.line == 2
    (tmp_path / "arr.jsonl").write_text('{"text": "<|user|>\\nhi<|end|>"}\n[1, 2]\n')
    recs = read_all(tmp_path / "arr.jsonl")
    assert recs[1].error.reason == "row is a JSON list, expected an object"


def test_bad_csv_byte_rejects_only_its_row(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b"question,sql,db_id\nok,SELECT 1,a\nbad \xff,SELECT 2,a\nfine,SELECT 3,a\n")
    recs = read_all(path)
    assert [bool(r.error) for r in recs] == [False, True, False]
    assert recs[1].error.reason == "not UTF-8: bad byte in the row" and recs[1].line == 3


def test_missing_and_malformed_messages():
    with pytest.raises(RecordError, match="unknown role 'robot'"):
        row_to_messages({"messages": [{"role": "robot", "content": "x"}]}, "messages")
    with pytest.raises(RecordError, match="no user message"):
        row_to_messages({"messages": [{"role": "assistant", "content": "x"}]}, "messages")
    with pytest.raises(RecordError, match="empty field 'output'"):
        row_to_messages({"instruction": "x", "output": "  "}, "alpaca")
    # messages stored as a JSON string (common in parquet/csv exports)
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert row_to_messages({"messages": json.dumps(msgs)}, "messages") == msgs


def test_mapping_given_as_text_to_row_to_messages():
    row = {"q": "How many?", "gold": "SELECT 1"}
    msgs = row_to_messages(row, "spider", "question=q,answer=gold")
    assert msgs[1:] == [
        {"role": "user", "content": "How many?"},
        {"role": "assistant", "content": "SELECT 1"},
    ]


def test_hub_ids():
    from hive_data.records import parse_hub_id

    assert parse_hub_id("gretelai/synthetic_text_to_sql") == ("gretelai/synthetic_text_to_sql", None, None)
    assert parse_hub_id("b-mc2/sql-create-context:train") == ("b-mc2/sql-create-context", "train", None)
    assert parse_hub_id("org/name:validation:en") == ("org/name", "validation", "en")
    assert parse_hub_id("org/name::en") == ("org/name", None, "en")
    with pytest.raises(RecordError, match="no such file or directory, and not a hub id"):
        read_all("not a/hub id here")


def test_messages_survive_a_parquet_round_trip(ds, tmp_path):
    rows = [json.loads(line) for line in (ds / "messages.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")  # structs gain null from/value keys
    got = [row_to_messages(r.data, r.fmt) for r in read_all(tmp_path / "m.parquet")]
    assert got == [row_to_messages(r, "messages") for r in rows]
