"""The whole pipeline through the commands: chat rows -> `hive-data pack` -> `hive-train` -> run directory."""

from __future__ import annotations

import json
import random

from click.testing import CliRunner
from train_helpers import TINY_MODEL, TOKENIZER

from hive_data.cli import main as hive_data
from hive_train.cli import main as hive_train
from hive_train.metrics import read_metrics


def test_pack_then_train_on_fixtures(tmp_path):
    rng = random.Random(0)
    rows = tmp_path / "chat.jsonl"
    with open(rows, "w") as fh:
        for _ in range(60):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            messages = [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"SELECT {a} + {b};"},
            ]
            fh.write(json.dumps({"messages": messages}) + "\n")
    shards = tmp_path / "shards"
    packed = CliRunner().invoke(
        hive_data,
        [
            "pack",
            str(rows),
            "-o",
            str(shards),
            "--tokenizer",
            str(TOKENIZER),
            "--seq",
            "256",
            "--val",
            "0.1",
            "-q",
        ],
    )
    assert packed.exit_code == 0, packed.output
    out = tmp_path / "runs" / "sql"
    trained = CliRunner().invoke(
        hive_train,
        [str(shards), "-o", str(out), "--model", str(TINY_MODEL), "--max-steps", "8", "--batch-size", "2",
         "--grad-accum", "1", "--eval-every", "4", "--lr", "1e-3", "-q"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    for name in (
        "adapter/adapter_model.safetensors",
        "tokenizer/tokenizer.json",
        "config.yaml",
        "loss.png",
        "report.md",
    ):
        assert (out / name).is_file(), name
    records = read_metrics(out / "metrics.jsonl")
    assert len(records) == 8 and records[-1]["val_loss"] is not None
    # the tokenizer copied into the run is the one the shards were packed with
    manifest = json.loads((shards / "manifest.json").read_text())
    copied = json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())
    assert copied["eos_token"] == manifest["tokenizer"]["eos_token"]
    assert records[-1]["loss"] < records[0]["loss"]
