"""Every bad input of issue 5 gives a one-line error and exit status 1 through `hive-train`."""

from __future__ import annotations

import json
import shutil

import numpy as np
from click.testing import CliRunner
from train_helpers import TINY_MODEL, TOKENIZER, write_shards

from hive_data.shards import ShardWriter, rows_to_batch, write_manifest
from hive_train.cli import main
from hive_train.config import oom_message

BASE = [
    "--model",
    str(TINY_MODEL),
    "--tokenizer",
    str(TOKENIZER),
    "--batch-size",
    "2",
    "--grad-accum",
    "1",
    "-q",
]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def one_line_error(result, *fragments):
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


def edit_manifest(shards, change):
    path = shards / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_missing_shard_directory(tmp_path):
    one_line_error(run(tmp_path / "nope", "-o", tmp_path / "run", *BASE), "not a shard directory")


def test_interrupted_pack_without_manifest(shards, tmp_path):
    (shards / "manifest.json").unlink()
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), "no manifest.json")


def test_missing_shard_file(shards, tmp_path):
    next(shards.glob("train-*.arrow")).unlink()
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), "train-00000", "missing")


def test_truncated_shard(shards, tmp_path):
    path = next(shards.glob("train-*.arrow"))
    path.write_bytes(path.read_bytes()[:-100])
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), str(path), "truncated")


def test_sha256_mismatch(shards, tmp_path):
    path = next(shards.glob("train-*.arrow"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), str(path), "sha256")


def test_tokenizer_special_ids_disagree_with_the_shards(shards, tmp_path):
    edit_manifest(shards, lambda m: m["tokenizer"].update(pad_id=7))
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), "tokenizer does not match", "pad_id")


def test_tokenizer_content_disagrees_with_the_shards(shards, tmp_path):
    edit_manifest(shards, lambda m: m["tokenizer"].update(sha256="0" * 64))
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), "tokenizer content differs")


def test_tokenizer_vocabulary_larger_than_the_model(shards, tmp_path):
    edit_manifest(shards, lambda m: m["tokenizer"].update(vocab_size=151_936))
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), "does not fit the model's 4096 embeddings")


def test_token_ids_beyond_the_model(tmp_path):
    shards = write_shards(tmp_path / "wide", seq=96, train_docs=8, val_docs=0)
    # replace the rows by one holding id 6000, keeping a consistent manifest
    manifest = json.loads((shards / "manifest.json").read_text())
    for f in shards.glob("*.arrow"):
        f.unlink()
    ids = np.array([5, 6000, 7, 8], np.int32)
    writer = ShardWriter(shards, "train")
    writer.write(rows_to_batch([ids], [np.array([4], np.int32)], [np.array([0, 1, 1, 1], np.int8)]))
    manifest["shards"] = [i.to_json() for i in writer.close()]
    write_manifest(shards, manifest)
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), "token id 6000", "4096 embeddings")


def test_seq_beyond_the_model_positions(tmp_path):
    shards = write_shards(tmp_path / "long", seq=8192, train_docs=8, val_docs=0)
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), "seq 8192", "4096 positions")


def test_seq_flag_disagreeing_with_the_manifest(shards, tmp_path):
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE, "--seq", 64), "seq 64", "packed with seq 96")


def test_unknown_recipe_key_names_file_line_and_column(shards, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("pack:\n  seq: 96\ntrain:\n  rank: 8\n  lerning_rate: 1.0e-4\n")
    line = one_line_error(run(shards, "-o", tmp_path / "run", "--config", recipe, *BASE), "lerning_rate")
    assert line.startswith(f"error: {recipe}:5:3: ")


def test_bad_value_type_in_recipe(shards, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  rank: eight\n")
    line = one_line_error(
        run(shards, "-o", tmp_path / "run", "--config", recipe, *BASE), "rank must be an integer"
    )
    assert f"{recipe}:2:3" in line


def test_missing_model(shards, tmp_path):
    one_line_error(
        run(shards, "-o", tmp_path / "run", *BASE, "--model", tmp_path / "no-model"),
        "cannot load model config",
    )


def test_non_empty_run_directory_and_nothing_to_resume(shards, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    one_line_error(run(shards, "-o", out, *BASE, "--max-steps", 1), "--resume", "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"
    one_line_error(run(shards, "-o", out, *BASE, "--resume"), "nothing to resume")


def model_poisoned_at_step_2(shards, tmp_path):
    """A copy of the tiny model (head untied) whose input embedding is NaN for one token that the
    second step reads and the first does not: step 1 is finite, step 2's loss is NaN. (An absurd
    learning rate no longer gets this far: it is refused as out of range.)"""
    from safetensors.torch import load_file, save_file

    from hive_data.shards import open_shards
    from hive_train.data import RowTable, build_schedule, flatten

    table = RowTable.from_arrow(open_shards(shards).split("train"))
    schedule = build_schedule(
        table.row_tokens, seed=42, epochs=1.0, max_steps=6, batch_size=2, grad_accum=1,
        tokens_per_micro=None, tokens_per_step=None,
    )  # fmt: skip
    first, second = (
        {int(t) for rows in schedule.micro_batches(step) for t in flatten(table, rows).input_ids.flatten()}
        for step in (0, 1)
    )
    token = min(second - first)
    model = tmp_path / "poisoned"
    shutil.copytree(TINY_MODEL, model)
    weights = load_file(model / "model.safetensors")
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"].clone()
    weights["model.embed_tokens.weight"][token] = float("nan")
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(dict(config, tie_word_embeddings=False)))
    return model


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(shards, tmp_path):
    out = tmp_path / "run"
    model = model_poisoned_at_step_2(shards, tmp_path)
    args = [shards, "-o", out, *BASE, "--model", model, "--adapter", "lora", "--warmup-ratio", "0"]
    line = one_line_error(
        run(*args, "--save-every", 1, "--max-steps", 6), "loss is nan at step 2", "step-00000001"
    )
    assert "--resume" in line
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000001"]
    assert not (out / "adapter").exists()  # no half-trained adapter presented as a result
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1]


def test_oom_message_names_the_next_tier():
    assert (
        oom_message(12, "24", 23.6)
        == "CUDA out of memory at step 12 with --vram 24 on a 24 GB GPU; try --vram 16"
    )
    assert "try --vram 8" in oom_message(3, "12")
    assert "smallest --vram tier" in oom_message(3, "8")
    assert "try --vram 16" in oom_message(0, None, 16.0)  # no preset: suggest the tier that fits
    assert "before the first step" in oom_message(0, "80")


def test_special_ids_beyond_the_model(shards, tmp_path):
    edit_manifest(shards, lambda m: m["tokenizer"].update(eos_id=5000))
    one_line_error(run(shards, "-o", tmp_path / "run", *BASE), "eos_id 5000", "4096 embeddings")


def test_hivellm_manifest_max_seq_length_must_match_the_shards(shards, tmp_path):
    manifest = tmp_path / "manifest.json"
    config = {"rank": 4, "max_seq_length": 1024, "use_unsloth": True}
    manifest.write_text(json.dumps({"schema_version": "2.0", "training": {"config": config}}))
    result = run(shards, "-o", tmp_path / "run", "--config", manifest, *BASE)
    assert result.exit_code == 1
    assert "error: " in result.stderr and "seq 1024 disagrees" in result.stderr
