"""Fold a run's adapter into plain weights; export the result as a Hugging Face model directory.

At inference an adapter's extra work is constant: DoRA's magnitude m and the row norm of
W + s·BA depend only on the weights, so each adapted linear layer is exactly the plain layer

    W' = (m / ||W + s·B·A||) ⊙ (W + s·B·A)        (norm over the input axis: one per output row,
                                                   `torch.linalg.norm(W + s·BA, dim=1)` as peft does)

and LoRA is W' = W + s·B·A, IA3 W' = l ⊙ W (per output row, or per input column for feed-forward
layers). W is the base weight the adapter was trained against: for an NF4 run, the NF4 weights
dequantized, not the original dense ones. Every other 4-bit layer is dequantized likewise, so the
folded model computes what the trained one computed, with no adapter or quantization left in it.
Folding runs in float32; a bf16 model is a cast of the folded float32 weights.

`load_folded(run_dir)` gives that plain transformers model for a run; `export_merged(run_dir, out)`
writes it (bf16) with the run's tokenizer and decoding settings, loadable by
`AutoModelForCausalLM.from_pretrained` without peft or bitsandbytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from hive_core.atomic import (
    Layout,
    atomic_file,
    check_replaceable,
    commit_dir,
    new_staging_dir,
    remove_stale,
    write_marker,
)
from hive_core.errors import ConfigError, TrainError
from hive_core.tokenizer import TOKENIZER_FILES
from hive_train.config import TrainConfig

# What export_merged writes at the top level of an export directory (`check_replaceable`).
EXPORT_LAYOUT = Layout(
    kind="export",
    names=(
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model-*-of-*.safetensors",
        "model.safetensors.index.json",
        *TOKENIZER_FILES,
        "hive_export.json",
    ),
)
EXPORT_INFO = "hive_export.json"


@dataclass
class FoldedModel:
    """A run's model with its adapter folded in: a plain `transformers` model (eval mode, no
    gradients), the run's tokenizer, its resolved training config and where things came from."""

    model: object
    tokenizer: object
    config: TrainConfig
    run_dir: Path
    base_model: str  # the base model as it was loaded (hub id or local directory)
    adapter: str | None  # "dora", "lora", "ia3"; None when the run has no adapter directory
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------ the run


def run_config(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict]:
    """(TrainConfig, the whole config.yaml) of a run directory written by hive-train.

    The `train` section is read through `resolve_config` (validated, as a resume reads it).
    Raises `TrainError` naming the file when the run directory or its config is missing or damaged."""
    from hive_train.config_sources import resolve_config

    path = Path(run_dir) / "config.yaml"
    if not Path(run_dir).is_dir():
        raise TrainError("no such run directory", file=str(run_dir))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainError("not a hive-train run directory (no config.yaml)", file=str(run_dir)) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise TrainError(f"cannot read the run's config ({type(err).__name__})", file=str(path)) from None
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise TrainError("not a hive-train run config (no train section)", file=str(path))
    cfg, _ = resolve_config(None, {}, recorded=data["train"], recorded_source=str(path))
    return cfg, data


def base_model_source(cfg: TrainConfig, recorded: dict, run_dir: str | os.PathLike) -> str:
    """Where to load the run's base model from: the model it was trained with as recorded (a hub id,
    or a local directory, also relative to where training ran), else the resolved path of the
    fingerprinted base weights; `TrainError` when none of them exists."""
    from hive_train.model import is_hub_id

    name = cfg.model
    if Path(name).is_dir() or is_hub_id(name):
        return name
    fingerprint = recorded.get("base_model") or {}
    resolved = fingerprint.get("path")
    if resolved and Path(resolved).is_dir():
        return resolved
    raise TrainError(
        f"cannot find the run's base model {name!r} (recorded in config.yaml): no such directory",
        file=str(Path(run_dir) / "config.yaml"),
    )


def check_base_weights(name: str, recorded: dict, run_dir: str | os.PathLike) -> None:
    """Refuse base weights other than those the adapter was trained on (when the run recorded a
    fingerprint and the weights are local)."""
    from hive_train.model import model_fingerprint

    expected = (recorded.get("base_model") or {}).get("sha256")
    if not expected:
        return
    found = model_fingerprint(name)
    if found is not None and found["sha256"] != expected:
        raise TrainError(
            f"the base model's weights differ from those this run was trained on ({name}: fingerprint "
            f"{found['sha256'][:12]}, the run recorded {expected[:12]})",
            file=str(Path(run_dir) / "config.yaml"),
        )


# ------------------------------------------------------------------------------------ folding


