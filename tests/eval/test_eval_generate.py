"""Generation for evaluation: prompts exactly as pack rendered them, batching that changes nothing,
and (slow) a tiny model that memorises 16 text-to-SQL pairs and reproduces them greedily."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest
import torch
from train_helpers import SQL_PAIRS, SQL_SCHEMA, TINY_MODEL, TOKENIZER, sql_rows, write_shards

from hive_core.errors import ConfigError, RecordError
from hive_data.pack import pack_dataset
from hive_data.shards import open_shards
from hive_eval.generate import (
    GenerationStats,
    generate,
    load_expert,
    prompt_settings,
    render_prompts,
    strip_think,
)
from hive_train.config import TrainConfig
from hive_train.loop import train

SCHEMA, PAIRS = SQL_SCHEMA, SQL_PAIRS  # shared with the training-time evaluation tests
SQL_ROWS = sql_rows()
CHAT_ROWS = [
    {
        "messages": [
            {"role": "system", "content": "You are a JSON expert."},
            {"role": "user", "content": "Make an object with key a set to 1."},
            {"role": "assistant", "content": '{"a": 1}'},
        ]
    },
    {  # several turns: the earlier answer is part of the prompt, rendered under the think policy
        "messages": [
            {"role": "user", "content": "Cypher for all Person nodes?"},
            {"role": "assistant", "content": "MATCH (p:Person) RETURN p"},
            {"role": "user", "content": "Only their names?"},
            {"role": "assistant", "content": "MATCH (p:Person) RETURN p.name"},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "TypeScript type for a point?"},
            {
                "role": "assistant",
                "content": "<think>\nTwo numbers.\n</think>\n\ntype Point = { x: number; y: number };",
            },
        ]
    },
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER))


def shard_prompts(shards_dir) -> list[tuple[int, ...]]:
    """The tokens of every document pack wrote before its last answer (its last run of loss tokens;
    for a one-turn conversation, everything before the first loss token)."""
    table = open_shards(shards_dir).split("train")
    out = []
    for ids, lengths, mask in zip(
        table.column("input_ids").to_pylist(),
        table.column("seq_lengths").to_pylist(),
        table.column("completion_mask").to_pylist(),
    ):
        start = 0
        for n in lengths:
            doc_ids, doc_mask = ids[start : start + n], np.asarray(mask[start : start + n])
            last = len(doc_mask) - 1 - int(np.argmax(doc_mask[::-1]))  # the last loss token
            begin = last
            while begin > 0 and doc_mask[begin - 1]:
                begin -= 1
            out.append(tuple(doc_ids[:begin]))
            start += n
    return out


@pytest.mark.parametrize("think", ["empty", "keep", "strip"])
def test_rendered_prompts_are_the_prompts_pack_wrote(tmp_path, think):
    sql = write_jsonl(tmp_path / "sql.jsonl", SQL_ROWS[:5])
    chat = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    result = pack_dataset(
        [sql, chat],
        tmp_path / "shards",
        tokenizer=str(TOKENIZER),
        seq=256,
        val=0.0,
        think=think,
        progress=False,
        num_proc=1,
    )
    tok = tokenizer()
    packed = shard_prompts(tmp_path / "shards")
    prompts = render_prompts(SQL_ROWS[:5] + CHAT_ROWS, tok, tmp_path / "shards")
    assert prompts == render_prompts(SQL_ROWS[:5] + CHAT_ROWS, tok, result.manifest)
    assert all(p.endswith("<|im_start|>assistant\n") for p in prompts)
    ours = [tuple(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert sorted(ours) == sorted(packed)  # token for token, every row (pack reorders rows)
    assert sorted(prompts) == sorted(tok.decode(p) for p in packed)
    multi = prompts[5 + 1]
    assert "RETURN p<|im_end|>\n<|im_start|>user\nOnly their names?" in multi


def test_render_prompts_checks_the_chat_template_and_names_bad_rows():
    tok = tokenizer()
    with pytest.raises(ConfigError, match="chat template differs"):
        render_prompts(SQL_ROWS[:1], tok, {"chat_template_sha256": "0" * 64})
    with pytest.raises(RecordError) as err:
        render_prompts([SQL_ROWS[0], {"question": 3, "context": SCHEMA, "answer": "x"}], tok, {})
    assert err.value.row == 2
    assert strip_think("<think>\n\n</think>\n\nSELECT 1") == "SELECT 1"
    assert strip_think("SELECT 1 ") == "SELECT 1"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    shards = write_shards(tmp_path_factory.mktemp("shards") / "s", seq=96, train_docs=16, val_docs=0)
    cfg = TrainConfig(
        model=str(TINY_MODEL), tokenizer=str(TOKENIZER), rank=4, alpha=8, batch_size=2, grad_accum=1,
        lr=1e-2, max_steps=4, eval_every=0, save_every=0, seed=3, device="cpu",
    )  # fmt: skip
    return train(cfg, shards, tmp_path_factory.mktemp("runs") / "run", progress=False).run_dir


def test_batched_greedy_generation_equals_one_at_a_time(quick_run):
    expert = load_expert(quick_run, device="cpu")
    assert expert.model.dtype == torch.float32
    assert expert.prompt_settings["think"] == "empty"  # from the run's shards' manifest
    prompts = render_prompts(SQL_ROWS[:7], expert.tokenizer, expert.prompt_settings)
    prompts[2] = prompts[2].replace("Paris", "Paris, France, in Europe, on the Seine")  # uneven lengths
    stats = GenerationStats()
    batched = generate(
        expert.model, expert.tokenizer, prompts, max_new_tokens=24, batch_size=3, progress=False, stats=stats
    )
    single = [
        generate(expert.model, expert.tokenizer, [p], max_new_tokens=24, batch_size=1, progress=False)[0]
        for p in prompts
    ]
    assert batched == single
    assert len(set(batched)) > 1  # different prompts, different outputs: input order is kept
    assert stats.rows == 7 and stats.batches == 3 and stats.new_tokens > 0 and stats.tokens_per_s > 0
    # hive's own greedy loop (the CUDA path without the graph): one static cache for all batches, a
    # short last batch filled up, 4-D masks and positions from buffers; token for token transformers'
    static_stats = GenerationStats()
    static = generate(
        expert.model, expert.tokenizer, prompts, max_new_tokens=24, batch_size=3, decoder="static",
        progress=False, stats=static_stats,
    )  # fmt: skip
    assert static == batched and static_stats.decoder == "static" and not static_stats.notes
    # sampling is seeded: the same seed gives the same completions
    a, b = (
        generate(
            expert.model,
            expert.tokenizer,
            prompts[:3],
            max_new_tokens=8,
            temperature=1.0,
            top_p=0.9,
            seed=7,
            progress=False,
        )  # fmt: skip
        for _ in range(2)
    )
    assert a == b


def test_prompt_settings_of_a_run_without_its_shards(quick_run, tmp_path):
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["shards"]["path"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    settings, notes = prompt_settings(run)
    assert settings["think"] == "empty" and len(notes) == 1 and "gone" in notes[0]


@pytest.mark.slow
def test_a_tiny_model_memorises_sixteen_questions_and_generates_them(tmp_path, capsys):
    """Pack 16 question/SQL pairs, train the tiny model hard on them, generate greedily."""
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    data = write_jsonl(tmp_path / "clean.jsonl", SQL_ROWS)
    pack_dataset(
        [data], tmp_path / "shards", tokenizer=str(TOKENIZER), seq=128, val=0.0, progress=False, num_proc=1
    )
    cfg = TrainConfig(
        model=str(TINY_MODEL), rank=16, alpha=32, batch_size=16, grad_accum=1, lr=1e-2,
        lr_scheduler="constant", warmup_ratio=0.0, max_steps=120, eval_every=0, save_every=0, seed=0,
        device="cpu",
    )  # fmt: skip
    train(cfg, tmp_path / "shards", tmp_path / "run", progress=False)
    trained_at = time.perf_counter()
    expert = load_expert(tmp_path / "run", device="cpu")
    prompts = render_prompts(SQL_ROWS, expert.tokenizer, expert.prompt_settings)
    outputs = generate(expert.model, expert.tokenizer, prompts, max_new_tokens=40, progress=False)
    correct = sum(strip_think(o) == a for o, (_, a) in zip(outputs, PAIRS))

    base = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32).eval()
    untrained = generate(base, expert.tokenizer, prompts, max_new_tokens=40, progress=False)
    base_correct = sum(strip_think(o) == a for o, (_, a) in zip(untrained, PAIRS))
    with capsys.disabled():
        print(
            f"\nmemorised: {correct}/16 exact (untrained base: {base_correct}/16); "
            f"train {trained_at - started:.1f} s, total {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
    assert correct >= 14, [(o, a) for o, (_, a) in zip(outputs, PAIRS)]
    assert base_correct <= 1

    # the whole path through the command: the run generates, the answers run on synthesized databases
    import subprocess

    from hive_eval.evaluate import evaluate

    cmd = [sys.executable, "-m", "hive_eval.cli", str(tmp_path / "run"), str(data), "--device", "cpu"]
    done = subprocess.run([*cmd, "--max-new-tokens", "40", "--no-progress"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "eval" / "summary.json").read_text())
    ex = summary["overall"]["ex"]
    assert ex >= correct / 16 and ex >= 0.875, summary
    preds = write_jsonl(
        tmp_path / "untrained.jsonl",
        [{"row": i + 1, "prediction": strip_think(o)} for i, o in enumerate(untrained)],
    )
    base_summary = evaluate(data, preds, tmp_path / "untrained-eval", progress=False)
    base_ex = base_summary["overall"]["ex"]
    with capsys.disabled():
        print(f"execution accuracy: trained {ex:.3f}, untrained {base_ex:.3f}", file=sys.stderr)
    assert base_ex <= 1 / 16
