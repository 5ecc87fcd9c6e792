"""`pack_dataset` and the `pack`/`inspect` commands end to end on the fixture tokenizer."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hive_core.errors import ConfigError, PackError, ShardError
from hive_data.chat import ChatRenderer, apply_think
from hive_data.cli import main as cli
from hive_data.pack import conversation_hash, pack_dataset, val_mask
from hive_data.shards import open_shards

ROOT = Path(__file__).resolve().parents[2]
SEQ = 256


@pytest.fixture(scope="module")
def tok_dir(fixtures_dir) -> str:
    return str(fixtures_dir / "tokenizer")


@pytest.fixture(scope="module")
def tokenizer(tok_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


def conversation(i: int, rng: random.Random) -> list[dict]:
    words = "how many orders per city name total price users where with the".split()
    question = " ".join(rng.choice(words) for _ in range(rng.randint(2, 30)))
    schema = f"CREATE TABLE t{i % 7} (id INT, name TEXT);\n" * rng.randint(1, 6)
    return [
        {"role": "system", "content": f"You translate questions into SQL.\n\n{schema}"},
        {"role": "user", "content": f"{question} #{i}"},
        {"role": "assistant", "content": f"SELECT name FROM t{i % 7} WHERE id = {i}"},
    ]


def write_rows(path: Path, convs: list[list[dict]], extra_lines=()) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for c in convs:
            fh.write(json.dumps({"messages": c}) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")
    return path


def make_convs(n: int, seed: int = 0) -> list[list[dict]]:
    rng = random.Random(seed)
    return [conversation(i, rng) for i in range(n)]


def overlong() -> list[dict]:
    return [
        {"role": "user", "content": "give me a long answer " * 10},
        {"role": "assistant", "content": "SELECT 1 UNION ALL " * 200},
    ]


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, list[list[dict]]]:
    convs = make_convs(300)
    rows = convs + [convs[5], convs[17]] + [overlong()]  # two exact duplicates, one overlong row
    path = write_rows(tmp_path / "data.jsonl", rows, extra_lines=["{not json"])
    return path, convs


def documents(out: Path, split: str):
    """Every packed document of a split as (ids, mask) tuples, read back from the shards."""
    table = open_shards(out).split(split)
    docs = []
    if table is None:
        return docs
    for row in table.to_pylist():
        ids, mask, start = np.array(row["input_ids"]), np.array(row["completion_mask"]), 0
        assert sum(row["seq_lengths"]) == len(ids) <= SEQ
        for n in row["seq_lengths"]:
            docs.append((tuple(ids[start : start + n].tolist()), tuple(mask[start : start + n].tolist())))
            start += n
    return docs


def shard_bytes(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def pack(src, out, tok_dir, **kw):
    kw.setdefault("seq", SEQ)
    kw.setdefault("progress", False)
    kw.setdefault("num_proc", 1)
    return pack_dataset(src, out, tokenizer=tok_dir, **kw)


def test_pack_contents_totals_and_rejects(dataset, tmp_path, tok_dir, tokenizer):
    src, convs = dataset
    out = tmp_path / "shards"
    result = pack(src, out, tok_dir, val=0.1)
    m = result.manifest
    t = m["totals"]
    assert t["rows_in"] == 304
    assert t["rows_dropped"] == {"unreadable": 1, "overlong": 1, "duplicate": 2}
    assert t["duplicates"] == 2
    assert t["rows_packed"] == 300
    # every input conversation is in the shards exactly once, with its exact tokens and mask
    renderer = ChatRenderer(tokenizer)
    expected = sorted(tuple(map(tuple, (a.tolist(), b.tolist()))) for a, b in map(renderer.encode_one, convs))
    got = sorted(documents(out, "train") + documents(out, "val"))
    assert got == expected
    assert t["tokens"] == sum(len(d[0]) for d in got)
    assert t["loss_tokens"] == sum(sum(d[1]) for d in got)
    assert t["padding_tokens"] == t["sequences"] * SEQ - t["tokens"]
    assert t["fill_efficiency"] == pytest.approx(t["tokens"] / (t["sequences"] * SEQ), abs=1e-6)
    assert sum(t["length_histogram"]["counts"]) == 300
    # masked-in tokens of a document decode to its answer (think block + SQL + <|im_end|>)
    ids, mask = got[0]
    answer = tokenizer.decode([i for i, k in zip(ids, mask) if k])
    assert answer.startswith("<think>\n\n</think>\n\nSELECT name FROM t") and answer.endswith("<|im_end|>")
    # the manifest describes inputs, tokenizer, policy
    assert m["inputs"][0]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert m["tokenizer"]["vocab_size"] == 4096
    assert (
        m["tokenizer"]["pad_id"] == tokenizer.pad_token_id
        and m["tokenizer"]["eos_id"] == tokenizer.eos_token_id
    )
    assert (m["seq"], m["loss"], m["think"], m["seed"]) == (SEQ, "assistant", "empty", 0)
    for info in m["shards"]:
        assert info["sha256"] == hashlib.sha256((out / info["file"]).read_bytes()).hexdigest()
    # rejects list why, where and (for overlong rows) how long
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    by_reason = {r["reason"]: r for r in rejects}
    assert by_reason["overlong"]["row"] == 303 and by_reason["overlong"]["length"] > SEQ
    assert by_reason["unreadable"]["line"] == 304
    assert sorted(r["row"] for r in rejects if r["reason"] == "duplicate") == [301, 302]


def test_shards_load_with_datasets(dataset, tmp_path, tok_dir):
    import datasets

    out = tmp_path / "shards"
    pack(src := dataset[0], out, tok_dir, val=0.0)
    assert src.exists()
    ds = datasets.Dataset.from_file(str(out / "train-00000-of-00001.arrow"))
    assert ds.column_names == ["input_ids", "seq_lengths", "completion_mask"]
    assert str(ds.features["input_ids"].feature.dtype) == "int32"


def test_deterministic_across_runs_and_num_proc(dataset, tmp_path, tok_dir):
    src = dataset[0]
    a = pack(src, tmp_path / "a", tok_dir, num_proc=1, batch_rows=1000, shard_tokens=20_000)
    pack(src, tmp_path / "b", tok_dir, num_proc=2, batch_rows=37, shard_tokens=20_000)
    pack(src, tmp_path / "c", tok_dir, num_proc=3, batch_rows=64, shard_tokens=20_000)
    assert len(a.manifest["shards"]) > 2  # several shards, so the shard split is covered too
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b") == shard_bytes(tmp_path / "c")
    d = pack(src, tmp_path / "d", tok_dir, seed=1, shard_tokens=20_000)
    assert d.manifest["totals"] == a.manifest["totals"]
    assert shard_bytes(tmp_path / "d") != shard_bytes(tmp_path / "a")  # the seed orders rows


def test_overlong_error_stops_with_the_row_and_writes_nothing(dataset, tmp_path, tok_dir):
    out = tmp_path / "shards"
    with pytest.raises(PackError) as info:
        pack(dataset[0], out, tok_dir, overlong="error")
    assert info.value.row == 303 and info.value.line == 303 and str(dataset[0]) in str(info.value)
    assert "longer than --seq 256" in str(info.value)
    assert not out.exists()
    assert not list(tmp_path.glob(".shards.*"))  # no staging left behind


def test_keep_duplicates(dataset, tmp_path, tok_dir):
    r = pack(dataset[0], tmp_path / "shards", tok_dir, keep_duplicates=True)
    assert r.manifest["totals"]["rows_packed"] == 302
    assert r.manifest["totals"]["duplicates"] == 0


def test_split_depends_on_content_only(tmp_path, tok_dir):
    convs = make_convs(400, seed=3)
    first = write_rows(tmp_path / "first.jsonl", convs)
    rng = random.Random(9)
    more = convs + make_convs(200, seed=4)
    rng.shuffle(more)
    second = write_rows(tmp_path / "second.jsonl", more)
    a = pack(first, tmp_path / "a", tok_dir, val=0.2)
    b = pack(second, tmp_path / "b", tok_dir, val=0.2)
    val_a, train_a = set(documents(tmp_path / "a", "val")), set(documents(tmp_path / "a", "train"))
    val_b, train_b = set(documents(tmp_path / "b", "val")), set(documents(tmp_path / "b", "train"))
    assert val_a and train_a
    assert val_a <= val_b and train_a <= train_b  # rows keep their split when rows are added and reordered
    share = a.manifest["totals"]["splits"]["val"]["rows"] / 400
    assert 0.12 < share < 0.28
    assert b.manifest["totals"]["rows_packed"] == 600
    # the split is a function of the content hash alone
    hashes = np.frombuffer(b"".join(conversation_hash(c) for c in convs), dtype=np.uint8).reshape(-1, 16)
    assert val_mask(hashes, 0.2).sum() == a.manifest["totals"]["splits"]["val"]["rows"]


def test_rerun_is_a_noop_and_force_rebuilds(dataset, tmp_path, tok_dir):
    src, out = dataset[0], tmp_path / "shards"
    first = pack(src, out, tok_dir)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = pack(src, out, tok_dir, num_proc=2)  # num_proc does not change the output
    assert again.skipped and again.manifest == first.manifest
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    forced = pack(src, out, tok_dir, force=True)
    assert not forced.skipped and forced.manifest == first.manifest
    changed = pack(src, out, tok_dir, seq=300)
    assert not changed.skipped and changed.manifest["seq"] == 300
    # a damaged output is rebuilt, not trusted
    shard = next(out.glob("train-*.arrow"))
    shard.write_bytes(shard.read_bytes()[:-10])
    assert not pack(src, out, tok_dir, seq=300).skipped
    open_shards(out, verify="sha256")


KILL_SCRIPT = """
import sys
from hive_data.pack import pack_dataset
pack_dataset(sys.argv[1], sys.argv[2], tokenizer=sys.argv[3], seq=256, num_proc=1, batch_rows=50,
             progress=False, force=True, shard_tokens=5000)
