"""`TrainConfig`: every training setting and its default, in one place.

Recipes (`pipelines/*.yaml`, section `train`), hivellm expert manifests and CLI flags only fill
this dataclass (see `hive_train.config_sources`); nothing else holds a default. The `--vram` memory
plan (`apply_vram_plan`, made by `hive_train.setup` once the model's shapes and the shards' `seq`
are known) fills the batching and memory fields the user left alone.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass

from hive_core.errors import ConfigError
from hive_core.settings import check_value, setting, specs
from hive_train.memory_plan import GB, MemoryCosts, Plan, plan

ADAPTERS = ("dora", "lora", "ia3")
QUANTS = ("nf4", "none")
SCHEDULERS = ("cosine", "linear", "constant")
ATTENTION = ("auto", "flex", "varlen", "sdpa")
DTYPES = ("auto", "float32", "bfloat16")
TIERS = ("8", "12", "16", "24", "80")  # --vram sizes in GB (10**9 bytes), smallest first
VRAM_TIERS = ("auto", *TIERS)
SELECT_BY = ("ex", "val_loss")
QWEN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    """Every training setting. Each field's `setting(...)` holds its help text, choices or range and
    CLI flag (`hive_core.settings`): `hive-train --help`, YAML/flag coercion and `check` read them."""

    # model and adapter
    model: str = setting("Qwen/Qwen3-0.6B", help="Base model: hub id or local directory.")
    tokenizer: str | None = setting(
        None, help="Tokenizer to copy into the run.", default_text="the one the shards were packed with"
    )
    quant: str = setting("nf4", help="Base weights: bitsandbytes NF4 (double quant) or none.", choices=QUANTS)
    adapter: str = setting("dora", help="Adapter kind.", choices=ADAPTERS)
    rank: int = setting(12, help="Adapter rank.", low=1, high=4096)
    alpha: float = setting(24.0, help="LoRA/DoRA alpha.", low=0.0, high=1e6, low_open=True)
    # 0 by default: with dropout DoRA runs a second full base matmul on the dropped-out input
    dropout: float = setting(0.0, help="Adapter dropout.", low=0.0, high=1.0, high_open=True)
    target_modules: list[str] = setting(
        default_factory=lambda: list(QWEN_TARGETS), help="Comma-separated module names."
    )
    # batching: rows per micro-batch x micro-batches per step, or token budgets (which win when set)
    seq: int | None = setting(  # taken from the manifest when unset
        None, help="Expected sequence length; must equal the shards' (checked).", low=1, high=10**7
    )
    batch_size: int = setting(16, help="Rows per micro-batch.", low=1, high=1_000_000)
    grad_accum: int = setting(4, help="Micro-batches per optimizer step.", low=1, high=1_000_000)
    tokens_per_micro: int | None = setting(
        None, help="Build micro-batches by tokens instead of rows.", low=1, high=10**9
    )
    tokens_per_step: int | None = setting(
        None, help="Accumulate micro-batches until a step holds this many tokens.", low=1, high=10**12
    )
    # optimisation
    epochs: float = setting(
        1.0,
        help="Epochs over the train split (fractions allowed); with --resume, more extends the run.",
        low=0.0,
        high=10_000.0,
        low_open=True,
    )
    max_steps: int | None = setting(
        None,
        help="Optimizer steps; wins over --epochs; with --resume, more extends the run.",
        low=1,
        high=10_000_000,
    )
    lr: float = setting(2e-4, help="Peak learning rate.", low=0.0, high=1.0, low_open=True)
    weight_decay: float = setting(0.0, help="AdamW weight decay.", low=0.0, high=1.0)
    warmup_ratio: float = setting(
        0.03, help="Fraction of steps with linear warmup.", low=0.0, high=1.0, high_open=True
    )
    lr_scheduler: str = setting("cosine", help="Decay after warmup.", choices=SCHEDULERS)
    min_lr_ratio: float = setting(  # no flag: a recipe setting
        0.0, help="Learning rate at the end of the decay, as a fraction of lr.", low=0.0, high=1.0
    )
    # None: no clipping (library callers; a recipe or flag says 0)
    max_grad_norm: float | None = setting(
        1.0, help="Gradient clipping norm, 0 = off.", low=0.0, high=1e9, note=" (0 = no clipping)"
    )
    seed: int = setting(42, help="Seed for data order and adapter init.", low=0, high=2**32 - 1)
    # runtime
    device: str = setting("auto", help="auto, cpu, cuda or cuda:N.")
    dtype: str = setting(
        "auto", help="Compute dtype; auto = bf16 autocast on CUDA, fp32 on CPU.", choices=DTYPES
    )
    attention: str = setting(  # auto: flex on CUDA, SDPA with a block-diagonal mask on CPU
        "auto", help="Document-isolated attention backend.", choices=ATTENTION
    )
    gradient_checkpointing: bool = setting(
        False, help="Recompute every decoder layer's activations in backward (--checkpoint-layers: some)."
    )
    # None: all layers with gradient_checkpointing, else none (`checkpointed_layers`); --vram plans it
    checkpoint_layers: int | None = setting(
        None,
        help="Recompute the activations of the first N decoder layers in backward (CUDA graphs still "
        "apply); planned by --vram.",
        default_text="all with --gradient-checkpointing, else none",
        low=0,
        high=10**6,
    )
    # the next N layers after the checkpointed ones rebuild norm, SwiGLU and RoPE outputs in
    # backward instead of keeping them (hive_train/lean.py: about a third of a layer's memory)
    lean_layers: int | None = setting(
        None,
        help="Keep the next N decoder layers after the checkpointed ones lean: their norm, SwiGLU "
        "and RoPE outputs are rebuilt in backward (CUDA kernels only); planned by --vram.",
        default_text="none",
        low=0,
        high=10**6,
    )
    # the chunked LM-head loss holds chunk x vocab logits at once (bf16 on CUDA; more off it)
    loss_chunk: int = setting(
        4096,
        help="Loss positions whose logits (a row of vocabulary size each) the LM-head loss computes at "
        "once; planned by --vram.",
        low=1,
        high=10**7,
    )
    compile: bool = setting(False, help="torch.compile each decoder layer.")
    # replay each step's forward and backward as one CUDA graph (hive_train/cuda_graphs.py);
    # None: wherever it applies (CUDA, varlen attention, no checkpointing with dropout; `cuda_graphs.graph_eligibility`)
    cuda_graphs: bool | None = setting(
        None,
        help="Replay each step as one CUDA graph (default: wherever it applies; --cuda-graphs says why "
        "when it cannot).",
    )
    # fast adapter path (hive_train/fast_adapters.py): same math as peft's DoRA/LoRA layers, far fewer kernels
    fast: bool = setting(
        True,
        help="Fast adapter path: peft's DoRA/LoRA math with far fewer kernels; --no-fast runs peft's own "
        "layers.",
    )
    # keep the base weights 4-bit in memory and dequantize per use (the 8 GB tier) instead of once
    keep_4bit: bool = setting(
        False,
        off_flag="--dequantize-once",
        help="Keep NF4 base weights 4-bit and dequantize per use (least memory; the --vram 8 default) "
        "or dequantize them once to the compute dtype (fastest).",
    )
    # None (a recipe's `vram: null`, or a run recorded before plans): no plan, fields as given
    vram: str | None = setting(
        "auto",
        help="GPU memory to plan for, in GB; auto: the GPU's free memory (nothing on a CPU). The plan "
        "picks micro-batch rows (rows per step kept), checkpointed layers and loss chunk; a tier also "
        "caps this process at that much GPU memory.",
        choices=VRAM_TIERS,
        int_as_str=True,
        nullable=True,
    )
    # a model or tokenizer that needs its own Python code (config `auto_map`) is refused unless True
    trust_remote_code: bool = setting(
        False,
        flag_only=True,
        help="Allow a model or tokenizer that runs its own Python code (config auto_map); only this flag "
        "turns it on, never a recipe.",
    )
    # cadence
    eval_every: int = setting(
        200,
        help="Validation loss, and with --eval-data generation + EX, every N steps (and at the end); "
        "0 = end only.",
        low=0,
        high=10**9,
    )
    save_every: int = setting(
        500, help="Checkpoint every N steps (and at the end); 0 = end only.", low=0, high=10**9
    )
    log_every: int = setting(1, help="Write metrics every N steps.", low=1, high=10**9)
    keep_checkpoints: int = setting(2, help="Newest checkpoints kept.", low=1, high=10**6)
    # evaluation during training (`hive_eval.during_training`): the live adapter answers the first
    # `eval_rows` rows of `eval_data` greedily at every evaluation and they are scored (EX)
    eval_data: str | None = setting(
        None, help="Normalized dataset (e.g. val.jsonl) to generate from and score at every evaluation."
    )
    eval_rows: int = setting(
        200, help="Rows of --eval-data (the first N, a fixed subset) answered at each evaluation.", low=1,
        high=10**7,
    )  # fmt: skip
    eval_max_new_tokens: int = setting(
        256, help="Longest answer generated for --eval-data, in tokens.", low=1, high=10**6
    )
    # None: "ex" with eval_data, else "val_loss" (`selection`)
    select_by: str | None = setting(
        None,
        help="Metric that picks the adapter kept in best/: ex (higher is better) or val_loss (lower).",
        choices=SELECT_BY,
        default_text="ex with --eval-data, else val_loss",
    )
    # decoding settings carried into the run directory for inference (checked by `DECODING_RANGES`)
    decoding: dict = setting(
        default_factory=lambda: {"temperature": 0.7, "top_p": 0.8, "top_k": 20},
        help="Decoding settings written to generation_config.json (temperature, top_p, top_k, ...).",
    )

    def check(self, sources: dict[str, dict] | None = None) -> TrainConfig:
        """Raise `ConfigError` for values no run could use; returns self.

        `sources` maps a field name (or `decoding.KEY`) to where its value came from, as `HiveError`
        location keywords (`{"file": "--lr"}`, or the recipe's file, line and column), so the error
        names the flag or the recipe line rather than `<input>`. Choices, ranges and bool kinds come
        from the fields' settings (`hive_core.settings.check_value`); the checks below are the rest.
        """
        sources = sources or {}

        def bad(name: str, why: str, value=dataclasses.MISSING):
            value = getattr(self, name) if value is dataclasses.MISSING else value
            where = sources.get(name) or sources.get(name.split(".")[0]) or {}
            raise ConfigError(f"{name} {why} (got {value!r})", **where)

        for name, spec in specs(TrainConfig).items():
            why = check_value(spec, getattr(self, name))
            if why:
                bad(name, why)
        if not isinstance(self.model, str) or not self.model.strip():
            bad("model", "must be a hub id or a local directory")
        if self.tokenizer is not None and (not isinstance(self.tokenizer, str) or not self.tokenizer.strip()):
            bad("tokenizer", "must be a hub id or a local directory")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            bad("device", "must be auto, cpu, cuda or cuda:N")
        if (
            not isinstance(self.target_modules, list)
            or not self.target_modules
            or not all(isinstance(m, str) and re.fullmatch(r"[\w.\-]+", m) for m in self.target_modules)
        ):
            bad("target_modules", "must be a non-empty list of module names")
        if self.eval_data is not None:
            if not isinstance(self.eval_data, str) or not self.eval_data.strip():
                bad("eval_data", "must be the path of a dataset file")
            if not os.path.isfile(self.eval_data):
                bad("eval_data", "does not exist or is not a file")
        if self.select_by == "ex" and self.eval_data is None:
            bad("select_by", "ex needs eval_data (--eval-data): without it there is nothing to score")
        if not isinstance(self.decoding, dict):
            bad("decoding", "must be a mapping (temperature, top_p, top_k, ...)")
        for key, value in self.decoding.items():
            name = f"decoding.{key}"
            if key not in DECODING_RANGES:
                bad(name, f"is not a decoding setting (known: {', '.join(DECODING_RANGES)})", value)
            check, why = DECODING_RANGES[key]
            if not check(value):
                bad(name, f"must be {why}", value)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def checkpointed_layers(self, layers: int) -> int:
        """How many of a model's `layers` decoder layers recompute their activations in backward:
        `checkpoint_layers` (at most `layers`), else all with `gradient_checkpointing`, else none."""
        if self.checkpoint_layers is not None:
            return min(self.checkpoint_layers, layers)
        return layers if self.gradient_checkpointing else 0

    @property
    def selection(self) -> str:
        """The metric that picks best/: `select_by`, else "ex" when `eval_data` is set, else "val_loss"."""
        if self.select_by is not None:
            return self.select_by
        return "ex" if self.eval_data is not None else "val_loss"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# decoding key -> (check, what it must be): what `generation_config.json` may carry
DECODING_RANGES = {
    "temperature": (lambda v: _is_number(v) and 0 <= v <= 100, "a number in [0, 100] (0 = greedy)"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (lambda v: _is_int(v) and 0 <= v <= 10**6, "an integer in [0, 1000000] (0 = off)"),
    "min_p": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "repetition_penalty": (lambda v: _is_number(v) and 0 < v <= 100, "a number in (0, 100]"),
    "max_new_tokens": (lambda v: _is_int(v) and 1 <= v <= 10**7, "an integer in [1, 10000000]"),
    "do_sample": (lambda v: isinstance(v, bool), "true or false"),
}


# What a --vram tier decides besides the plan: the largest adapter rank it takes (alpha scales with
# it) and, at 8 GB, NF4 base weights kept 4-bit and dequantized per use (no dense bf16 copy: ~0.7 GB
# less at Qwen3-0.6B, ~7% slower).
TIER_RULES: dict[str, dict] = {
    "8": {"max_rank": 8, "keep_4bit": True},
    "12": {"max_rank": 16},
    "16": {"max_rank": 16},
    "24": {"max_rank": 32},
    "80": {"max_rank": 64},
}
# the fields a plan fills (rows per step kept), unless given explicitly
PLANNED = ("batch_size", "grad_accum", "checkpoint_layers", "lean_layers", "loss_chunk")


def tier_bytes(tier: str) -> int:
    """A tier's size in bytes: N GB = N * 10**9 (a card sold as N GB holds N GiB)."""
    return int(tier) * GB


def largest_tier(memory_bytes: float | None) -> str | None:
    """The largest tier no bigger than `memory_bytes` (with 1 GB of slack: a card reports a little
    less than it is sold as, less still free), "8" below that; None without a GPU (None)."""
    if memory_bytes is None:
        return None
    fitting = [tier for tier in TIERS if tier_bytes(tier) <= memory_bytes + GB]
    return fitting[-1] if fitting else TIERS[0]


def apply_vram_plan(
    cfg: TrainConfig,
    info,
    *,
    tier: str,
    budget_bytes: int,
    explicit: set[str] | frozenset[str],
    loss_tokens_per_row: int | None = None,
) -> tuple[TrainConfig, Plan, list[str]]:
    """Plan `cfg` for `budget_bytes` of GPU memory (`hive_train.memory_plan.plan`) and fill it in.

    `info` is the model's `ModelInfo`, `cfg.seq` must be set (the shards'). `tier`'s rules apply
    first (`TIER_RULES`: rank cap, 4-bit base weights), then the plan sets the `PLANNED` fields:
    rows per micro-batch and accumulation (rows per optimizer step kept), checkpointed layers and
    the loss chunk. Fields named in `explicit` (given by flags, or recorded by a resumed run) stay
    as they are and the plan works around them; token budgets (`tokens_per_micro`,
    `tokens_per_step`) keep the batching as given. `loss_tokens_per_row`: the most loss positions
    a row of the shards has (None: every token). Returns the new config, the plan and notes on
    what the tier's rules changed. Deterministic: the same inputs give the same config.
    """
    if cfg.seq is None:
        raise ValueError("apply_vram_plan needs cfg.seq (the shards' sequence length)")
    cfg = dataclasses.replace(cfg)
    notes: list[str] = []
    rules = TIER_RULES[str(tier)]
    if "keep_4bit" not in explicit and rules.get("keep_4bit", False) != cfg.keep_4bit:
        cfg.keep_4bit = rules.get("keep_4bit", False)
        notes.append("base weights kept 4-bit" if cfg.keep_4bit else "base weights dequantized once")
    if "rank" not in explicit and cfg.rank > rules["max_rank"]:
        notes.append(f"rank {cfg.rank} -> {rules['max_rank']} (alpha/rank kept)")
        if "alpha" not in explicit:
            cfg.alpha = cfg.alpha * rules["max_rank"] / cfg.rank
        cfg.rank = rules["max_rank"]
    pinned: dict = {}
    if cfg.tokens_per_micro is not None:
        pinned["micro_tokens"] = cfg.tokens_per_micro
    elif cfg.tokens_per_step is not None or explicit & {"batch_size", "grad_accum"}:
        pinned["micro_rows"] = cfg.batch_size
    if explicit & {"checkpoint_layers", "gradient_checkpointing"}:
        pinned["checkpoint_layers"] = cfg.checkpointed_layers(info.layers)
    if "lean_layers" in explicit:
        pinned["lean_layers"] = cfg.lean_layers or 0
    if "loss_chunk" in explicit:
        pinned["loss_chunk"] = cfg.loss_chunk
    costs = MemoryCosts.from_model(
        info,
        cfg.rank,
        cfg.target_modules,
        cfg.keep_4bit,
        adapter=cfg.adapter,
        quant=cfg.quant,
        compute_bytes=4 if cfg.dtype == "float32" else 2,
    )
    chosen = plan(
        costs,
        budget_bytes,
        cfg.batch_size * cfg.grad_accum,
        cfg.seq,
        loss_tokens_per_row=loss_tokens_per_row,
        **pinned,
    )
    if "micro_rows" not in pinned and "micro_tokens" not in pinned:
        cfg.batch_size, cfg.grad_accum = chosen.micro_rows, chosen.grad_accum
    if "checkpoint_layers" not in pinned:
        cfg.checkpoint_layers = chosen.checkpoint_layers
    if "lean_layers" not in pinned:
        cfg.lean_layers = chosen.lean_layers
    if "loss_chunk" not in pinned:
        cfg.loss_chunk = chosen.loss_chunk
    if not chosen.fits:
        budgets = {name for name in ("tokens_per_micro", "tokens_per_step") if getattr(cfg, name) is not None}
        given = sorted(({*explicit} & {*PLANNED, "gradient_checkpointing"}) | budgets)
        why = f"with {', '.join(given)} as given" if given else "even at its smallest"
        notes.append(
            f"warning: predicted peak {chosen.peak_bytes / GB:.1f} GB is over the "
            f"{chosen.budget_bytes / GB:.1f} GB budget {why}"
        )
    return cfg, chosen, notes


def next_lower_tier(tier: str | None) -> str | None:
    if tier not in TIERS:
        return None
    index = TIERS.index(tier)
    return TIERS[index - 1] if index > 0 else None


def oom_message(step: int, tier: str | None, total_gib: float | None = None) -> str:
    """The one-line advice printed when CUDA runs out of memory."""
    where = f"at step {step}" if step else "before the first step"
    size = f" on a {total_gib:.0f} GB GPU" if total_gib else ""
    lower = next_lower_tier(tier)
    if tier not in TIERS:  # no plan, or one made for the free memory
        fit = largest_tier(total_gib * 2**30) if total_gib else "8"
        advice = f"try --vram {fit} (or a smaller --batch-size / --tokens-per-micro, or --checkpoint-layers)"
    elif lower is not None:
        advice = f"try --vram {lower}"
    else:
        advice = "this is the smallest --vram tier; lower --rank, --seq (re-pack) or --tokens-per-micro"
    preset = f" with --vram {tier}" if tier else ""
    return f"CUDA out of memory {where}{preset}{size}; {advice}"
