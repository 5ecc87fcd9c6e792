"""`TrainConfig`: every training setting and its default, in one place.

Recipes (`pipelines/*.yaml`, section `train`), hivellm expert manifests, `--vram` presets and CLI
flags only fill this dataclass (see `hive_train.recipe`); nothing else holds a default.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from hive_core.errors import ConfigError

ADAPTERS = ("dora", "lora", "ia3")
QUANTS = ("nf4", "none")
SCHEDULERS = ("cosine", "linear", "constant")
ATTENTION = ("auto", "flex", "varlen", "sdpa")
DTYPES = ("auto", "float32", "bfloat16")
VRAM_TIERS = ("auto", "8", "12", "16", "24", "80")
QWEN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    # model and adapter
    model: str = "Qwen/Qwen3-0.6B"
    tokenizer: str | None = None  # default: the tokenizer named in the shards' manifest
    quant: str = "nf4"  # bitsandbytes NF4 with double quantization, or "none"
    adapter: str = "dora"
    rank: int = 12
    alpha: float = 24.0
    # 0 by default: with dropout DoRA runs a second full base matmul on the dropped-out input
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(QWEN_TARGETS))
    # batching: rows per micro-batch x micro-batches per step, or token budgets (which win when set)
    seq: int | None = None  # must equal the shards' seq; taken from the manifest when unset
    batch_size: int = 16
    grad_accum: int = 4
    tokens_per_micro: int | None = None
    tokens_per_step: int | None = None
    # optimisation
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    min_lr_ratio: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    # runtime
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto: bfloat16 autocast on CUDA, float32 on CPU
    attention: str = "auto"  # auto: flex on CUDA, SDPA with a block-diagonal mask on CPU
    gradient_checkpointing: bool = False
    compile: bool = False
    # replay each step's forward and backward as one CUDA graph (hive_train/graphs.py);
    # None: wherever it applies (CUDA, varlen attention, no checkpointing; `graphs.graph_eligibility`)
    cuda_graphs: bool | None = None
    # fast adapter path (hive_train/fast.py): same math as peft's DoRA/LoRA layers, far fewer kernels
    fast: bool = True
    # keep the base weights 4-bit in memory and dequantize per use (the 8 GB tier) instead of once
    keep_4bit: bool = False
    vram: str | None = None  # a --vram preset; None = no preset
    # a model or tokenizer that needs its own Python code (config `auto_map`) is refused unless True
    trust_remote_code: bool = False
    # cadence
    eval_every: int = 200
    save_every: int = 500
    log_every: int = 1
    keep_checkpoints: int = 2
    # decoding settings carried into the run directory for inference
    decoding: dict = field(default_factory=lambda: {"temperature": 0.7, "top_p": 0.8, "top_k": 20})

    def validate(self, sources: dict[str, dict] | None = None) -> TrainConfig:
        """Raise `ConfigError` for values no run could use; returns self.

        `sources` maps a field name (or `decoding.KEY`) to where its value came from, as `HiveError`
        location keywords (`{"file": "--lr"}`, or the recipe's file, line and column), so the error
        names the flag or the recipe line rather than `<input>`.
        """
        sources = sources or {}

        def bad(name: str, why: str, value=dataclasses.MISSING):
            value = getattr(self, name) if value is dataclasses.MISSING else value
            where = sources.get(name) or sources.get(name.split(".")[0]) or {}
            raise ConfigError(f"{name} {why} (got {value!r})", **where)

        for name, choices in (
            ("adapter", ADAPTERS),
            ("quant", QUANTS),
            ("lr_scheduler", SCHEDULERS),
            ("attention", ATTENTION),
            ("dtype", DTYPES),
        ):
            if getattr(self, name) not in choices:
                bad(name, f"must be one of {', '.join(choices)}")
        if self.vram is not None and str(self.vram) not in VRAM_TIERS:
            bad("vram", f"must be one of {', '.join(VRAM_TIERS)}")
        if not isinstance(self.model, str) or not self.model.strip():
            bad("model", "must be a hub id or a local directory")
        if self.tokenizer is not None and (not isinstance(self.tokenizer, str) or not self.tokenizer.strip()):
            bad("tokenizer", "must be a hub id or a local directory")
        if not isinstance(self.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            bad("device", "must be auto, cpu, cuda or cuda:N")
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL_INTS:
                continue
            if not _is_int(value) or not low <= value <= high:
                bad(name, f"must be an integer in [{low}, {high}]")
        for name, (low, high, low_open, high_open) in FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is None and name == "max_grad_norm":  # library callers: None = no clipping
                continue
            if (
                not _is_number(value)
                or value < low
                or value > high
                or (low_open and value == low)
                or (high_open and value == high)
            ):
                interval = f"{'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
                bad(name, f"must be a number in {interval}{FLOAT_NOTES.get(name, '')}")
        if (
            not isinstance(self.target_modules, list)
            or not self.target_modules
            or not all(isinstance(m, str) and re.fullmatch(r"[\w.\-]+", m) for m in self.target_modules)
        ):
            bad("target_modules", "must be a non-empty list of module names")
        for name in ("gradient_checkpointing", "compile", "fast", "keep_4bit", "trust_remote_code"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "must be true or false")
        if self.cuda_graphs is not None and not isinstance(self.cuda_graphs, bool):
            bad("cuda_graphs", "must be true, false or unset")
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


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}

# Ranges every run is held to (`TrainConfig.validate`). The upper bounds are far beyond any useful
# value and keep an absurd one (a typo, 1e30) from running: lr > 1 moves each adapter weight by
# about 1 per AdamW step, and DoRA's normalisation keeps the loss finite however large the adapter
# grows, so such a run would otherwise finish with garbage weights.
INT_RANGES = {
    "rank": (1, 4096),
    "batch_size": (1, 1_000_000),
    "grad_accum": (1, 1_000_000),
    "log_every": (1, 10**9),
    "keep_checkpoints": (1, 10**6),
    "eval_every": (0, 10**9),
    "save_every": (0, 10**9),
    "tokens_per_micro": (1, 10**9),
    "tokens_per_step": (1, 10**12),
    "max_steps": (1, 10_000_000),
    "seq": (1, 10**7),
    "seed": (0, 2**32 - 1),
}
OPTIONAL_INTS = ("tokens_per_micro", "tokens_per_step", "max_steps", "seq")
# name -> (low, high, low excluded, high excluded)
FLOAT_RANGES = {
    "alpha": (0.0, 1e6, True, False),
    "dropout": (0.0, 1.0, False, True),
    "epochs": (0.0, 10_000.0, True, False),
    "lr": (0.0, 1.0, True, False),
    "weight_decay": (0.0, 1.0, False, False),
    "warmup_ratio": (0.0, 1.0, False, True),
    "min_lr_ratio": (0.0, 1.0, False, False),
    "max_grad_norm": (0.0, 1e9, False, False),
}
FLOAT_NOTES = {"max_grad_norm": " (0 = no clipping)"}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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


def field_kind(name: str) -> str:
    """The value kind a field accepts: int, float, str, bool, list, dict (used to coerce flags and YAML)."""
    default = FIELDS[name].default
    if FIELDS[name].default_factory is not dataclasses.MISSING:
        default = FIELDS[name].default_factory()
    annotation = str(FIELDS[name].type)
    for kind in ("bool", "float", "int", "list", "dict"):
        if annotation.startswith(kind):
            return kind
    if default is not None and not isinstance(default, str):
        return type(default).__name__
    return "str"


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
