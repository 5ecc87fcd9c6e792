"""Issue 13: commands never destroy what they did not write.

Every test goes through the real CLI and checks the one-line error, the exit status and that the
user's files are intact byte for byte: output directories carry hive's `.hive-owned` marker and only
such a directory (or an empty one, or one an older hive wrote) is replaced or deleted; an output is
never an input, never inside one, never holds one; rejects never land on the input or the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_helpers import TINY_MODEL, TOKENIZER, write_shards

from hive_core.errors import ConfigError
from hive_data.cli import main as hive_data

DATASETS = Path(__file__).resolve().parents[2] / "fixtures" / "datasets"
SQL = "CREATE TABLE `t` (`id` INT(11) NOT NULL, PRIMARY KEY (`id`)) ENGINE=InnoDB;\n"
TRAIN = [
    "--model", str(TINY_MODEL), "--tokenizer", str(TOKENIZER), "--batch-size", "2", "--grad-accum", "1",
    "-q", "--max-steps", "1", "--eval-every", "0", "--save-every", "0",
]  # fmt: skip
MARKER = ".hive-owned"  # what every output directory hive makes carries (JSON: its kind)
PACK = ["--tokenizer", str(TOKENIZER), "--seq", "256", "--val", "0", "--num-proc", "1", "-q"]


def read_marker(directory: Path) -> str | None:
    path = Path(directory) / MARKER
    return json.loads(path.read_text())["kind"] if path.is_file() else None


def snapshot(path: Path) -> dict[str, str]:
    """sha256 of every file under `path` (or of `path` itself), by relative name."""
    path = Path(path)
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def invoke(cli, *args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def hive(*args):
    return invoke(hive_data, *args)


def train(*args):
    from hive_train.cli import main

    return invoke(main, *args)


def one_line_error(result, *fragments) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert "Traceback" not in result.output
    return errors[0]


@pytest.fixture
def gretel(tmp_path) -> Path:
    src = tmp_path / "data" / "gretel.jsonl"
    src.parent.mkdir()
    shutil.copy(DATASETS / "gretel.jsonl", src)
    return src


@pytest.fixture
def chats(tmp_path) -> Path:
    """A small chat dataset for pack: 12 distinct conversations."""
    src = tmp_path / "chats" / "chats.jsonl"
    src.parent.mkdir()
    rows = [
        {"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"{i} " * 3}]}
        for i in range(12)
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


def normalize(src, out, *extra):
    return hive("normalize", src, "-o", out, "--read", "mysql", "--num-proc", "1", *extra)


# ---------------------------------------------------------------------------------------- normalize


def test_normalize_output_is_the_input(gretel):
    before = snapshot(gretel)
    one_line_error(normalize(gretel, gretel), f"{gretel}: output is the input")
    assert snapshot(gretel) == before


def test_normalize_output_is_the_input_through_a_symlink(gretel, tmp_path):
    alias = tmp_path / "alias.jsonl"
    alias.symlink_to(gretel)
    before = snapshot(gretel)
    one_line_error(normalize(gretel, alias), "output is the input")
    assert snapshot(gretel) == before and alias.is_symlink()


def test_normalize_output_inside_the_input_directory(gretel):
    before = snapshot(gretel.parent)
    out = gretel.parent / "clean.jsonl"
    one_line_error(normalize(gretel.parent, out), "inside the input")
    assert snapshot(gretel.parent) == before and not out.exists()


def test_normalize_rejects_is_the_input(gretel, tmp_path):
    before = snapshot(gretel)
    out = tmp_path / "clean.jsonl"
    one_line_error(normalize(gretel, out, "--rejects", gretel), "rejects file is the input")
    assert snapshot(gretel) == before and not out.exists()


def test_normalize_rejects_is_the_output(gretel, tmp_path):
    out = tmp_path / "clean.jsonl"
    out.write_text("my earlier output\n")
    one_line_error(normalize(gretel, out, "--rejects", out), "rejects file is the output")
    assert out.read_text() == "my earlier output\n"


def test_jsonl_and_parquet_outputs_have_their_own_rejects(tmp_path):
    src = tmp_path / "broken.jsonl"
    shutil.copy(DATASETS / "broken.jsonl", src)
    assert normalize(src, tmp_path / "x.jsonl").exit_code == 0
    first = (tmp_path / "x.jsonl.rejects.jsonl").read_bytes()
    assert first.count(b"\n") == 6
    assert normalize(src, tmp_path / "x.parquet").exit_code == 0
    assert (tmp_path / "x.jsonl.rejects.jsonl").read_bytes() == first  # not overwritten
    assert (tmp_path / "x.parquet.rejects.jsonl").read_bytes().count(b"\n") == 6


def test_normalize_every_row_rejected_warns_and_fails(gretel, tmp_path):
    out = tmp_path / "clean.jsonl"
    out.write_text("an earlier good output\n")
    result = normalize(gretel, out, "--format", "messages")
    one_line_error(result, "every row was rejected", "nothing written", "--format")
    assert "warning: every row was rejected" in result.stderr
    assert out.read_text() == "an earlier good output\n"  # kept
    assert len((tmp_path / "clean.jsonl.rejects.jsonl").read_text().splitlines()) == 4


def test_verify_explain_without_sql_rows_warns(tmp_path):
    result = hive(
        "normalize", DATASETS / "messages.jsonl", "-o", tmp_path / "m.jsonl", "--verify", "explain", "--num-proc", "1"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: --verify explain checked nothing: no row holds an SQL answer" in result.stderr


def test_normalize_sql_file_onto_itself(tmp_path):
    schema = tmp_path / "schema.sql"
    schema.write_text(SQL)
    one_line_error(hive("normalize", schema, "-o", schema), "output is the input")
    assert schema.read_text() == SQL


def test_normalize_sql_directory_onto_itself_or_inside_it(tmp_path):
    sql = tmp_path / "sql"
    (sql / "sub").mkdir(parents=True)
    (sql / "a.sql").write_text(SQL)
    (sql / "sub" / "b.sql").write_text(SQL)
    before = snapshot(sql)
    one_line_error(hive("normalize", sql, "-o", sql), "output directory is the input")
    one_line_error(hive("normalize", sql, "-o", sql / "out"), "inside the input")
    one_line_error(hive("normalize", sql / "sub", "-o", sql), "is inside this output directory")
    assert snapshot(sql) == before and not (sql / "out").exists()


def test_library_callers_are_protected_too(gretel, tmp_path):
    from hive_data.normalize_rows import normalize_dataset
    from hive_data.pack import pack_dataset

    before = snapshot(gretel.parent)
    with pytest.raises(ConfigError, match="output is the input"):
        normalize_dataset(gretel, gretel, read="mysql", num_proc=1, progress=False)
    with pytest.raises(ConfigError, match="is inside this output directory"):
        pack_dataset(gretel, gretel.parent, tokenizer=str(TOKENIZER), progress=False)
    assert snapshot(gretel.parent) == before


# ---------------------------------------------------------------------------------------- pack


def pack(src, out, *extra):
    return hive("pack", src, "-o", out, *PACK, *extra)


def test_pack_marks_its_output_and_replaces_only_its_own(chats, tmp_path):
    out = tmp_path / "shards"
    assert pack(chats, out).exit_code == 0
    assert read_marker(out) == "shards"
    (out / "notes.txt").write_text("mine")  # a user's file dropped into the shard directory
    before = snapshot(out)
    one_line_error(pack(chats, out, "--force"), str(out), "'notes.txt'", "refusing to replace")
    assert snapshot(out) == before
    (out / "notes.txt").unlink()
    result = pack(chats, out, "--force", "--seq", "128")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["seq"] == 128 and read_marker(out) == "shards"


def test_pack_keeps_an_input_inside_the_output(chats, tmp_path):
    out = tmp_path / "shards"
    assert pack(chats, out).exit_code == 0
    kept = out / "chats.jsonl"
    shutil.copy(chats, kept)  # the user keeps the data beside the shards it made
    before = snapshot(out)
    one_line_error(pack(kept, out, "--force"), "is inside this output directory")
    assert snapshot(out) == before


def test_pack_refuses_a_symlinked_output(chats, tmp_path):
    out = tmp_path / "shards"
    assert pack(chats, out).exit_code == 0
    alias = tmp_path / "alias"
    alias.symlink_to(out)
    before = snapshot(out)
    one_line_error(pack(chats, alias, "--force"), f"{alias}: is a symbolic link")
    assert snapshot(out) == before and alias.is_symlink()


def test_pack_output_inside_the_input_directory(chats):
    before = snapshot(chats.parent)
    one_line_error(pack(chats.parent, chats.parent / "shards"), "inside the input")
    assert snapshot(chats.parent) == before


def test_pack_refuses_a_directory_with_a_foreign_manifest(chats, tmp_path):
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text('{"name": "my web app", "version": "1.0"}')
    (app / "src" / "main.js").write_text("console.log(1)\n")
    before = snapshot(app)
    one_line_error(pack(chats, app), f"{app}: not a hive shard directory (no {MARKER} marker)")
    assert snapshot(app) == before


def test_pack_replaces_a_shard_directory_of_an_older_hive(chats, tmp_path):
    old = write_shards(tmp_path / "old", seq=64, train_docs=6, val_docs=0)  # no marker, as before issue 13
    assert not (old / MARKER).exists()
    result = pack(chats, old)
    assert result.exit_code == 0, result.output
    assert read_marker(old) == "shards" and json.loads((old / "manifest.json").read_text())["seq"] == 256


# ---------------------------------------------------------------------------------------- train


def test_train_overwrite_refuses_a_directory_hive_did_not_make(shards, tmp_path):
    src = tmp_path / "project"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "main.py").write_text("print('hello')\n")
    (src / "README").write_text("my project\n")
    before = snapshot(src)
    one_line_error(
        train(shards, "-o", src, *TRAIN, "--overwrite"),
        f"{src}: not a hive run directory (no {MARKER} marker); refusing to delete it",
    )
    assert snapshot(src) == before


def test_train_overwrite_keeps_the_shards_it_trains_on(shards, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    inside = run_dir / "shards"
    shutil.move(shards, inside)
    before = snapshot(run_dir)
    one_line_error(train(inside, "-o", run_dir, *TRAIN, "--overwrite"), "shards directory", "inside this run")
    one_line_error(
        train(inside, "-o", inside, *TRAIN, "--overwrite"), "run directory is the shards directory"
    )
    alias = tmp_path / "alias"
    alias.symlink_to(inside)
    one_line_error(train(inside, "-o", alias, *TRAIN, "--overwrite"), "run directory is the shards directory")
    one_line_error(
        train(inside, "-o", inside / "run", *TRAIN), "run directory is inside the shards directory"
    )
    assert snapshot(run_dir) == before


def test_train_marks_its_run_directory_and_deletes_only_its_own(shards, chats, tmp_path):
    run_dir = tmp_path / "run"
    result = train(shards, "-o", run_dir, *TRAIN)
    assert result.exit_code == 0, result.output
    assert read_marker(run_dir) == "run"
    (run_dir / "my-notes.md").write_text("what I learned\n")
    before = snapshot(run_dir)
    one_line_error(train(shards, "-o", run_dir, *TRAIN, "--overwrite"), "'my-notes.md'", "refusing to delete")
    one_line_error(pack(chats, run_dir), "is a hive run directory, not a shard directory")
    assert snapshot(run_dir) == before
    (run_dir / "my-notes.md").unlink()
    result = train(shards, "-o", run_dir, *TRAIN, "--overwrite")
    assert result.exit_code == 0, result.output
    assert read_marker(run_dir) == "run" and (run_dir / "adapter").is_dir()


def test_train_overwrites_a_run_directory_of_an_older_hive(shards, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step-00000007").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-00000007" / "state.json").write_text("{}")
    (run_dir / "config.yaml").write_text("train:\n  lr: 0.0002\nshards:\n  path: /somewhere\n")
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    result = train(shards, "-o", run_dir, *TRAIN, "--overwrite")
    assert result.exit_code == 0, result.output
    assert read_marker(run_dir) == "run" and not (run_dir / "checkpoints" / "step-00000007").exists()


def test_marker_is_json_with_the_kind(tmp_path):
    from hive_core.atomic import write_marker

    write_marker(tmp_path, "run")
    assert json.loads((tmp_path / MARKER).read_text())["kind"] == "run"
    assert os.listdir(tmp_path) == [MARKER]
