"""Corrupted and hostile inputs (issue 7), data side.

- Damaged shard directories (flipped bytes, truncation, a manifest that lies about its shards, a
  tokenizer that is not the one the shards were packed with) are refused by `hive-data inspect` and by
  `hive_data.shards.open_shards`, one line naming the file. (The trainer's refusals are tested with
  the trainer.)
- Inputs that try to escape: manifests naming files outside the shard directory, rows whose values
  look like paths, schema keys that climb out of `--schema-dir`, tokenizers that ask for remote code,
  YAML recipes with Python tags, and SQL answers and schema contexts with side effects under
  `--verify explain` (only ever planned, in a rolled-back read-only transaction, in a scratch schema,
  as a role without privileges, under a statement timeout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_helpers import conversations

from hive_core.errors import ConfigError, ShardError
from hive_data.cli import main as cli
from hive_data.pack import pack_dataset
from hive_data.shards import open_shards

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "fixtures" / "tokenizer"


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    """A complete shard directory with several shards, packed with a private copy of the fixture tokenizer."""
    base = tmp_path_factory.mktemp("packed")
    tok = base / "tokenizer"
    shutil.copytree(TOKENIZER, tok)
    src = base / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in conversations(400)))
    out = base / "shards"
    pack_dataset(
        src, out, tokenizer=str(tok), seq=256, shard_tokens=8000, val=0.0, num_proc=1, progress=False
    )
    assert len(list(out.glob("train-*.arrow"))) >= 3
    return out


@pytest.fixture
def shards(packed, tmp_path) -> Path:
    copy = tmp_path / "shards"
    shutil.copytree(packed, copy)
    return copy


def manifest(shards: Path) -> dict:
    return json.loads((shards / "manifest.json").read_text())


def rewrite_manifest(shards: Path, edit) -> None:
    data = manifest(shards)
    edit(data)
    (shards / "manifest.json").write_text(json.dumps(data, indent=2))


def inspect(*args) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["inspect", *map(str, args)])
    return res.exit_code, res.output


def assert_refused(shards: Path, named: Path | str, *words: str, verify: str = "size") -> None:
    """Both `open_shards` and `hive-data inspect` refuse, on one line, naming `named`."""
    with pytest.raises(ShardError) as err:
        open_shards(shards, verify=verify)
    assert str(named) in str(err.value) and all(w in str(err.value) for w in words), err.value
    code, out = inspect(shards, "--verify", verify)
    assert code == 1, out
    assert out.startswith("error: ") and out.count("\n") == 1 and str(named) in out, out


def first_shard(shards: Path) -> Path:
    return shards / manifest(shards)["shards"][0]["file"]


def test_intact_shards_are_accepted(shards):
    open_shards(shards, verify="sha256")
    code, out = inspect(shards, "--verify", "sha256", "--row", "0", "--no-color")
    assert code == 0, out


def test_flipped_bytes_in_token_data_are_refused(shards):
    shard = first_shard(shards)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit deep inside the token ids: the file still parses
    shard.write_bytes(bytes(data))
    assert_refused(shards, shard, "sha256", verify="sha256")


def test_flipped_bytes_in_the_arrow_structure_are_refused(shards):
    shard = first_shard(shards)
    data = bytearray(shard.read_bytes())
    for i in range(8, 64):  # the schema message at the start of the stream
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert_refused(shards, shard)
    assert_refused(shards, shard, verify="sha256")


def test_truncated_shard_is_refused(shards):
    shard = first_shard(shards)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    assert_refused(shards, shard, "truncated")


@pytest.mark.parametrize(
    ("lie", "words"),
    [
        ("rows", ("rows",)),
        ("tokens", ("tokens",)),
        ("bytes", ("bytes",)),
        ("sha256", ("sha256",)),
        ("missing", ("missing",)),
        ("duplicate", ("twice",)),
        ("swapped", ()),
        ("not-a-list", ("list",)),
        ("no-bytes", ("bytes",)),
        ("file-not-a-string", ("file",)),
        ("unknown-split", ("split",)),
        ("seq", ("seq",)),
    ],
)
def test_manifest_that_lies_about_its_shards_is_refused(shards, lie, words):
    info = manifest(shards)["shards"]
    first, second = info[0]["file"], info[1]["file"]
    named: Path | str = shards / first
    verify = "size"

    def edit(m):
        s = m["shards"]
        if lie in ("rows", "tokens"):
            s[0][lie] += 1
        elif lie == "bytes":
            s[0]["bytes"] -= 10
        elif lie == "sha256":
            s[0]["sha256"] = "0" * 64
        elif lie == "missing":
            s.append({**s[0], "file": "train-00099-of-00099.arrow"})
        elif lie == "duplicate":  # the same shard twice: a reader would train on it twice
            s.append(dict(s[0]))
        elif lie == "swapped":
            s[0]["file"], s[1]["file"] = second, first
        elif lie == "not-a-list":
            m["shards"] = {"train": s}
        elif lie == "no-bytes":
            del s[0]["bytes"]
        elif lie == "file-not-a-string":
            s[0]["file"] = 7
        elif lie == "unknown-split":
            s[0]["split"] = "test"
        elif lie == "seq":
            m["seq"] = "2048"

    rewrite_manifest(shards, edit)
    if lie == "sha256":
        verify = "sha256"
    if lie == "missing":
        named = shards / "train-00099-of-00099.arrow"
    if lie in ("duplicate", "not-a-list", "no-bytes", "file-not-a-string", "unknown-split", "seq"):
        named = shards / "manifest.json"
    if lie == "swapped":
        named = shards  # whichever of the two is checked first is named; both lie
        with pytest.raises(ShardError) as err:
            open_shards(shards)
        assert first in str(err.value) or second in str(err.value)
        code, out = inspect(shards)
        assert code == 1 and out.startswith("error: ") and out.count("\n") == 1
        return
    assert_refused(shards, named, *words, verify=verify)


def test_manifest_that_is_not_json_is_refused(shards):
    (shards / "manifest.json").write_text('{"format": "hive-shards", "shards": [')
    assert_refused(shards, shards / "manifest.json", "JSON")


@pytest.mark.parametrize("name", ["../x.arrow", "/etc/passwd", "sub/train.arrow", "..\\x.arrow/../y"])
def test_manifest_cannot_name_files_outside_the_shard_directory(shards, tmp_path, name):
    # a real, valid shard outside the directory: it must not be read
    shutil.copy(first_shard(shards), tmp_path / "x.arrow")
    rewrite_manifest(shards, lambda m: m["shards"][0].update(file=name))
    with pytest.raises(ShardError) as err:
        open_shards(shards)
    assert "manifest.json" in str(err.value) or name in str(err.value)
    code, out = inspect(shards)
    assert code == 1 and out.startswith("error: ") and out.count("\n") == 1, out


def other_tokenizer(directory: Path) -> Path:
    """A copy of the fixture tokenizer with one extra token: loads fine, encodes differently."""
    from tokenizers import Tokenizer

    shutil.copytree(TOKENIZER, directory)
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tok.add_tokens(["<|not_in_the_pack|>"])
    tok.save(str(directory / "tokenizer.json"))
    return directory


def test_inspect_refuses_a_tokenizer_that_does_not_match_the_manifest(shards, tmp_path):
    other = other_tokenizer(tmp_path / "other")
    code, out = inspect(shards, "--row", "0", "--tokenizer", other, "--no-color")
    assert code == 1 and out.startswith("error: ") and out.count("\n") == 1, out
    assert str(other) in out and "does not match" in out


def test_inspect_refuses_when_the_packing_tokenizer_changed_since(shards):
    tok_dir = Path(manifest(shards)["tokenizer"]["name_or_path"])
    backup = tok_dir.with_name("tokenizer-backup")
    shutil.copytree(tok_dir, backup)
    try:
        shutil.rmtree(tok_dir)
        other_tokenizer(tok_dir)  # same path as in the manifest, other content
        code, out = inspect(shards, "--row", "0", "--no-color")
        assert code == 1 and out.startswith("error: ") and out.count("\n") == 1, out
        assert str(tok_dir) in out and "does not match" in out
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)
        shutil.move(backup, tok_dir)


# ------------------------------------------------------------------------------------ escapes


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_rows_that_look_like_paths_write_nothing_outside_the_outputs(tmp_path):
    """Row values are data, never paths: pack and normalize write their outputs and nothing else."""
    from hive_data.normalize_rows import normalize_dataset

    work = tmp_path / "work"
    work.mkdir()
    rows = []
    for i, target in enumerate(
        ["../escaped.jsonl", "/tmp/hive-escape-test", "../../x.arrow", "manifest.json"]
    ):
        row = conversations(1)[0]
        row["messages"][1]["content"] += f" {i}"
        row.update({"file": target, "output": target, "rejects": target, "path": target, "split": target})
        rows.append(row)
    rows.append({"sql_prompt": "q", "sql_context": "CREATE TABLE t (a INT)", "sql": "SELECT a FROM t"})
    src = work / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = snapshot(tmp_path)
    pack_dataset(
        src, work / "shards", tokenizer=str(TOKENIZER), seq=256, num_proc=1, progress=False, fmt="messages"
    )
    normalize_dataset(src, work / "clean.jsonl", fmt="messages", num_proc=1, progress=False)
    created = snapshot(tmp_path) - before
    assert {c for c in created if not c.startswith("work/shards/")} == {
        "work/shards",
        "work/clean.jsonl",
        "work/clean.jsonl.rejects.jsonl",
    }
    assert not Path("/tmp/hive-escape-test").exists()


def test_schema_keys_cannot_climb_out_of_the_schema_dir(tmp_path):
    from hive_data.normalize_rows import normalize_dataset

    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "shop.sql").write_text("CREATE TABLE items (id INT PRIMARY KEY, name TEXT);")
    (tmp_path / "secret.sql").write_text("CREATE TABLE secret (id INT);")  # a valid schema, outside
    keys = ["shop", "../secret", "/abs/secret", "..", "shop/../../secret", "sub\\..\\secret"]
    src = tmp_path / "rows.jsonl"
    src.write_text(
        "".join(
            json.dumps({"question": f"q{i}", "sql": "SELECT 1", "db_id": k}) + "\n"
            for i, k in enumerate(keys)
        )
    )
    out = tmp_path / "clean.jsonl"
    summary = normalize_dataset(src, out, schema_dir=str(schemas), num_proc=1, progress=False)
    assert summary.rows_out == 1
    rejects = [json.loads(x) for x in (tmp_path / "clean.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [r["original"]["db_id"] for r in rejects] == keys[1:]
    assert all(r["step"] == "schema" for r in rejects)
    assert "secret" not in out.read_text().lower().replace("../secret", "")


def remote_code_tokenizer(directory: Path) -> Path:
    """A tokenizer whose config asks for its own Python class; running that code leaves a marker file."""
    shutil.copytree(TOKENIZER, directory)
    (directory / "evil.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(directory / 'REMOTE_CODE_RAN')!r}).write_text('ran')\n"
        "from transformers import PreTrainedTokenizerFast\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    config = json.loads((directory / "tokenizer_config.json").read_text())
    config.pop("tokenizer_class", None)
    config["auto_map"] = {"AutoTokenizer": [None, "evil.EvilTokenizer"]}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def run_pack_cli(*args, modules: Path, **kwargs) -> subprocess.CompletedProcess:
    # transformers copies remote code into a modules cache before importing it: keep that out of $HOME
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(modules)}
    return subprocess.run(
        [sys.executable, "-m", "hive_data", "pack", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_tokenizer_asking_for_remote_code_is_refused(tmp_path):
    tok = remote_code_tokenizer(tmp_path / "tok")
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in conversations(5)))
    res = run_pack_cli(
        src,
        "-o",
        tmp_path / "out",
        "--tokenizer",
        tok,
        "-q",
        stdin=subprocess.DEVNULL,
        modules=tmp_path / "modules",
    )
    assert res.returncode == 1, res.stderr
    assert "error: " in res.stderr and "Traceback" not in res.stderr
    assert not (tok / "REMOTE_CODE_RAN").exists()
    assert not (tmp_path / "out").exists()


def test_tokenizer_remote_code_is_refused_without_a_prompt_and_on_one_line(tmp_path):
    tok = remote_code_tokenizer(tmp_path / "tok")
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in conversations(5)))
    res = run_pack_cli(
        src, "-o", tmp_path / "out", "--tokenizer", tok, "-q", input="y\n", modules=tmp_path / "modules"
    )
    assert not (tok / "REMOTE_CODE_RAN").exists()  # typing "y" at a prompt must not run it either
    assert res.returncode == 1 and "[y/N]" not in res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and "--trust-remote-code" in res.stderr


def test_trust_remote_code_lets_such_a_tokenizer_run(tmp_path):
    tok = remote_code_tokenizer(tmp_path / "tok")
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in conversations(5)))
    args = (src, "-o", tmp_path / "out", "--tokenizer", tok, "--seq", "256", "-q", "--num-proc", "2")
    res = run_pack_cli(*args, "--trust-remote-code", stdin=subprocess.DEVNULL, modules=tmp_path / "modules")
    assert res.returncode == 0, res.stderr
    assert (tok / "REMOTE_CODE_RAN").exists()
    open_shards(tmp_path / "out", verify="sha256")


@pytest.mark.parametrize(
    "payload",
    [
        "pack: !!python/object/apply:os.system ['touch {marker}']\n",
        "pack:\n  seq: !!python/object/apply:subprocess.check_output [['touch', '{marker}']]\n",
        "train: !!python/name:os.system\n",
        "pack: !include /etc/passwd\n",
        "normalize:\n  verify: !!python/object/new:os.system ['touch {marker}']\n",
    ],
)
def test_recipes_with_arbitrary_yaml_tags_are_refused(tmp_path, payload):
    from hive_core.recipe import load_recipe

    marker = tmp_path / "MARKER"
    path = tmp_path / "recipe.yaml"
    path.write_text(payload.format(marker=marker))
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(path) in str(err.value) and err.value.line is not None
    assert not marker.exists()


# ------------------------------------------------------------------------------------ SQL side effects


TABLES = "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'pg_catalog'"


@pytest.mark.slow
def test_sql_with_side_effects_is_only_ever_planned(pg_uri, tmp_path):
    """Answers that would drop, write, copy to a program or sleep, and schema contexts whose kept INSERTs
    would call server-side file functions or sleep: nothing happens, nothing hangs."""
    import psycopg

    from hive_data.normalize_rows import normalize_dataset

    marker = tmp_path / "COPY_PROGRAM_RAN"
    exported = tmp_path / "exported"
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS hive_canary CASCADE")
        conn.execute("CREATE SCHEMA hive_canary")
        conn.execute("CREATE TABLE hive_canary.canary (id INT)")
        conn.execute("INSERT INTO hive_canary.canary VALUES (1), (2), (3)")
        tables_before = set(conn.execute(TABLES).fetchall())

    context = (
        "CREATE TABLE customers (id INT PRIMARY KEY, name TEXT); CREATE TABLE orders (id INT, total INT)"
    )
    answers = [
        "DROP TABLE customers",
        "DROP TABLE hive_canary.canary",
        "DROP SCHEMA hive_canary CASCADE",
        "TRUNCATE customers",
        "DELETE FROM hive_canary.canary",
        "DELETE FROM customers",
        "UPDATE customers SET name = 'x'",
        "INSERT INTO hive_canary.canary VALUES (4)",
        f"COPY (SELECT 1) TO PROGRAM 'touch {marker}'",
        f"COPY customers TO PROGRAM 'touch {marker}'",
        "SELECT pg_sleep(100)",
        "SELECT pg_sleep(100) FROM customers",
        "SELECT * FROM customers WHERE id = (SELECT 1 FROM pg_sleep(100))",
        f"SELECT lo_export(lo_from_bytea(0, 'x'), '{exported}')",
        "SELECT 1; DROP TABLE hive_canary.canary",
        "SELECT 1\n;ROLLBACK; DROP TABLE hive_canary.canary; --",
        "SELECT name FROM customers WHERE name = 'a'); DROP TABLE hive_canary.canary; --",
        "CREATE TABLE evil (a INT)",
        "CREATE ROLE evil SUPERUSER",
        "ALTER SYSTEM SET statement_timeout = 1",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity",
        "SELECT name FROM customers",  # an honest row: kept
    ]
    rows = [{"sql_prompt": f"q{i}", "sql_context": context, "sql": a} for i, a in enumerate(answers)]
    hostile_contexts = [
        "CREATE TABLE t (a INT); INSERT INTO t VALUES (lo_from_bytea(4242, 'owned'));"
        f" INSERT INTO t VALUES (lo_export(4242, '{exported}'))",
        "CREATE TABLE t2 (a INT); INSERT INTO t2 SELECT 1 FROM pg_sleep(100)",
        "CREATE TABLE t3 (a INT); INSERT INTO t3 SELECT length(pg_read_file('/etc/hostname'))",
    ]
    rows += [{"sql_prompt": "ctx", "sql_context": c, "sql": "SELECT a FROM t"} for c in hostile_contexts]
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "clean.jsonl"
    start = time.monotonic()
    summary = normalize_dataset(
        src,
        out,
        read="postgres",
        verify="explain",
        pg_uri=pg_uri,
        keep_data=True,
        timeout_ms=500,
        num_proc=1,
        progress=False,
    )
    took = time.monotonic() - start
    assert took < 60, f"took {took:.0f} s: something slept"
    assert summary.rows_in == len(rows) == summary.rows_out + summary.rows_rejected + summary.duplicates
    assert not marker.exists() and not exported.exists()
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM hive_canary.canary").fetchone()[0] == 3
        created = set(conn.execute(TABLES).fetchall()) - tables_before
        assert not created, f"scratch schemas are dropped and nothing else was created: {created}"
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'evil'").fetchone()[0] == 0
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
        conn.execute("DROP SCHEMA hive_canary CASCADE")
    kept = [json.loads(x)["sql"] for x in out.read_text().splitlines()]
    assert "SELECT name FROM customers" in kept
    reasons = [json.loads(x) for x in (tmp_path / "clean.jsonl.rejects.jsonl").read_text().splitlines()]
    by_context = {
        r["original"]["sql_context"]: r["reason"] for r in reasons if r["original"]["sql_prompt"] == "ctx"
    }
    assert "permission denied" in by_context[hostile_contexts[0]]
    assert "timed out" in by_context[hostile_contexts[1]]
    assert "permission denied" in by_context[hostile_contexts[2]]
