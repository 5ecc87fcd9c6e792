"""`TrainConfig`: every training setting and its default, in one place.

Recipes (`pipelines/*.yaml`, section `train`), hivellm expert manifests, `--vram` presets and CLI
flags only fill this dataclass (see `hive_train.config_sources`); nothing else holds a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass

from hive_core.errors import ConfigError
from hive_core.settings import check_value, setting, specs

ADAPTERS = ("dora", "lora", "ia3")
QUANTS = ("nf4", "none")
SCHEDULERS = ("cosine", "linear", "constant")
ATTENTION = ("auto", "flex", "varlen", "sdpa")
DTYPES = ("auto", "float32", "bfloat16")
VRAM_TIERS = ("auto", "8", "12", "16", "24", "80")
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
    gradient_checkpointing: bool = setting(False, help="Recompute activations in backward.")
    compile: bool = setting(False, help="torch.compile each decoder layer.")
    # replay each step's forward and backward as one CUDA graph (hive_train/cuda_graphs.py);
    # None: wherever it applies (CUDA, varlen attention, no checkpointing; `cuda_graphs.graph_eligibility`)
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
    vram: str | None = setting(  # None = no preset
        None, help="GPU memory preset in GB; auto reads free memory.", choices=VRAM_TIERS, int_as_str=True
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


# --vram presets for Qwen3-0.6B-sized models at seq 2048: rows per micro-batch, gradient
# checkpointing, and the largest adapter rank that tier takes. Rows per optimizer step are kept
# (accumulation absorbs the change). On the fast path a step is bound by per-micro-batch launch
# overhead, so a tier keeps micro-batches large and pays for memory with checkpointing rather than
# with more, smaller micro-batches (measured on an H100, BENCHMARKS.md: 8 rows with checkpointing
# peak at ~4 GB, without it at ~25 GB). The 8 GB tier also keeps the base weights 4-bit.
VRAM_PRESETS: dict[str, dict] = {
    "8": {"batch_size": 8, "gradient_checkpointing": True, "max_rank": 8, "keep_4bit": True},
    "12": {"batch_size": 16, "gradient_checkpointing": True, "max_rank": 16},
    "16": {"batch_size": 16, "gradient_checkpointing": True, "max_rank": 16},
    "24": {"batch_size": 16, "gradient_checkpointing": True, "max_rank": 32},
    "80": {"batch_size": 16, "gradient_checkpointing": False, "max_rank": 64},
}


def auto_vram_tier(free_gib: float | None) -> str | None:
    """The largest preset that fits in `free_gib` of free GPU memory (None without a GPU).

    A card sold as N GB reports a little less (a 16 GB card: ~15.6 GiB total, less free), and each
    preset already keeps a margin under its size, so a tier is taken with 1 GiB of slack.
    """
    if free_gib is None:
        return None
    fitting = [tier for tier in VRAM_PRESETS if int(tier) <= free_gib + 1.0]
    return max(fitting, key=int) if fitting else "8"


def apply_vram_preset(cfg: TrainConfig, tier: str, explicit: set[str]) -> tuple[TrainConfig, list[str]]:
    """Apply a `--vram` preset, leaving alone the fields set explicitly by flags.

    Rows per optimizer step stay what the recipe asked for: the micro-batch shrinks and gradient
    accumulation grows. Returns the new config and human-readable notes of what changed.
    """
    preset = VRAM_PRESETS[str(tier)]
    notes: list[str] = []
    cfg = dataclasses.replace(cfg)
    rows_per_step = cfg.batch_size * cfg.grad_accum
    if "batch_size" not in explicit and cfg.tokens_per_micro is None:
        micro = min(preset["batch_size"], rows_per_step)
        if micro != cfg.batch_size:
            cfg.batch_size = micro
            if "grad_accum" not in explicit:
                cfg.grad_accum = max(1, math.ceil(rows_per_step / micro))
            notes.append(f"micro-batch {cfg.batch_size} rows x {cfg.grad_accum} accumulation")
    if (
        "gradient_checkpointing" not in explicit
        and cfg.gradient_checkpointing != preset["gradient_checkpointing"]
    ):
        cfg.gradient_checkpointing = preset["gradient_checkpointing"]
        notes.append(f"gradient checkpointing {'on' if cfg.gradient_checkpointing else 'off'}")
    if "keep_4bit" not in explicit and preset.get("keep_4bit", False) != cfg.keep_4bit:
        cfg.keep_4bit = preset.get("keep_4bit", False)
        notes.append("base weights kept 4-bit" if cfg.keep_4bit else "base weights dequantized once")
    if "rank" not in explicit and cfg.rank > preset["max_rank"]:
        notes.append(f"rank {cfg.rank} -> {preset['max_rank']} (alpha/rank kept)")
        if "alpha" not in explicit:
            cfg.alpha = cfg.alpha * preset["max_rank"] / cfg.rank
        cfg.rank = preset["max_rank"]
    return cfg, notes


def next_lower_tier(tier: str | None) -> str | None:
    tiers = sorted(VRAM_PRESETS, key=int)
    if tier is None or tier not in tiers:
        return None
    index = tiers.index(tier)
    return tiers[index - 1] if index > 0 else None


def oom_message(step: int, tier: str | None, total_gib: float | None = None) -> str:
    """The one-line advice printed when CUDA runs out of memory."""
    where = f"at step {step}" if step else "before the first step"
    size = f" on a {total_gib:.0f} GB GPU" if total_gib else ""
    lower = next_lower_tier(tier)
    if tier is None:
        fit = auto_vram_tier(total_gib) if total_gib else "8"
        advice = f"try --vram {fit} (or a smaller --batch-size / --tokens-per-micro)"
    elif lower is not None:
        advice = f"try --vram {lower}"
    else:
        advice = "this is the smallest --vram tier; lower --rank, --seq (re-pack) or --tokens-per-micro"
    preset = f" with --vram {tier}" if tier else ""
    return f"CUDA out of memory {where}{preset}{size}; {advice}"