"""


@pytest.mark.parametrize("with_old_output", [False, True])
def test_sigkill_mid_pack_leaves_no_accepted_output(tmp_path, tok_dir, with_old_output):
    src = write_rows(tmp_path / "big.jsonl", make_convs(10000, seed=5))
    out = tmp_path / "shards"
    old = None
    if with_old_output:
        pack(write_rows(tmp_path / "small.jsonl", make_convs(50)), out, tok_dir)
        old = shard_bytes(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), str(out), tok_dir], env=env)
    try:
        deadline = time.monotonic() + 60
        # wait until the pack is writing into its staging directory, then kill it hard
        while not any(p.name.endswith(".staging") and any(p.iterdir()) for p in tmp_path.glob(".shards.*")):
            assert proc.poll() is None, "pack finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    if with_old_output:
        assert shard_bytes(out) == old  # the previous complete output, untouched
        open_shards(out, verify="sha256")
    else:
        with pytest.raises(ShardError):
            open_shards(out)
    # the next run clears the leftovers and builds the output
    pack(src, out, tok_dir, num_proc=2)
    assert not list(tmp_path.glob(".shards.*"))
    open_shards(out, verify="sha256")


def test_cli_pack_and_inspect(dataset, tmp_path, tok_dir):
    runner = CliRunner()
    out = tmp_path / "shards"
    args = ["pack", str(dataset[0]), "-o", str(out), "--tokenizer", tok_dir, "--seq", str(SEQ), "-q"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "packed 300 of 304 rows" in res.output and "overlong 1" in res.output
    res = runner.invoke(cli, args)
    assert res.exit_code == 0 and "up to date" in res.output
    png = tmp_path / "hist.png"
    res = runner.invoke(cli, ["inspect", str(out), "--row", "0", "--plot", str(png), "--no-color"])
    assert res.exit_code == 0, res.output
    assert "fill efficiency" in res.output and "document length" in res.output
    assert "⟦<think>\n\n</think>\n\nSELECT name FROM t" in res.output and "<|im_end|>⟧" in res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(cli, ["inspect", str(out), "--row", "100000"])
    assert res.exit_code == 1 and res.output.startswith("error: ") and "no row 100000" in res.output


def test_refuses_to_replace_a_directory_that_is_not_a_pack(dataset, tmp_path, tok_dir):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a hive shard directory"):
        pack(dataset[0], precious, tok_dir)
    assert (precious / "todo.txt").read_text() == "keep me"


def test_cli_errors_are_one_line(tmp_path, tok_dir):
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["pack", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o"), "--tokenizer", tok_dir, "-q"],
    )
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "missing.jsonl" in res.output
    assert res.output.startswith("error: ")
    res = runner.invoke(
        cli, ["pack", str(tmp_path / "x.jsonl"), "-o", str(tmp_path / "o"), "--tokenizer", str(tmp_path)]
    )
    assert res.exit_code == 1 and "cannot load tokenizer" in res.output
    res = runner.invoke(cli, ["inspect", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "not a shard directory" in res.output


def test_bundled_fixture_datasets_pack(fixtures_dir, tmp_path, tok_dir, tokenizer):
    # every readable bundled format packs; SQL rows get the prompt layout of hive_data.prompt
    src = fixtures_dir / "datasets"
    files = sorted(p for p in src.glob("*.json*") if p.name != "broken.jsonl") + [src / "spider.csv"]
    r = pack(files, tmp_path / "shards", tok_dir, val=0.0, seq=1024)
    t = r.manifest["totals"]
    assert t["rows_packed"] > 20 and t["loss_tokens"] > 0
    text = tokenizer.decode(
        np.concatenate(
            [
                np.array(x)
                for x in open_shards(tmp_path / "shards").split("train").column("input_ids").to_pylist()
            ]
        )
    )
    assert "You translate questions into" in text


def test_think_keep_and_loss_all_reach_the_shards(tmp_path, tok_dir, tokenizer):
    convs = [
        [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "<think>\nreason\n</think>\n\nSELECT 1"},
        ]
    ]
    src = write_rows(tmp_path / "t.jsonl", convs)
    for think in ("keep", "strip", "empty"):
        pack(src, tmp_path / think, tok_dir, think=think, val=0.0)
        ((ids, mask),) = documents(tmp_path / think, "train")
        loss_text = tokenizer.decode([i for i, k in zip(ids, mask) if k])
        assert loss_text == apply_think(convs[0][1]["content"], think) + "<|im_end|>"
    pack(src, tmp_path / "all", tok_dir, loss="all", val=0.0)
    ((ids, mask),) = documents(tmp_path / "all", "train")
    assert all(mask)


def test_quick_start_normalize_then_pack(fixtures_dir, tmp_path, tok_dir, tokenizer):
    # the README quick start: normalize the bundled Spider-style rows, then pack them
    runner = CliRunner()
    clean = tmp_path / "clean.jsonl"
    res = runner.invoke(
        cli,
        [
            "normalize",
            str(fixtures_dir / "datasets" / "spider.csv"),
            "--read",
            "mysql",
            "--dialect",
            "postgres",
            "--schema-dir",
            str(fixtures_dir / "datasets" / "databases"),
            "-o",
            str(clean),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in clean.read_text().splitlines()]
    res = runner.invoke(
        cli, ["pack", str(clean), "-o", str(tmp_path / "shards"), "--tokenizer", tok_dir, "-q"]
    )
    assert res.exit_code == 0, res.output
    shards = open_shards(tmp_path / "shards", verify="sha256")
    assert shards.manifest["totals"]["rows_packed"] == len(rows) > 0
    text = tokenizer.decode(
        np.concatenate(
            [np.array(r) for t in shards.tables.values() for r in t.column("input_ids").to_pylist()]
        )
    )
    for row in rows:  # the canonical schema and the verified SQL made it into the training text
        assert row["sql"] + "<|im_end|>" in text
        assert row["schema"].strip() in text


def test_rows_the_chat_template_refuses_are_rejected_not_fatal(tmp_path, fixtures_dir):
    import shutil

    tok = tmp_path / "tok"
    shutil.copytree(fixtures_dir / "tokenizer", tok)
    template = (tok / "chat_template.jinja").read_text()
    strict = (
        "{%- for m in messages %}{%- if loop.index0 > 0 and m['role'] == messages[loop.index0 - 1]['role'] %}"
        "{{- raise_exception('roles must alternate') }}{%- endif %}{%- endfor %}"
    )
    (tok / "chat_template.jinja").write_text(strict + template)
    convs = make_convs(40)
    bad = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "c"},
    ]
    src = write_rows(tmp_path / "rows.jsonl", convs[:20] + [bad] + convs[20:])
    for num_proc in (1, 2):
        r = pack(src, tmp_path / f"out{num_proc}", str(tok), num_proc=num_proc, batch_rows=8, val=0.0)
        assert r.manifest["totals"]["rows_dropped"] == {"unrenderable": 1}
        assert r.manifest["totals"]["rows_packed"] == 40
        (reject,) = [
            json.loads(line)
            for line in (tmp_path / f"out{num_proc}" / "rejects.jsonl").read_text().splitlines()
        ]
        assert (
            reject["row"] == 21
            and reject["reason"] == "unrenderable"
            and "roles must alternate" in reject["detail"]
        )
    assert shard_bytes(tmp_path / "out1") == shard_bytes(tmp_path / "out2")
