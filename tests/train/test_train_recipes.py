"""Recipes in pipelines/, the shared recipe loader, hivellm manifests and the --vram plan applied to them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hive_core.errors import ConfigError
from hive_core.recipe import SECTIONS, check_keys, load_recipe
from hive_train.config import TrainConfig, apply_vram_plan, largest_tier, tier_bytes
from hive_train.config_sources import load_hivellm_manifest, resolve, resolve_config
from hive_train.memory_plan import GB, usable_bytes
from hive_train.model import ModelInfo

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


# Qwen3-0.6B's shapes (what the recipes train), from its config.json
QWEN3_06B = ModelInfo(
    name="Qwen/Qwen3-0.6B", vocab_size=151936, max_positions=40960, layers=28, hidden=1024, heads=16,
    kv_heads=8, head_dim=128, intermediate=3072, eos_ids=(151645,),
)  # fmt: skip


def planned(cfg: TrainConfig, tier: str, explicit=frozenset()):
    cfg = TrainConfig(**{**cfg.to_dict(), "seq": 2048})
    return apply_vram_plan(
        cfg, QWEN3_06B, tier=tier, budget_bytes=usable_bytes(tier_bytes(tier)), explicit=explicit
    )


def test_vram_plans_keep_rows_per_step_and_apply_the_tier_rules():
    cfg = TrainConfig(batch_size=16, grad_accum=4, rank=20, alpha=40)
    small, plan, notes = planned(cfg, "8")
    assert small.batch_size * small.grad_accum == 64 and small.batch_size < 16
    assert (small.batch_size, small.checkpoint_layers, small.loss_chunk) == (
        plan.micro_rows,
        plan.checkpoint_layers,
        plan.loss_chunk,
    )
    assert plan.fits and plan.peak_bytes <= usable_bytes(8 * GB)
    assert small.rank == 8 and small.alpha == 16  # alpha/rank kept
    assert small.keep_4bit and "base weights kept 4-bit" in notes
    big, plan, _ = planned(cfg, "80")
    assert (big.batch_size, big.grad_accum, big.checkpoint_layers) == (16, 4, 0) and big.rank == 20
    assert not big.keep_4bit  # only the smallest tier keeps the base weights 4-bit
    # explicit fields stay; the plan works around them
    mine, plan, _ = planned(cfg, "8", explicit={"rank", "batch_size"})
    assert mine.rank == 20 and mine.batch_size == 16 and plan.micro_rows == 16
    assert mine.checkpoint_layers == plan.checkpoint_layers > 0  # 16 rows need checkpointing at 8 GB
    pinned, plan, notes = planned(cfg, "8", explicit={"batch_size", "checkpoint_layers", "loss_chunk"})
    assert (pinned.batch_size, pinned.checkpoint_layers, pinned.loss_chunk) == (16, None, 4096)
    assert not plan.fits and any(n.startswith("warning: predicted peak") for n in notes)
    everything, _, _ = planned(
        TrainConfig(gradient_checkpointing=True), "12", explicit={"gradient_checkpointing"}
    )
    assert everything.checkpoint_layers is None and everything.checkpointed_layers(28) == 28


def test_vram_tiers_and_resolving(tmp_path):
    assert largest_tier(None) is None
    assert (
        largest_tier(79.1 * GB) == "80"
        and largest_tier(23.4 * GB) == "24"
        and largest_tier(15.3 * GB) == "16"
    )
    assert largest_tier(5.0 * GB) == "8"
    assert TrainConfig().vram == "auto"  # planned for the free memory, nothing on a CPU
    # the plan comes with the shards' seq (hive_train.setup); resolving only records the tier and
    # which fields the user gave
    got = resolve(PIPELINES / "sql-postgres.yaml", {"vram": "12", "rank": 8})
    assert got.cfg.vram == "12" and (got.cfg.batch_size, got.cfg.grad_accum) == (16, 4)
    assert got.explicit == {"vram", "rank"} and got.notes == []
    resumed = resolve(None, {}, recorded={"vram": "12", "batch_size": 2, "grad_accum": 32})
    assert resumed.cfg.batch_size == 2 and "loss_chunk" in resumed.explicit  # a resume changes nothing
    # a recipe may turn planning off, and so reads a run recorded before plans existed
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  vram: null\n", encoding="utf-8")
    assert resolve_config(recipe, {})[0].vram is None


def test_a_recipe_cannot_allow_remote_code(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  trust_remote_code: true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="pass --trust-remote-code"):
        resolve_config(recipe, {})
    cfg, _ = resolve_config(None, {"trust_remote_code": True})  # the flag itself works
    assert cfg.trust_remote_code
