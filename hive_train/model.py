"""Base model, quantization and adapters; the checks that shards, tokenizer and model fit together.

`load_model` gives a peft model whose base is loaded with `hive_docs` attention (never eager),
optionally quantized to bitsandbytes NF4 (double quantization, compute in the training dtype), with
a DoRA, LoRA or IA3 adapter. Adapter weights are kept in float32 (master weights) whatever the
compute dtype; bf16 comes from autocast on CUDA.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from hive_core import tokenizer as hive_tokenizer
from hive_core.errors import TrainError
from hive_core.tokenizer import has_tokenizer_files, tokenizer_info
from hive_data.shards import ShardManifest
from hive_train import attention
from hive_train.config import MLP_MODULES, TrainConfig


@dataclass
class ModelInfo:
    """What the checks, the FLOP count and the memory plan (`hive_train.memory_plan`) need from a
    model's config, read without its weights."""

    name: str
    vocab_size: int
    max_positions: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eos_ids: tuple[int, ...]
    tied_embeddings: bool = True  # the LM head is the input embedding matrix (one copy in memory)

    @property
    def decoder_linear_params(self) -> int:
        """Weights of the decoder's linear layers (attention projections and the gated MLP)."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp)


REMOTE_CODE = (
    "needs to run its own Python code (auto_map); refused (pass --trust-remote-code if you trust it)"
)


def _remote_code_refused(err: Exception) -> bool:
    return "trust_remote_code" in str(err)


# ---- the hub: fail fast when it cannot be reached ----------------------------------------------
# Offline, transformers retries the hub for half a minute or more before it says a file is not
# cached. A hub id that is not a local directory is therefore first looked up in the local cache
# only; the network is tried only when HF_HUB_OFFLINE is unset and a short connection probe to the
# hub (or the proxy) succeeds.
HUB_PROBE_TIMEOUT_S = 1.5
_hub_state: dict[str, bool] = {}


def _hub_address() -> tuple[str, int]:
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        if os.environ.get(var):
            url = urlparse(os.environ[var] if "://" in os.environ[var] else f"http://{os.environ[var]}")
            return url.hostname or "", url.port or 80
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def hub_offline() -> bool:
    """True when the hub cannot be used: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, or a
    TCP connection to the hub's host (or the HTTPS proxy) does not open within
    `HUB_PROBE_TIMEOUT_S`. Probed once per process."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    if "offline" not in _hub_state:
        host, port = _hub_address()
        reached: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
                reached.append(True)
            except OSError:
                pass

        thread = threading.Thread(target=probe, daemon=True)  # name resolution ignores socket timeouts
        thread.start()
        thread.join(HUB_PROBE_TIMEOUT_S)
        _hub_state["offline"] = not reached
    return _hub_state["offline"]


def is_hub_id(name: str) -> bool:
    """A name that is not a local path and reads as `org/name` or `name`."""
    return (
        not Path(name).exists()
        and not name.startswith((".", "/", "~"))
        and name.count("/") <= 1
        and "\\" not in name
    )


def _hub_kwargs(name: str) -> dict:
    """`local_files_only=True` for a hub id while the hub cannot be reached."""
    return {"local_files_only": True} if is_hub_id(name) and hub_offline() else {}


def _not_found(name: str, what: str) -> TrainError | None:
    """The one-line error for a `what` (model, tokenizer) that is neither local nor reachable."""
    if not Path(name).exists() and not is_hub_id(name):
        return TrainError(f"cannot load {what}: no such directory", file=name)
    if is_hub_id(name) and hub_offline():
        return TrainError(
            f"cannot load {what}: not a local directory, not in the hub cache, and the hub cannot be "
            f"reached (offline); download it while online (`hf download {name}`) or pass a local "
            "directory",
            file=name,
        )
    return None


