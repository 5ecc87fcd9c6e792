"""Recipes in pipelines/, the shared recipe loader, hivellm manifests and --vram presets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hive_core.errors import ConfigError
from hive_core.recipe import SECTIONS, check_keys, load_recipe
from hive_train.config import VRAM_PRESETS, TrainConfig, apply_vram_preset, auto_vram_tier
from hive_train.config_sources import load_hivellm_manifest, resolve_config

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
QKVO_UD = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]

EXPECTED = {
    "sql-postgres.yaml": dict(
        adapter="dora", rank=12, target_modules=QKVO_UD, batch_size=16, grad_accum=4, temp=0.1
    ),
    "typescript.yaml": dict(
        adapter="dora", rank=12, target_modules=QKVO_UD, batch_size=16, grad_accum=4, temp=0.4
    ),
    "cypher.yaml": dict(
        adapter="dora", rank=20, target_modules=QKVO_UD, batch_size=8, grad_accum=8, temp=0.35
    ),
    "json.yaml": dict(
        adapter="ia3",
        rank=None,
        target_modules=["k_proj", "v_proj", "down_proj"],
        batch_size=16,
        grad_accum=4,
        temp=0.2,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_recipe_loads_with_the_issue_values(name):
    recipe = load_recipe(PIPELINES / name)
    assert set(recipe.sections) == set(SECTIONS)
    cfg, notes = resolve_config(PIPELINES / name, {})
    want = EXPECTED[name]
    assert cfg.adapter == want["adapter"] and cfg.target_modules == want["target_modules"]
    if want["rank"]:
        assert cfg.rank == want["rank"]
    assert (cfg.batch_size, cfg.grad_accum) == (want["batch_size"], want["grad_accum"])
    assert cfg.decoding["temperature"] == want["temp"]
    assert cfg.quant == "nf4" and cfg.model == "Qwen/Qwen3-0.6B"
    assert notes == []
    assert recipe.section("pack")["seq"] == 2048


def test_flags_override_the_recipe():
    cfg, _ = resolve_config(
        PIPELINES / "cypher.yaml", {"rank": 4, "lr": 1e-3, "target_modules": "q_proj,v_proj"}
    )
    assert cfg.rank == 4 and cfg.lr == 1e-3 and cfg.target_modules == ["q_proj", "v_proj"]
    assert cfg.batch_size == 8  # untouched recipe values stay


def test_recipe_loader_locates_errors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("pack:\n  seq: 2048\ntrainn:\n  rank: 4\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}:3:1: unknown section 'trainn'")
    path.write_text("pack:\n  seq: [2048\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+:\d+: invalid YAML"):
        load_recipe(path)
    path.write_text("pack:\n  seq: 2048\n  sek: 1\n")
    with pytest.raises(ConfigError) as err:
        check_keys(load_recipe(path), "pack", {"seq"})
    assert str(err.value).startswith(f"{path}:3:3: unknown key 'sek' in section 'pack'")
    path.write_text("train: [1, 2]\n")
    with pytest.raises(ConfigError, match="section 'train' must be a mapping"):
        load_recipe(path)


def test_recipe_loader_is_safe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  model: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_recipe(path)


def test_run_config_yaml_reads_back_as_a_recipe(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "train:\n  rank: 8\n  seq: 96\n  decoding: {temperature: 0.3}\nshards: {path: /x}\nversions: {torch: '2'}\n"
    )
    cfg, _ = resolve_config(path, {})
    assert cfg.rank == 8 and cfg.seq == 96


HIVELLM = {
    "name": "expert-sql",
    "schema_version": "2.0",
    "training": {
        "config": {
            "method": "sft",
            "adapter_type": "dora",
            "use_unsloth": True,
            "_comment": "comments are skipped silently",
            "rank": 12,
            "alpha": 24,
            "dropout": 0.1,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
            "epochs": 1.5,
            "learning_rate": 5e-5,
            "batch_size": 2,
            "gradient_accumulation_steps": 45,
            "warmup_ratio": 0.1,
            "lr_scheduler": "cosine",
            "max_seq_length": 1024,
            "optim": "adamw_bnb_8bit",
        },
        "decoding": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "use_grammar": True},
    },
}


def test_hivellm_manifest_is_honoured_and_ignored_keys_warn_once(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(HIVELLM))
    values, warnings = load_hivellm_manifest(path)
    assert values["rank"] == 12 and values["alpha"] == 24.0 and values["dropout"] == 0.1
    assert values["epochs"] == 1.5 and values["lr"] == 5e-5 and values["seq"] == 1024
    assert (values["batch_size"], values["grad_accum"]) == (2, 45)
    assert values["warmup_ratio"] == 0.1 and values["lr_scheduler"] == "cosine"
    assert values["decoding"] == {"temperature": 0.7, "top_p": 0.8, "top_k": 20}
    ignored = sorted(w.split(": ")[1].split(" ")[0] for w in warnings)
    assert ignored == [
        "training.config.method",
        "training.config.optim",
        "training.config.use_unsloth",
        "training.decoding.use_grammar",
    ]
    cfg, notes = resolve_config(path, {"epochs": 1})
    assert cfg.epochs == 1.0 and cfg.rank == 12 and len(notes) == 4


def test_hivellm_manifest_errors(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"schema_version": "1.0", "training": {}}))
    with pytest.raises(ConfigError, match="schema 1.0"):
        load_hivellm_manifest(path)
    path.write_text('{"schema_version": "2.0",\n "training": {"config": {"rank": "x"}}')
    with pytest.raises(ConfigError, match=r"invalid JSON"):
        load_hivellm_manifest(path)
    path.write_text(
        json.dumps({"schema_version": "2.0", "training": {"config": {"lr_scheduler": "polynomial"}}})
    )
    with pytest.raises(ConfigError, match="lr_scheduler"):
        resolve_config(path, {})


def test_vram_presets_shrink_micro_batches_and_keep_rows_per_step():
    cfg = TrainConfig(batch_size=16, grad_accum=4, rank=20, alpha=40)
    small, notes = apply_vram_preset(cfg, "8", explicit=set())
    assert small.batch_size == VRAM_PRESETS["8"]["batch_size"]
    assert small.batch_size * small.grad_accum == 64
    assert small.gradient_checkpointing and small.rank == 8 and small.alpha == 16  # alpha/rank kept
    assert notes
    big, _ = apply_vram_preset(cfg, "80", explicit=set())
    assert big.batch_size == 16 and big.grad_accum == 4 and not big.gradient_checkpointing and big.rank == 20
    assert small.keep_4bit and not big.keep_4bit  # only the smallest tier keeps the base weights 4-bit
    mine, _ = apply_vram_preset(cfg, "8", explicit={"rank", "batch_size"})
    assert mine.rank == 20 and mine.batch_size == 16


def test_vram_auto_and_flags(tmp_path):
    assert auto_vram_tier(None) is None
    assert auto_vram_tier(79.1) == "80" and auto_vram_tier(23.4) == "24" and auto_vram_tier(15.3) == "16"
    assert auto_vram_tier(5.0) == "8"
    cfg, notes = resolve_config(PIPELINES / "sql-postgres.yaml", {"vram": "12"})
    assert cfg.vram == "12" and cfg.gradient_checkpointing and cfg.batch_size * cfg.grad_accum == 64
    assert notes and notes[0].startswith("--vram 12")
    cfg, notes = resolve_config(None, {"vram": "auto"}, free_gib=None)
    assert cfg.batch_size == 16 and "no GPU" in notes[0]


def test_a_recipe_cannot_allow_remote_code(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  trust_remote_code: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="pass --trust-remote-code"):
        resolve_config(recipe, {})
    cfg, _ = resolve_config(None, {"trust_remote_code": True})  # the flag itself works
    assert cfg.trust_remote_code