def _dense(module) -> torch.Tensor:
    """A linear layer's weight as float32, dequantized when it is 4-bit (as peft's DoRA reads it)."""
    from peft.utils.integrations import dequantize_module_weight

    return dequantize_module_weight(module).detach().to(torch.float32)


def _fold_layer(module, adapter: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) in float32 of one peft-wrapped linear layer with `adapter` folded in."""
    from peft.tuners.ia3 import IA3Layer
    from peft.tuners.lora import LoraLayer

    base = module.get_base_layer()
    if getattr(module, "fan_in_fan_out", False):
        raise TrainError(f"cannot fold an adapter on a {type(base).__name__} (fan_in_fan_out) layer")
    weight = _dense(base)
    bias = None if getattr(base, "bias", None) is None else base.bias.detach().to(torch.float32)
    if isinstance(module, LoraLayer):
        if adapter not in module.lora_A:
            return weight, bias
        a = module.lora_A[adapter].weight.detach().to(torch.float32)
        b = module.lora_B[adapter].weight.detach().to(torch.float32)
        updated = weight + module.scaling[adapter] * (b @ a)
        if module.use_dora.get(adapter, False):
            magnitude = module.lora_magnitude_vector[adapter].weight.detach().to(torch.float32)
            norm = torch.linalg.norm(updated, dim=1)  # one per output row, as peft's DoRA
            updated = (magnitude / norm)[:, None] * updated
        return updated, bias  # bias is outside DoRA's scaling and LoRA's update
    if isinstance(module, IA3Layer):
        if adapter not in module.ia3_l:
            return weight, bias
        scale = module.ia3_l[adapter].detach().to(torch.float32)
        if module.is_feedforward:  # scales the input: (1, in)
            return weight * scale.reshape(1, -1), bias
        scale = scale.reshape(-1)  # scales the output, bias included: (out,)
        return weight * scale[:, None], None if bias is None else bias * scale
    raise TrainError(f"cannot fold a {type(module).__name__} adapter layer")


def folded_weights(peft_model) -> dict[str, torch.Tensor]:
    """Plain float32 tensors (`"NAME.weight"`, `"NAME.bias"`, NAME as in the base model) for every
    linear layer the adapter wraps, folded (module doc), and every other 4-bit layer, dequantized.
    Layers that neither wraps nor quantizes are left out: the dense base already holds them."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapters = list(peft_model.active_adapters)
    if len(adapters) != 1:
        raise TrainError(f"cannot fold {len(adapters)} active adapters at once (need exactly one)")
    adapter = adapters[0]
    out: dict[str, torch.Tensor] = {}
    base = peft_model.get_base_model()
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, BaseTunerLayer):
                weight, bias = _fold_layer(module, adapter)
            elif type(module).__name__ in ("Linear4bit", "Linear8bitLt") and not name.endswith(".base_layer"):
                weight, bias = _dense(module), None
            else:
                continue
            out[f"{name}.weight"] = weight
            if bias is not None:
                out[f"{name}.bias"] = bias
    return out


def fold_dora(peft_model, plain=None):
    """The plain `transformers` model computing what `peft_model` computes, adapter folded in.

    `plain` is a dense float32 copy of the base model (same architecture, no adapter, no
    quantization) that receives the folded weights; None folds into `peft_model`'s own base after
    removing the adapter layers, which needs a base that is not quantized. DoRA, LoRA and IA3
    adapters fold; the result is in float32 (cast it for bf16)."""
    weights = folded_weights(peft_model)
    if plain is None:
        if any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in peft_model.modules()):
            raise TrainError("the base is quantized: pass a dense copy of it as `plain`")
        plain = peft_model.unload()
    params = dict(plain.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            target = params.get(name)
            if target is None or target.shape != tensor.shape:
                raise TrainError(f"the dense base has no tensor {name} of shape {tuple(tensor.shape)}")
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))
    return plain