def read_model_info(name: str, trust_remote_code: bool = False) -> ModelInfo:
    """Passing `trust_remote_code=False` explicitly also keeps transformers from asking on stdin."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **_hub_kwargs(name))
    except (OSError, ValueError) as err:
        if _remote_code_refused(err):
            raise TrainError(f"model {REMOTE_CODE}", file=name) from None
        missing = _not_found(name, "model config")
        if missing is not None:
            raise missing from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainError(f"cannot load model config ({first})", file=name) from None
    config = getattr(config, "text_config", None) or config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    eos = config.eos_token_id
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (int(eos),))
    return ModelInfo(
        name=name,
        vocab_size=int(config.vocab_size),
        max_positions=int(config.max_position_embeddings),
        layers=int(config.num_hidden_layers),
        hidden=int(config.hidden_size),
        heads=int(heads),
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim),
        intermediate=int(config.intermediate_size),
        eos_ids=eos_ids,
        tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
    )


def check_fit(
    info: ModelInfo,
    manifest: ShardManifest,
    *,
    seq: int,
    manifest_path: str,
    max_token_id: int | None = None,
    tokenizer=None,
    tokenizer_source: str | None = None,
    tokenizer_sha256: str | None = None,
) -> list[str]:
    """Raise `TrainError` when shards, tokenizer and model cannot train together; return warnings."""
    notes: list[str] = []
    if seq > info.max_positions:
        raise TrainError(
            f"seq {seq} is beyond the model's {info.max_positions} positions (max_position_embeddings); "
            "re-pack with a smaller --seq",
            file=manifest_path,
        )
    tok = manifest.tokenizer
    packed_with = str(tok.name_or_path) if tok.given("name_or_path") else "?"
    for key in ("vocab_size", "pad_id", "eos_id"):
        value = getattr(tok, key)
        limit = info.vocab_size if key != "vocab_size" else info.vocab_size + 1
        if isinstance(value, int) and value >= limit:
            what = "vocabulary size" if key == "vocab_size" else key
            raise TrainError(
                f"the shards' tokenizer {what} {value} does not fit the model's {info.vocab_size} embeddings "
                f"({packed_with} vs {info.name})",
                file=manifest_path,
            )
    if max_token_id is not None and max_token_id >= info.vocab_size:
        raise TrainError(
            f"the shards use token id {max_token_id} but the model has only {info.vocab_size} embeddings",
            file=manifest_path,
        )
    eos = tok.eos_id
    if isinstance(eos, int) and info.eos_ids and eos not in info.eos_ids:
        notes.append(
            f"the shards end turns with token {eos}; the model's config says eos {list(info.eos_ids)}"
        )
    if tokenizer is not None:
        mine = {
            "vocab_size": len(tokenizer),
            "pad_id": tokenizer.pad_token_id,
            "eos_id": tokenizer.eos_token_id,
        }
        for key, value in mine.items():
            if tok.given(key) and getattr(tok, key) != value:
                raise TrainError(
                    f"tokenizer does not match the shards' tokenizer: {key} {value} here, "
                    f"{getattr(tok, key)} in the manifest (packed with {packed_with})",
                    file=tokenizer_source,
                )
        if tokenizer_sha256 and tok.sha256 and tokenizer_sha256 != tok.sha256:
            raise TrainError(
                "tokenizer content differs from the one the shards were packed with (sha256); "
                f"pass the packing tokenizer ({packed_with}) or re-pack",
                file=tokenizer_source,
            )
    return notes


def tokenizer_sha256(tokenizer) -> str | None:
    """The content hash `hive-data pack` records for a tokenizer (`hive_core.tokenizer.tokenizer_info`)."""
    return tokenizer_info(tokenizer).get("sha256")


def load_tokenizer(source: str, trust_remote_code: bool = False):
    if Path(source).is_dir() and not has_tokenizer_files(source):
        raise TrainError("no tokenizer files in this directory", file=source)
    try:
        return hive_tokenizer.load_tokenizer(source, trust_remote_code, **_hub_kwargs(source))
    except hive_tokenizer.TokenizerLoadError as err:
        if err.remote_code:
            raise TrainError(f"tokenizer {REMOTE_CODE}", file=source) from None
        missing = _not_found(source, "tokenizer")
        if missing is not None:
            raise missing from None
        cause = str(err.cause).strip()
        first = cause.splitlines()[0] if cause else type(err.cause).__name__
        raise TrainError(f"cannot load tokenizer ({first})", file=source) from None


# ---- the base model's fingerprint ------------------------------------------------------------
WEIGHT_FILES = ("config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
FULL_HASH_BYTES = 64 * 2**20  # files up to this size are hashed whole
SAMPLES, SAMPLE_BYTES = 16, 64 * 2**10  # larger ones: header + sizes + evenly spaced samples


def _model_directory(name: str) -> Path | None:
    """The local directory holding `name`'s files: itself, or the hub cache's snapshot of it."""
    if Path(name).is_dir():
        return Path(name)
    if not is_hub_id(name):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached (yet): the caller fingerprints after the download
        return None


def _hash_file(digest, path: Path, size: int) -> None:
    with open(path, "rb") as fh:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: fh.read(2**20), b""):
                digest.update(chunk)
            return
        if path.suffix == ".safetensors":  # the header names every tensor, its dtype, shape, offsets
            head = fh.read(8)
            digest.update(head)
            digest.update(fh.read(min(int.from_bytes(head, "little"), size)))
        for index in range(SAMPLES):
            fh.seek((size - SAMPLE_BYTES) * index // (SAMPLES - 1))
            digest.update(fh.read(SAMPLE_BYTES))


def model_fingerprint(name: str) -> dict | None:
    """What identifies the base weights at `name` (a directory, or a hub id's cached snapshot):
    sha256 over the config, the safetensors index and every weight file's name, size and content
    (whole up to 64 MiB; beyond, its safetensors header and 16 evenly spaced 64 KiB samples, so a
    0.6B model costs milliseconds). Modification times play no part. None when nothing is local."""
    directory = _model_directory(name)
    if directory is None:
        return None
    files = sorted({f for pattern in WEIGHT_FILES for f in directory.glob(pattern) if f.is_file()})
    if not any(f.name != "config.json" for f in files):
        return None
    digest = hashlib.sha256()
    total = 0
    try:
        for path in files:
            size = path.stat().st_size
            total += size
            digest.update(f"{path.name}\0{size}\0".encode())
            _hash_file(digest, path, size)
    except OSError as err:
        raise TrainError(
            f"cannot read the base model ({err.strerror})", file=str(err.filename or name)
        ) from None
    return {
        "name": name,
        "path": str(directory.resolve()),
        "files": len(files),
        "bytes": total,
        "sha256": digest.hexdigest(),
    }


def compute_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, cfg.dtype)


def peft_config(cfg: TrainConfig):
    from peft import IA3Config, LoraConfig

    if cfg.adapter == "ia3":
        return IA3Config(
            target_modules=list(cfg.target_modules),
            feedforward_modules=[m for m in cfg.target_modules if m in MLP_MODULES],
            task_type="CAUSAL_LM",
        )
    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        use_dora=cfg.adapter == "dora",
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_base(cfg: TrainConfig, device: torch.device, dtype: torch.dtype):
    """The frozen base model with `hive_docs` attention, quantized when `cfg.quant == "nf4"`."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.utils import logging as hf_logging

    attention.register()
    hf_logging.disable_progress_bar()  # hive-train shows its own progress
    kwargs: dict = {
        "dtype": dtype,
        "attn_implementation": attention.NAME,
        "device_map": {"": str(device)},
        "trust_remote_code": cfg.trust_remote_code,
    }
    if cfg.quant == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs, **_hub_kwargs(cfg.model))
    except (OSError, ValueError) as err:
        if _remote_code_refused(err):
            raise TrainError(f"model {REMOTE_CODE}", file=cfg.model) from None
        missing = _not_found(cfg.model, "model")
        if missing is not None:
            raise missing from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainError(f"cannot load model ({first})", file=cfg.model) from None
    if model.config._attn_implementation != attention.NAME:  # never silently eager
        raise TrainError(f"model came up with {model.config._attn_implementation} attention", file=cfg.model)
    model.config.use_cache = False
    for param in model.parameters():
        param.requires_grad_(False)
    keep_trainable_layout(model)
    return model


