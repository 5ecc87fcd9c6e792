"""Runs end to end on CPU: exact resume, checkpoint selection, the PEFT round trip, the run directory."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_helpers import TINY_MODEL, TOKENIZER, write_shards

from hive_core.errors import TrainError
from hive_train import checkpoint
from hive_train.config import TrainConfig
from hive_train.loop import train
from hive_train.metrics import read_metrics


def config(**overrides) -> TrainConfig:
    values = dict(
        model=str(TINY_MODEL),
        tokenizer=str(TOKENIZER),
        rank=4,
        alpha=8,
        dropout=0.1,  # dropout draws from the torch RNG: resume must restore it
        batch_size=2,
        grad_accum=2,
        lr=2e-3,
        epochs=2,
        eval_every=2,
        save_every=2,
        seed=5,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "s", seq=96, train_docs=40, val_docs=8)


@pytest.fixture(scope="module")
def full_run(shards, tmp_path_factory):
    return train(config(), shards, tmp_path_factory.mktemp("runs") / "full", progress=False)


def test_run_directory_is_complete(full_run, shards):
    out = full_run.run_dir
    assert full_run.completed and full_run.steps == full_run.total_steps == 6
    for name in (
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "tokenizer/tokenizer.json",
    ):
        assert (out / name).is_file(), name
    for name in ("config.yaml", "metrics.jsonl", "loss.png", "report.md", "generation_config.json"):
        assert (out / name).stat().st_size > 0, name
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["train"]["seq"] == 96 and resolved["train"]["adapter"] == "dora"
    assert len(resolved["shards"]["manifest_sha256"]) == 64
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    for key in ("epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu", "peak_mem_gb"):
        assert key in records[0]
    assert [r["step"] for r in records if r["val_loss"] is not None] == [2, 4, 6]
    assert records[-1]["epoch"] == 2.0
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "final val loss" in report and "tokens/s" in report
    assert json.loads((out / "generation_config.json").read_text())["temperature"] == 0.7
    # the data is learnable (completions repeat prompts): training lowers the val loss
    assert records[-1]["val_loss"] < records[1]["val_loss"]


def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(full_run, shards, tmp_path):
    out = tmp_path / "resumed"
    first = train(config(), shards, out, stop_after=3, progress=False)
    assert not first.completed and first.steps == 3
    assert first.checkpoint.name == "step-00000003"
    assert first.losses == full_run.losses[:3]
    second = train(config(eval_every=3), shards, out, resume=True, progress=False)  # cadence may change
    assert second.completed
    assert second.losses == full_run.losses[3:]  # exact float equality, not approx
    a = load_file(full_run.run_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == sorted(set(steps)) and steps[-1] == 6


def test_resume_refuses_a_changed_configuration(full_run, shards, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(full_run.run_dir, out)
    before = (out / "config.yaml").read_bytes()
    with pytest.raises(TrainError, match="lr changed"):
        train(config(lr=1e-3), shards, out, resume=True, progress=False)
    assert (out / "config.yaml").read_bytes() == before  # the refused run left the directory alone


def test_half_written_checkpoints_are_never_picked(full_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(full_run.run_dir, out)
    good = checkpoint.latest_checkpoint(out)
    assert good.name == "step-00000006"
    # a newer step directory without its state.json (killed mid-write by something else)...
    torn = out / "checkpoints" / "step-00000099"
    torn.mkdir()
    shutil.copy(good / "trainable.safetensors", torn)
    # ...one whose state.json lists a file that is gone, and a staging leftover
    missing = out / "checkpoints" / "step-00000098"
    shutil.copytree(good, missing)
    (missing / "optimizer.safetensors").unlink()
    staging = out / "checkpoints" / ".step-00000100.abc.staging"
    shutil.copytree(good, staging)
    assert checkpoint.latest_checkpoint(out) == good
    # only the newest `keep_checkpoints` complete ones are kept
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["step-00000004", "step-00000006"]
    checkpoint.clean_staging(out)
    assert not staging.exists() and good.is_dir() and torn.is_dir()


def test_peft_round_trip_reproduces_the_trained_logits(full_run):
    import bitsandbytes.functional as bnbf
    from bitsandbytes.nn import Linear4bit
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from hive_train.model import keep_trainable_layout

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    adapter = str(full_run.run_dir / "adapter")
    ids = torch.randint(10, 4000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = full_run.model.eval()(input_ids=ids).logits

    # 1. the NF4 base with transformers' stock attention, as a user loads it. On CPUs with
    # AVX512-BF16, bitsandbytes 0.50 repacks NF4 weights in eval mode and peft's DoRA then reads the
    # wrong layout; keep_trainable_layout avoids that (README, Training: Output).
    base = AutoModelForCausalLM.from_pretrained(
        str(TINY_MODEL), quantization_config=quant, dtype=torch.float32
    )
    keep_trainable_layout(base)
    loaded = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    # 2. an independent reference without bitsandbytes: a plain fp32 model holding the
    # dequantized NF4 weights, plus the adapter through peft
    plain = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    modules = dict(plain.named_modules())
    with torch.no_grad():
        for name, module in base.named_modules():  # peft injected its layers: X.base_layer is X
            if isinstance(module, Linear4bit):
                modules[name.replace(".base_layer", "")].weight.copy_(
                    bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state)
                )
    reference = PeftModel.from_pretrained(plain, adapter).eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
        with reference.disable_adapter():
            untrained = reference(input_ids=ids).logits
    assert (untrained - expected).abs().max() > 1e-3  # the adapter really changes the model


@pytest.mark.parametrize("adapter", ["lora", "ia3"])
def test_other_adapters_train_and_round_trip(adapter, shards, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = config(
        adapter=adapter,
        quant="none",
        max_steps=2,
        dropout=0.0,
        lr=1e-2,
        target_modules=["k_proj", "v_proj", "down_proj"],
    )
    result = train(cfg, shards, tmp_path / adapter, progress=False)
    adapter_cfg = json.loads((tmp_path / adapter / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == adapter.upper()
    base = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, str(tmp_path / adapter / "adapter")).eval()
    ids = torch.randint(10, 4000, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, result.model.eval()(input_ids=ids).logits)


def test_resume_is_exact_on_the_fast_adapter_path(shards, tmp_path):
    """dropout 0 routes DoRA through hive_train.fast_adapters, whose prepared weights must follow a resume."""
    cfg = config(dropout=0.0, eval_every=0, save_every=0)
    whole = train(cfg, shards, tmp_path / "whole", progress=False)
    assert whole.model.hive_fast is not None and whole.model.hive_fast.layers
    train(cfg, shards, tmp_path / "split", stop_after=2, progress=False)
    rest = train(cfg, shards, tmp_path / "split", resume=True, progress=False)
    assert rest.losses == whole.losses[2:]


def test_fast_path_trains_like_peft_layers(shards, tmp_path):
    fast = train(config(dropout=0.0, eval_every=0, save_every=0), shards, tmp_path / "fast", progress=False)
    stock = train(
        config(dropout=0.0, eval_every=0, save_every=0, fast=False),
        shards,
        tmp_path / "stock",
        progress=False,
    )
    assert stock.model.hive_fast is None
    assert fast.losses == pytest.approx(stock.losses, rel=1e-4)
    assert fast.losses[-1] < fast.losses[0]
