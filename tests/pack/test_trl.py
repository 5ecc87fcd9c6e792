"""TRL's SFTTrainer trains a tiny Qwen3 on hive shards as pre-packed data, without repacking."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from hive_core.errors import ShardError
from hive_data.pack import pack_dataset
from hive_data.shards import open_shards
from hive_data.trl_compat import IGNORE_INDEX, labels_from_mask, load_for_trl

trl = pytest.importorskip("trl")
torch = pytest.importorskip("torch")


def tiny_model(fixtures_dir, vocab: int):
    from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

    path = fixtures_dir / "tiny-qwen3"
    if (path / "config.json").is_file():
        return AutoModelForCausalLM.from_pretrained(str(path))
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
    )
    return Qwen3ForCausalLM(config)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, fixtures_dir):
    tmp = tmp_path_factory.mktemp("trl")
    rng = random.Random(0)
    with open(tmp / "rows.jsonl", "w") as fh:
        for i in range(120):
            q = " ".join(
                rng.choice("how many users orders per city".split()) for _ in range(rng.randint(2, 20))
            )
            fh.write(
                json.dumps({"question": f"{q} {i}", "sql": f"SELECT COUNT(*) FROM users WHERE id > {i}"})
                + "\n"
            )
    out = tmp / "shards"
    pack_dataset(
        tmp / "rows.jsonl", out, tokenizer=str(fixtures_dir / "tokenizer"), seq=256, val=0.1, progress=False
    )
    return out


def test_labels_from_mask():
    assert labels_from_mask([5, 6, 7], [0, 1, 1]).tolist() == [IGNORE_INDEX, 6, 7]


def test_loader_presents_labels_derived_from_the_mask(shards):
    ds = load_for_trl(shards, "train")
    table = open_shards(shards).split("train")
    assert len(ds) == table.num_rows
    assert ds.column_names == ["input_ids", "seq_lengths", "labels"]
    for k in (0, len(ds) - 1):
        row = table.slice(k, 1).to_pylist()[0]
        ex = ds[k]
        assert ex["input_ids"] == row["input_ids"]
        assert ex["seq_lengths"] == row["seq_lengths"]
        mask = np.array(row["completion_mask"])
        assert ex["labels"] == np.where(mask == 1, row["input_ids"], IGNORE_INDEX).tolist()
    assert len(load_for_trl(shards, "val")) > 0
    with pytest.raises(ShardError):
        load_for_trl(shards.parent / "nowhere")


def test_sft_trainer_trains_on_hive_shards(shards, fixtures_dir, tmp_path):
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(fixtures_dir / "tokenizer"))
    model = tiny_model(fixtures_dir, len(tokenizer))
    train = load_for_trl(shards, "train")
    args = SFTConfig(
        output_dir=str(tmp_path / "run"),
        max_length=None,
        padding_free=True,
        dataset_kwargs={"skip_prepare_dataset": True},
        per_device_train_batch_size=2,
        max_steps=3,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    assert trainer.train_dataset is train  # taken as is: not re-tokenized, not repacked

    # the collated batch is the packed rows, flattened; labels follow the mask (TRL also hides the
    # first token of each document, which is never under loss in a hive row anyway)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, pos = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    expected = torch.tensor(np.concatenate([np.array(train[k]["labels"]) for k in range(len(train))]))
    flat_ids = torch.tensor(np.concatenate([np.array(train[k]["input_ids"]) for k in range(len(train))]))
    # locate the collated rows in the split (the sampler shuffles rows)
    rows = [train[k] for k in range(len(train))]
    lengths = [len(r["input_ids"]) for r in rows]
    starts = np.concatenate([[0], np.cumsum(lengths)])
    seen = 0
    for _ in range(2):
        match = [k for k, r in enumerate(rows) if r["input_ids"] == ids[seen : seen + lengths[k]].tolist()]
        assert match, "collated tokens are not a packed row of the shards"
        k = match[0]
        want = expected[starts[k] : starts[k + 1]].clone()
        assert torch.equal(flat_ids[starts[k] : starts[k + 1]], ids[seen : seen + lengths[k]])
        got = labels[seen : seen + lengths[k]]
        first = pos[seen : seen + lengths[k]] == 0
        want[first] = IGNORE_INDEX
        assert torch.equal(got, want)
        assert int(first.sum()) == len(rows[k]["seq_lengths"])  # positions restart at every document
        seen += lengths[k]
    assert seen == len(ids)

    before = [p.detach().clone() for p in model.parameters()]
    result = trainer.train()
    assert np.isfinite(result.training_loss)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