def load_folded(
    run_dir: str | os.PathLike,
    *,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    attn_implementation: str = "sdpa",
) -> FoldedModel:
    """The run's base model with its adapter folded in (`fold_dora`), as a plain transformers model.

    The base is loaded through `hive_train.model.load_base` as the trainer loads it (hub ids and
    local directories alike; NF4 when the run was NF4), in float32, with the run's adapter through
    peft; a dense float32 copy of the base receives the folded weights. `dtype` defaults to bf16 on
    CUDA and float32 on CPU (the cast happens after folding). The model comes back in eval mode, with
    `attn_implementation` attention and the KV cache on. Raises `TrainError` for a run directory
    that lacks its config or adapter, or whose base weights changed since training."""
    from peft import PeftModel

    from hive_train.distributed import pick_device
    from hive_train.model import load_base, load_tokenizer

    run_dir = Path(run_dir)
    cfg, recorded = run_config(run_dir)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    name = base_model_source(cfg, recorded, run_dir)
    check_base_weights(name, recorded, run_dir)
    cfg = dataclasses.replace(cfg, model=name)
    if not (run_dir / "tokenizer").is_dir():
        raise TrainError("the run has no tokenizer directory", file=str(run_dir))
    tokenizer = load_tokenizer(str(run_dir / "tokenizer"))
    adapter_dir = run_dir / "adapter"
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TrainError(
            "the run has no adapter (adapter/adapter_config.json); has it finished?", file=str(run_dir)
        )
    base = load_base(cfg, dev, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    if cfg.quant == "none":
        model = fold_dora(peft_model)
    else:  # the dense copy that receives the folded weights: the same loader, without quantization
        plain = load_base(dataclasses.replace(cfg, quant="none"), dev, torch.float32)
        model = fold_dora(peft_model, plain)
    del peft_model, base
    model = prepare_for_inference(model, dtype, attn_implementation)
    return FoldedModel(
        model=model,
        tokenizer=tokenizer,
        config=cfg,
        run_dir=run_dir,
        base_model=name,
        adapter=cfg.adapter,
    )


def prepare_for_inference(model, dtype: torch.dtype, attn_implementation: str = "sdpa"):
    """Cast to `dtype`, switch to `attn_implementation` (the trainer's `hive_docs` attention is for
    packed rows) with the KV cache on, eval mode, no gradients."""
    model = model.to(dtype)
    model.set_attn_implementation(attn_implementation)
    model.config.use_cache = True
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


# ------------------------------------------------------------------------------------ export


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_output(run_dir: Path, out: Path, base: str) -> None:
    """The export must not replace the run, or anything that is not an export hive wrote."""
    real_out = Path(os.path.realpath(out))
    for src, noun in ((run_dir, "run directory"), (Path(base), "base model")):
        if not src.exists():
            continue
        real = Path(os.path.realpath(src))
        if real == real_out or real.is_relative_to(real_out):
            raise ConfigError(
                f"the {noun} {src} is inside this output; refusing to write there", file=str(out)
            )
    check_replaceable(out, EXPORT_LAYOUT, "replace")


def export_merged(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "auto",
) -> Path:
    """Write the run's model with its adapter folded in (`load_folded`: float32 fold, then cast to
    `dtype`) as a Hugging Face model directory `out_dir`: config.json and model.safetensors (no
    quantization config, loadable by `AutoModelForCausalLM.from_pretrained` without peft or
    bitsandbytes), the run's tokenizer, the run's generation_config.json (its decoding settings, eos
    and pad ids) and `hive_export.json` (where it came from).

    `out_dir` may be missing or empty, or an export hive wrote before (marker kind "export"): any
    other non-empty directory or file is refused with `ConfigError` before anything is loaded. The
    directory is built beside `out_dir` and swapped in whole, so an interruption leaves the old one
    or the new one. Returns `out_dir`."""
    run_dir, out = Path(run_dir), Path(out_dir)
    cfg, recorded = run_config(run_dir)
    _check_output(run_dir, out, cfg.model)
    remove_stale(out)
    folded = load_folded(run_dir, device=device, dtype=torch.float32)
    model = folded.model.to(dtype)
    staging = new_staging_dir(out)
    try:
        staging.chmod(0o777 & ~_umask())
        model.config.use_cache = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.save_pretrained(str(staging), safe_serialization=True)
        folded.tokenizer.save_pretrained(str(staging))
        run_generation = run_dir / "generation_config.json"
        if run_generation.is_file():  # the recipe's decoding settings replace the base model's
            shutil.copyfile(run_generation, staging / "generation_config.json")
        info = {
            "run_dir": str(run_dir.resolve()),
            "base_model": folded.base_model,
            "base_model_sha256": (recorded.get("base_model") or {}).get("sha256"),
            "adapter": cfg.adapter,
            "quant": cfg.quant,
            "adapter_sha256": _sha256(run_dir / "adapter" / "adapter_model.safetensors"),
            "dtype": str(dtype).removeprefix("torch."),
            "folded_in": "float32",
        }
        with atomic_file(staging / EXPORT_INFO, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(info, indent=2) + "\n")
        write_marker(staging, EXPORT_LAYOUT.kind)
        _check_output(run_dir, out, cfg.model)  # again: something may have appeared meanwhile
        commit_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
