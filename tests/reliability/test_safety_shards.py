"""Damaged and hand-made shards (issue 13: anything user-supplied is hostile until checked).

A shard directory is packed once with `hive-data pack`; each test writes one damaged variant with
pyarrow, keeping the manifest's bytes and sha256 (and, unless the lie is the point, its row, token
and loss-token counts) consistent, so that only the row checks of `hive_data.shards.open_shards` can
catch it. Both `hive-data inspect` and `hive-train` must refuse with one line naming the shard file
and the row (1-based within that file), and `hive-train` must refuse before the model loads: the run
directory, created just before the model is loaded, must not exist.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from train_helpers import conversations

from hive_core.errors import ShardError
from hive_data.cli import main as hive_data_cli
from hive_data.pack import pack_dataset
from hive_data.shards import SCHEMA, open_shards, sha256_file
from hive_train.cli import main as hive_train_cli

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "fixtures" / "tokenizer"
TINY_MODEL = ROOT / "fixtures" / "tiny-qwen3"
SEQ = 128
VOCAB = 4096  # the fixture tokenizer's and the tiny model's
ROW = 2  # the damaged row (0-based); messages say "row 3"
TRAIN_ARGS = [
    "--model", str(TINY_MODEL), "--tokenizer", str(TOKENIZER), "--device", "cpu",
    "--batch-size", "2", "--grad-accum", "1", "--max-steps", "1", "-q",
]  # fmt: skip


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("packed")
    src = base / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in conversations(120)))
    out = base / "shards"
    pack_dataset(
        src, out, tokenizer=str(TOKENIZER), seq=SEQ, shard_tokens=2000, val=0.1, num_proc=1, progress=False
    )
    return out


@pytest.fixture
def shards(packed, tmp_path) -> Path:
    copy = tmp_path / "shards"
    shutil.copytree(packed, copy)
    return copy


def manifest(shards: Path) -> dict:
    return json.loads((shards / "manifest.json").read_text())


def write_manifest(shards: Path, data: dict) -> None:
    (shards / "manifest.json").write_text(json.dumps(data, indent=2))


def first_shard(shards: Path) -> Path:
    return shards / manifest(shards)["shards"][0]["file"]


def rewrite_shard(shards: Path, edit, schema: pa.Schema = SCHEMA, table: pa.Table | None = None) -> Path:
    """Rewrite the first shard: `edit(rows)` changes its rows (dicts of lists) in place, or `table`
    replaces it. The manifest entry is made to agree (rows, tokens, loss tokens, bytes, sha256)."""
    path = first_shard(shards)
    if table is None:
        rows = pa.ipc.open_stream(path.read_bytes()).read_all().to_pylist()
        edit(rows)
        table = pa.Table.from_pylist(rows, schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data = manifest(shards)
    ids = [x for row in table.column(0).to_pylist() if row for x in row if x is not None]
    mask = [x for row in table.column(2).to_pylist() if row for x in row if x is not None]
    data["shards"][0].update(
        rows=table.num_rows,
        tokens=len(ids),
        loss_tokens=int(sum(mask)),
        bytes=path.stat().st_size,
        sha256=sha256_file(path),
    )
    write_manifest(shards, data)
    return path


def inspect(shards: Path) -> tuple[int, str]:
    res = CliRunner().invoke(hive_data_cli, ["inspect", str(shards), "--verify", "sha256"])
    return res.exit_code, res.output


def train(shards: Path, out: Path) -> tuple[int, str]:
    res = CliRunner().invoke(hive_train_cli, [str(shards), "-o", str(out), *TRAIN_ARGS])
    return res.exit_code, res.stderr


def assert_refused(shards: Path, tmp_path: Path, *fragments: str) -> None:
    """inspect and hive-train (default --verify sha256) both refuse on one line holding `fragments`;
    hive-train before the model loads."""
    code, out = inspect(shards)
    assert code == 1, out
    assert out.startswith("error: ") and out.count("\n") == 1, out
    assert all(f in out for f in fragments), (fragments, out)
    run = tmp_path / "run"
    code, err = train(shards, run)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(f in lines[0] for f in fragments), (fragments, lines[0])
    assert not run.exists()  # refused before the run directory, hence before the model


def test_intact_shards_are_accepted(shards):
    opened = open_shards(shards, verify="sha256")
    assert opened.split("train").num_rows > ROW
    code, out = inspect(shards)
    assert code == 0, out


def set_token(row: int, position: int, column: str, value: int):
    def edit(rows):
        rows[row][column][position] = value

    return edit


def merge_rows(rows):  # rows 2 and 3 as one row: longer than seq, documents and mask intact
    a, b = rows[ROW], rows.pop(ROW + 1)
    for key in a:
        a[key] = a[key] + b[key]


def zero_document(rows):  # an empty document among real ones: the lengths still add up
    rows[ROW]["seq_lengths"].append(0)


def lengths_off_by_one(rows):
    rows[ROW]["seq_lengths"][-1] += 1


def short_mask(rows):
    rows[ROW]["completion_mask"].pop()


def empty_row(rows):
    rows[ROW] = {"input_ids": [], "seq_lengths": [], "completion_mask": []}


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (set_token(ROW, 5, "completion_mask", 2), ("completion_mask holds 2",)),
        (set_token(ROW, 5, "completion_mask", -1), ("completion_mask holds -1",)),
        (set_token(ROW, 3, "input_ids", VOCAB), (f"token id {VOCAB}",)),
        (set_token(ROW, 3, "input_ids", -7), ("token id -7",)),
        (set_token(ROW, 3, "input_ids", 2**31 - 1), (f"token id {2**31 - 1}",)),
        (merge_rows, (f"seq {SEQ}",)),
        (zero_document, ("seq_lengths holds 0",)),
        (lengths_off_by_one, ("seq_lengths sum to",)),
        (short_mask, ("completion_mask has",)),
        (empty_row, ("no tokens",)),
    ],
    ids=[
        "mask-2",
        "mask-negative",
        "id-at-vocab",
        "id-negative",
        "id-huge",
        "row-longer-than-seq",
        "zero-seq-length",
        "seq-lengths-wrong-sum",
        "mask-shorter-than-ids",
        "empty-row",
    ],
)
def test_damaged_row_is_refused_naming_file_and_row(shards, tmp_path, edit, words):
    path = rewrite_shard(shards, edit)
    assert_refused(shards, tmp_path, str(path), f"row {ROW + 1}:", *words)


def test_null_row_is_refused(shards, tmp_path):
    table = pa.ipc.open_stream(first_shard(shards).read_bytes()).read_all()
    ids = table.column("input_ids").to_pylist()
    ids[ROW] = None
    columns = [pa.array(ids, pa.list_(pa.int32())), table.column(1), table.column(2)]
    path = rewrite_shard(shards, None, table=pa.Table.from_arrays(columns, schema=SCHEMA))
    assert_refused(shards, tmp_path, str(path), f"row {ROW + 1}:", "null")


def test_manifest_seq_smaller_than_the_rows_is_refused(shards, tmp_path):
    table = pa.ipc.open_stream(first_shard(shards).read_bytes()).read_all()
    lengths = np.diff(table.column("input_ids").combine_chunks().offsets.to_numpy())
    data = manifest(shards)
    data["seq"] = int(lengths.max()) - 1
    write_manifest(shards, data)
    row = int(np.flatnonzero(lengths > data["seq"])[0]) + 1
    assert_refused(shards, tmp_path, str(first_shard(shards)), f"row {row}:", f"seq {data['seq']}")


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        (
            pa.schema([*SCHEMA][:2] + [pa.field("completion_mask", pa.list_(pa.int32()), nullable=False)]),
            ("completion_mask: list<item: int32>",),
        ),
        (
            pa.schema([pa.field("input_ids", pa.list_(pa.int64()), nullable=False), *[*SCHEMA][1:]]),
            ("input_ids: list<item: int64>",),
        ),
        (pa.schema([f.with_nullable(True) for f in SCHEMA]), ("input_ids: list<item: int32>,", "not null")),
    ],
    ids=["mask-int32", "ids-int64", "nullable"],
)
def test_wrong_column_types_are_refused_naming_them(shards, tmp_path, schema, words):
    path = rewrite_shard(shards, lambda rows: None, schema=schema)
    assert_refused(shards, tmp_path, str(path), *words)


def test_manifest_that_lies_about_loss_tokens_is_refused(shards, tmp_path):
    data = manifest(shards)
    data["shards"][0]["loss_tokens"] += 1
    write_manifest(shards, data)
    assert_refused(shards, tmp_path, str(first_shard(shards)), "loss tokens")


def empty_shard(shards: Path) -> None:
    rewrite_shard(shards, lambda rows: rows.clear())


@pytest.mark.parametrize(
    ("lie", "words"),
    [
        ("seq-huge", ("seq",)),
        ("tokenizer-not-an-object", ("tokenizer",)),
        ("no-vocab-size", ("vocab_size",)),
        ("vocab-size-a-string", ("vocab_size",)),
        ("pad-id-a-string", ("pad_id",)),
        ("tokenizer-name-not-a-string", ("name_or_path",)),
        ("no-loss-tokens", ("loss_tokens",)),
        ("negative-loss-tokens", ("negative",)),
    ],
)
def test_manifest_fields_a_reader_relies_on_are_checked(shards, tmp_path, lie, words):
    data = manifest(shards)
    tok, entry = data["tokenizer"], data["shards"][0]
    if lie == "seq-huge":
        data["seq"] = 10**12
    elif lie == "tokenizer-not-an-object":
        data["tokenizer"] = str(TOKENIZER)
    elif lie == "no-vocab-size":
        del tok["vocab_size"]
    elif lie == "vocab-size-a-string":
        tok["vocab_size"] = "4096"
    elif lie == "pad-id-a-string":
        tok["pad_id"] = "<|endoftext|>"
    elif lie == "tokenizer-name-not-a-string":  # hive-train opened it as a path: an internal error
        tok["name_or_path"] = 7
    elif lie == "no-loss-tokens":
        del entry["loss_tokens"]
    elif lie == "negative-loss-tokens":
        entry["loss_tokens"] = -1
    write_manifest(shards, data)
    assert_refused(shards, tmp_path, str(shards / "manifest.json"), *words)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(totals={"rows": 1, "tokens": 2}),
        lambda m: m.update(totals="many"),
        lambda m: m.update(inputs=["rows.jsonl"]),
        lambda m: m["totals"].update(length_histogram={"edges": [0, 8], "counts": "x"}),
        lambda m: m["totals"].update(fill_efficiency="full"),
    ],
    ids=["totals-partial", "totals-a-string", "inputs-strings", "histogram-odd", "fill-a-string"],
)
def test_inspect_describes_a_manifest_whose_totals_are_not_hives(shards, edit):
    """Totals and inputs only inform (no reader relies on them): inspect still summarizes the shards."""
    data = manifest(shards)
    edit(data)
    write_manifest(shards, data)
    code, out = inspect(shards)
    assert code == 0, out
    assert "not in hive's layout" in out or "no histogram" in out, out
    assert f"shard         {data['shards'][0]['file']}:" in out, out


def test_shard_without_rows_is_refused(shards, tmp_path):
    empty_shard(shards)
    assert_refused(shards, tmp_path, str(first_shard(shards)), "no rows")


@pytest.mark.parametrize("per_batch", [4, 600])  # small batches are checked together, large ones alone
def test_check_rows_counts_rows_across_the_record_batches_of_a_file(per_batch):
    """Row numbers count across the record batches of one file (pack writes many per shard)."""
    from hive_data.shards import check_rows

    good = {"input_ids": [5, 6, 7], "seq_lengths": [2, 1], "completion_mask": [0, 1, 1]}
    bad = {"input_ids": [5, 6, 7], "seq_lengths": [2, 1], "completion_mask": [0, 3, 1]}
    batches = [pa.RecordBatch.from_pylist([good] * per_batch, schema=SCHEMA)] * 2
    batches.append(pa.RecordBatch.from_pylist([good, bad], schema=SCHEMA))
    table = pa.Table.from_batches(batches)
    with pytest.raises(ShardError) as err:
        check_rows(table, file="x.arrow", seq=8, vocab_size=10)
    assert (err.value.file, err.value.row) == ("x.arrow", 2 * per_batch + 2), err.value
    good_rows = 2 * per_batch + 1
    assert check_rows(table.slice(0, good_rows), file="x.arrow", seq=8, vocab_size=10) == (
        3 * good_rows,
        2 * good_rows,
    )


def test_check_rows_refuses_null_tokens_and_malformed_offsets():
    from hive_data.shards import check_rows

    ids = pa.array([[5, 6], [7, None]], pa.list_(pa.int32()))  # a null inside row 2, not a null row
    docs = pa.array([[2], [2]], pa.list_(pa.int32()))
    mask = pa.array([[0, 1], [0, 1]], pa.list_(pa.int8()))
    table = pa.Table.from_arrays([ids, docs, mask], schema=SCHEMA)
    with pytest.raises(ShardError, match="input_ids holds a null") as err:
        check_rows(table, file="x.arrow", seq=8, vocab_size=10)
    assert err.value.row == 2
    offsets = pa.py_buffer(np.array([0, 2, 1], np.int32).tobytes())  # row 2 ends before it starts
    values = pa.array([5, 6, 7], pa.int32())
    backwards = pa.ListArray.from_buffers(pa.list_(pa.int32()), 2, [None, offsets], children=[values])
    table = pa.Table.from_arrays([backwards, docs, mask], schema=SCHEMA)
    with pytest.raises(ShardError, match="malformed Arrow data"):
        check_rows(table, file="x.arrow", seq=8, vocab_size=10)
