"""Checkpoints: everything a run needs to continue exactly, as safetensors + JSON (no pickles).

    runs/NAME/checkpoints/step-00000120/
        trainable.safetensors   adapter weights by parameter name
        optimizer.safetensors   optimizer state tensors, keyed "<param index>.<name>"
        rng.safetensors         torch CPU (and CUDA) generator states
        state.json              step, data cursor, scheduler, param groups, metrics, files (written last)

A checkpoint is built in a staging directory beside its final name and renamed into place
(`hive_core.atomic.commit_dir`), so a crash never leaves a half-written `step-*` directory;
`latest_checkpoint` additionally requires `state.json` and every file it lists.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hive_core.atomic import commit_dir, new_staging_dir, remove_stale
from hive_core.errors import TrainError
from hive_train.model import safetensors_os_errors, trainable_state

CHECKPOINTS = "checkpoints"
FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors")
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:08d}"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        for group in state["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = value
    return tensors


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with safetensors_os_errors(path):  # a full disk is an OSError naming the file, not an internal error
        save_file(tensors, path)


def save_checkpoint(
    run_dir: str | os.PathLike, step: int, model, optimizer, state: dict, keep: int = 2
) -> Path:
    """Write checkpoint `step` atomically; keep the newest `keep` complete ones. Returns its path."""
    target = checkpoint_dir(run_dir, step)
    remove_stale(target)
    staging = new_staging_dir(target)
    try:
        _save(
            {k: v.detach().contiguous().cpu() for k, v in trainable_state(model).items()}, staging / FILES[0]
        )
        tensors, opt_json = _optimizer_tensors(optimizer)
        _save(tensors, staging / FILES[1])
        _save(_rng_tensors(), staging / FILES[2])
        sizes = {name: (staging / name).stat().st_size for name in FILES}
        payload = dict(state, step=step, optimizer=opt_json, files=list(FILES), sizes=sizes)
        (staging / "state.json").write_text(
            json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        commit_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def clean_staging(run_dir: str | os.PathLike) -> None:
    """Delete what interrupted checkpoint writes left behind (never a complete checkpoint)."""
    root = Path(run_dir) / CHECKPOINTS
    if root.is_dir():
        for leftover in root.glob(".step-*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _complete(path: Path) -> bool:
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and all((path / name).is_file() for name in state.get("files", FILES))


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first. Staging leftovers and incomplete directories are skipped."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and _complete(p)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def recorded_config(run_dir: str | os.PathLike) -> tuple[dict | None, str | None]:
    """The resolved configuration the newest complete checkpoint of `run_dir` was trained with, and
    the file it came from; (None, None) when there is no checkpoint. A resume starts from it. Its
    `tokenizer` is the source the run actually read its tokenizer from."""
    path = latest_checkpoint(run_dir)
    if path is None:
        return None, None
    state = read_state(path)
    config = state.get("config")
    if not isinstance(config, dict):
        raise TrainError(f"checkpoint state lacks its config; {_DAMAGED}", file=str(path / "state.json"))
    if state.get("tokenizer_source"):
        config = dict(config, tokenizer=state["tokenizer_source"])
    return config, str(path / "state.json")


def read_state(path: str | os.PathLike) -> dict:
    """`state.json` of a checkpoint; `TrainError` naming the file when it is unreadable or lacks a key."""
    file = Path(path) / "state.json"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TrainError(f"checkpoint state is unreadable ({err}); {_DAMAGED}", file=str(file)) from None
    missing = [k for k in ("step", "tokens", "optimizer") if not isinstance(state, dict) or k not in state]
    if missing:
        raise TrainError(f"checkpoint state lacks {', '.join(missing)}; {_DAMAGED}", file=str(file))
    return state


_DAMAGED = "the checkpoint is damaged: delete its directory to resume from the one before"


def _load_tensors(path: Path, state: dict) -> dict[str, torch.Tensor]:
    """A checkpoint file's tensors; a file cut short or damaged is a `TrainError` naming it."""
    expected = (state.get("sizes") or {}).get(path.name)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise TrainError(f"checkpoint file is missing ({err.strerror}); {_DAMAGED}", file=str(path)) from None
    if expected is not None and size != expected:
        raise TrainError(
            f"checkpoint file is truncated or altered ({size} bytes, {expected} written); {_DAMAGED}",
            file=str(path),
        )
    try:
        return load_file(path)
    except Exception as err:  # safetensors raises its own SafetensorError for a cut-short file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainError(f"checkpoint file cannot be read ({first}); {_DAMAGED}", file=str(path)) from None


def load_checkpoint(path: str | os.PathLike, model, optimizer) -> dict:
    """Restore adapter weights, optimizer state and RNG states in place; return `state.json`.

    A damaged checkpoint (a file cut short, state.json unreadable) is a `TrainError` naming the file.
    """
    path = Path(path)
    state = read_state(path)
    weights = _load_tensors(path / FILES[0], state)
    params = trainable_state(model)
    if set(weights) != set(params):
        missing = sorted(set(params) ^ set(weights))[:3]
        raise TrainError(
            f"checkpoint does not match this adapter (differing parameters, e.g. {missing}); "
            "was it made with another --adapter, --rank or --target-modules?",
            file=str(path),
        )
    with torch.no_grad():
        for name, param in params.items():
            if param.shape != weights[name].shape:
                raise TrainError(f"checkpoint shape differs for {name}", file=str(path))
            param.copy_(weights[name])
    tensors = _load_tensors(path / FILES[1], state)
    rng = _load_tensors(path / FILES[2], state)
    opt_json = state["optimizer"]
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    for index, extra in opt_json.get("scalars", {}).items():
        per_param.setdefault(int(index), {}).update(extra)
    groups = []
    for group in opt_json["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    try:
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise TrainError(
            f"checkpoint optimizer state does not fit ({err}); {_DAMAGED}", file=str(path)
        ) from None
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda_states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    return state