def keep_trainable_layout(model) -> None:
    """Stop bitsandbytes from repacking NF4 weights for CPU inference.

    On CPUs with AVX512-BF16, a `Linear4bit` in eval mode under no_grad rewrites its weight into
    an inference-only layout, permanently; later training forwards then go through a kernel with
    no autograd (input gradients silently vanish) and DoRA's norm dequantizes the wrong layout.
    Evaluation between training steps must not trigger that.
    """
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def load_model(cfg: TrainConfig, device: torch.device, dtype: torch.dtype):
    """Base model + a fresh adapter (trainable params in float32).

    The first `cfg.checkpointed_layers(...)` decoder layers recompute their activations in
    backward (`hive_train.checkpointing`: CUDA graphs still apply), the next `cfg.lean_layers`
    rebuild their cheap ones (`hive_train.lean`); `model.hive_loss_chunk` is the
    LM-head loss chunk `hive_train.loss.micro_loss` uses (`cfg.loss_chunk`)."""
    from peft import get_peft_model

    from hive_train.checkpointing import checkpoint_layers, decoder_layers
    from hive_train.lean import make_lean

    model = load_base(cfg, device, dtype)
    layers = decoder_layers(model)
    count = cfg.checkpointed_layers(len(layers))
    if count:
        # dropout draws random numbers: the recomputation must replay them (no CUDA graphs then)
        checkpoint_layers(model, count, preserve_rng_state=cfg.dropout > 0)
    if cfg.lean_layers:  # the layers right after the checkpointed ones (never both)
        make_lean(layers, range(count, min(count + cfg.lean_layers, len(layers))))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = get_peft_model(model, peft_config(cfg))
    except ValueError as err:  # e.g. a target module the model does not have
        raise TrainError(f"cannot attach the {cfg.adapter} adapter ({err})", file=cfg.model) from None
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    model.hive_fast = None
    model.hive_loss_chunk = cfg.loss_chunk
    if cfg.fast and cfg.adapter in ("lora", "dora") and cfg.dropout == 0:
        from hive_train.fast_adapters import FastAdapters

        model.hive_fast = FastAdapters.install(
            model, keep_4bit=cfg.keep_4bit or cfg.quant == "none", dtype=dtype
        )
    if cfg.fast and device.type == "cuda":
        from hive_train.kernels import apply_fast_kernels

        apply_fast_kernels(model)
    if cfg.compile:
        for layer in model.get_base_model().model.layers:
            layer.compile()
    return model


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The trainable tensors by name (what a checkpoint stores and a resume restores)."""
    return {name: param for name, param in model.named_parameters() if param.requires_grad}


def save_adapter(model, directory: str | Path) -> None:
    """PEFT format: `adapter_config.json` + `adapter_model.safetensors`."""
    with warnings.catch_warnings(), safetensors_os_errors(Path(directory) / "adapter_model.safetensors"):
        warnings.simplefilter("ignore")
        model.save_pretrained(str(directory), safe_serialization=True)


@contextlib.contextmanager
def safetensors_os_errors(path: str | Path) -> Iterator[None]:
    """Re-raise a safetensors I/O failure as the `OSError` it was, naming `path`.

    safetensors reports a full disk as `SafetensorError: ... File too large (os error 27)`, without
    the file and not as an OSError, so the CLI edge took it for an internal error."""
    try:
        yield
    except Exception as err:
        found = re.search(r"os error (\d+)", str(err))
        if type(err).__name__ != "SafetensorError" or not found:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None
