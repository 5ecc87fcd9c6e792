"""Folding a run's adapter into plain weights, and `export_merged`: exact on CPU, loadable without peft."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from train_helpers import TINY_MODEL, TOKENIZER, write_shards

from hive_core.errors import ConfigError
from hive_train.config import TrainConfig
from hive_train.export import export_merged, fold_dora, folded_weights, load_folded
from hive_train.loop import train

IDS = torch.randint(10, 4000, (2, 24), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A DoRA run on the NF4 tiny model, trained hard enough (lr 1e-2) that the adapter matters."""
    shards = write_shards(tmp_path_factory.mktemp("shards") / "s", seq=96, train_docs=24, val_docs=4)
    cfg = TrainConfig(
        model=str(TINY_MODEL),
        tokenizer=str(TOKENIZER),
        rank=4,
        alpha=8,
        batch_size=2,
        grad_accum=1,
        lr=1e-2,
        max_steps=6,
        eval_every=0,
        save_every=0,
        seed=1,
        device="cpu",
    )
    return train(cfg, shards, tmp_path_factory.mktemp("runs") / "run", progress=False).run_dir


def adapter_model(run_dir):
    """The run as the docs' snippet loads it: NF4 base + peft's own (unmerged) DoRA layers."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from hive_train.model import keep_trainable_layout

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    base = AutoModelForCausalLM.from_pretrained(
        str(TINY_MODEL), quantization_config=quant, dtype=torch.float32
    )
    keep_trainable_layout(base)
    return PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()


@pytest.fixture(scope="module")
def reference(run):
    """(logits with the adapter, logits of the same NF4 base without it) on fixed ids."""
    model = adapter_model(run)
    with torch.no_grad():
        with_adapter = model(input_ids=IDS).logits
        with model.disable_adapter():
            without = model(input_ids=IDS).logits
    return with_adapter, without


def test_folded_model_computes_what_the_adapter_model_computes(run, reference):
    with_adapter, without = reference
    assert (with_adapter - without).abs().max() > 1e-2  # the adapter really changes the model
    folded = load_folded(run, device="cpu")
    model = folded.model
    assert model.dtype == torch.float32 and not model.training
    assert not any(type(m).__name__ in ("Linear4bit", "LoraLayer") for m in model.modules())
    assert not any("lora" in name for name, _ in model.named_parameters())
    with torch.no_grad():
        got = model(input_ids=IDS).logits
    torch.testing.assert_close(got, with_adapter, rtol=1e-5, atol=1e-5)


def test_fold_is_the_row_normalised_update_for_each_layer(run):
    """W' = m / ||W + sBA||_row * (W + sBA), checked against peft's own merge on a dense base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dense = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    model = PeftModel.from_pretrained(dense, str(run / "adapter")).eval()
    weights = folded_weights(model)
    assert len(weights) == 2 * 6  # 2 layers x q, k, v, o, up, down (no quantized layers here)
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32), str(run / "adapter")
    ).merge_and_unload()
    params = dict(merged.named_parameters())
    for name, tensor in weights.items():
        torch.testing.assert_close(tensor, params[name], rtol=1e-5, atol=1e-6)
    plain = fold_dora(model)  # a dense base folds in place
    assert not any("lora" in name for name, _ in plain.named_parameters())


@pytest.mark.slow  # 10-14 s here: keeps the quick subset under 5 minutes
def test_export_loads_with_plain_transformers_without_peft(run, reference, tmp_path):
    out = export_merged(run, tmp_path / "merged", device="cpu")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config.get("dtype") == "bfloat16"
    assert json.loads((out / "generation_config.json").read_text()) == json.loads(
        (run / "generation_config.json").read_text()
    )
    assert json.loads((out / "hive_export.json").read_text())["adapter"] == "dora"
    torch.save(IDS, tmp_path / "ids.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(out)!r})
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        assert model.dtype == torch.bfloat16, model.dtype
        assert tok.eos_token == "<|im_end|>"
        with torch.no_grad():
            logits = model(input_ids=torch.load({str(tmp_path / "ids.pt")!r})).logits.float()
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        assert "peft" not in sys.modules and "bitsandbytes" not in sys.modules, "adapter libraries imported"
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = torch.load(tmp_path / "logits.pt")
    with_adapter, without = reference
    error = (got - with_adapter).abs().max().item()
    # bf16 weights: about 3 significant digits, far below what the adapter changes
    assert error < 0.05 * with_adapter.abs().max().item(), error
    assert error < (with_adapter - without).abs().max().item() / 4


def test_export_refuses_a_directory_hive_did_not_make(run, tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a hive export directory"):
        export_merged(run, foreign, device="cpu")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match="run directory"):
        export_merged(run, run.parent, device="cpu")  # would swallow the run itself

    out = export_merged(run, tmp_path / "merged", device="cpu")
    first = (out / "model.safetensors").read_bytes()
    export_merged(run, out, device="cpu")  # an export hive wrote is replaced
    assert (out / "model.safetensors").read_bytes() == first
    (out / "extra.bin").write_bytes(b"x")  # ...unless something else was put in it
    with pytest.raises(ConfigError, match="extra.bin"):
        export_merged(run, out, device="cpu")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".staging")]


@pytest.mark.parametrize("adapter, quant", [("lora", "nf4"), ("ia3", "none")])
def test_lora_and_ia3_fold_exactly_too(adapter, quant, tmp_path):
    shards = write_shards(tmp_path / "shards", seq=96, train_docs=12, val_docs=0)
    cfg = TrainConfig(
        model=str(TINY_MODEL), tokenizer=str(TOKENIZER), adapter=adapter, quant=quant, rank=4, alpha=8,
        batch_size=2, grad_accum=1, lr=1e-2, max_steps=3, eval_every=0, save_every=0, seed=2, device="cpu",
    )  # fmt: skip
    result = train(cfg, shards, tmp_path / "run", progress=False)
    with torch.no_grad():
        expected = result.model.eval()(input_ids=IDS).logits
        got = load_folded(result.run_dir, device="cpu").model(input_ids=IDS).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_run_without_its_adapter_is_a_named_error(run, tmp_path):
    import shutil

    from hive_core.errors import TrainError

    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    shutil.rmtree(broken / "adapter")
    with pytest.raises(TrainError, match="no adapter") as err:
        load_folded(broken, device="cpu")
    assert err.value.file == str(broken)
    with pytest.raises(TrainError, match="no config.yaml"):
        load_folded(tmp_path, device="cpu")


@pytest.mark.slow  # 10-14 s here: keeps the quick subset under 5 minutes
def test_hive_train_export_command(run, tmp_path):
    """`hive-train export RUN -o OUT`: the merged directory, or one error line for a foreign one."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from hive_train.cli import run; run()", "export", str(run)]
    done = subprocess.run(
        [*cmd, "-o", str(tmp_path / "merged"), "--device", "cpu"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert {"config.json", "model.safetensors", "generation_config.json"} <= {
        p.name for p in (tmp_path / "merged").iterdir()
    }
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    done = subprocess.run(
        [*cmd, "-o", str(tmp_path / "mine"), "--device", "cpu"], capture_output=True, text=True
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [
        line for line in done.stderr.splitlines() if line.startswith("error:")
    ] == done.stderr.strip().splitlines()[-1:]
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
