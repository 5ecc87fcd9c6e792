"""The run directory: made (or emptied) at the start, its files written as the run goes, and the
adapter, loss curve and report written when the run completes (docs/training.md has the layout).

Rank 0 alone writes here; the other ranks of a data-parallel run only read checkpoints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import yaml

from hive_core.atomic import (
    Layout,
    atomic_file,
    check_replaceable,
    check_separate,
    clear_dir,
    commit_dir,
    new_staging_dir,
    remove_stale,
    write_marker,
)
from hive_core.errors import TrainError
from hive_train import checkpoint
from hive_train.best import BEST, read_best
from hive_train.config import TrainConfig
from hive_train.metrics import peak_memory_gb, read_metrics
from hive_train.model import save_adapter
from hive_train.report import plot_losses, write_report


def _legacy_run(path: Path) -> bool:
    """A run directory of a hive that wrote no ownership marker: its config.yaml is hive-train's
    resolved config (a mapping with `train` and `shards` sections)."""
    try:
        with open(path / "config.yaml", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("train"), dict) and "shards" in data


# What hive-train writes at the top level of a run directory: a new entry written there must be
# added here, or `--overwrite` refuses to delete such a run directory.
RUN_LAYOUT = Layout(
    kind="run",
    names=(
        "config.yaml",
        "tokenizer",
        "generation_config.json",
        "metrics.jsonl",
        "loss.png",
        "report.md",
        "adapter",
        BEST,  # the best evaluation's adapter (hive_train.best)
        checkpoint.CHECKPOINTS,
        "eval",  # hive-eval's default output, and the evaluations during training
    ),
    legacy=_legacy_run,
)


def prepare_run_dir(out: Path, resume: bool, overwrite: bool, shards_dir: str | Path | None = None) -> None:
    """Make `out` the run directory. Missing or empty: created, with hive's ownership marker
    (`.hive-owned`, kind "run"). Holding something: kept as it is with `resume`; refused without
    `overwrite`; with `overwrite` emptied only when it is hive's run directory (`RUN_LAYOUT`: the
    marker, or an older hive's config.yaml, and no top-level entry hive-train does not write),
    otherwise refused with `ConfigError` and left intact. The run directory must not be, hold or lie
    inside `shards_dir`. Everything is checked before anything is deleted or written."""
    if shards_dir is not None:
        check_separate(out, [shards_dir], what="run directory", input_noun="shards directory")
    existing = out.is_dir() and any(out.iterdir())
    if resume:
        return
    if existing and not overwrite:
        raise TrainError(
            "run directory is not empty: pass --resume to continue it or --overwrite to start over",
            file=str(out),
        )
    if existing:
        check_replaceable(out, RUN_LAYOUT, "delete")
        clear_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, RUN_LAYOUT.kind)


def versions() -> dict:
    import bitsandbytes
    import peft
    import transformers

    return {
        "torch": str(torch.__version__),
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


def write_run_config(out: Path, resolved: dict, shards_info: dict, world: int, base_model) -> None:
    """config.yaml: the resolved settings (`--config` reads the train section back), the shards,
    library versions, the world size and the base weights' fingerprint."""
    with atomic_file(out / "config.yaml") as fh:
        fh.write("# resolved by hive-train; `--config` reads the train section back\n")
        yaml.safe_dump(
            {
                "train": resolved,
                "shards": shards_info,
                "versions": versions(),
                "world_size": world,
                "base_model": base_model,
            },
            fh,
            sort_keys=False,
        )


def write_tokenizer(out: Path, tokenizer) -> None:
    """tokenizer/: the tokenizer the run trained with (kept when a resumed run already has it)."""
    if not (out / "tokenizer").is_dir():
        staging = new_staging_dir(out / "tokenizer")
        tokenizer.save_pretrained(str(staging))
        commit_dir(staging, out / "tokenizer")


def write_generation_config(out: Path, cfg: TrainConfig, eos_id: int | None, pad_id: int | None) -> None:
    """Decoding settings of the recipe, in transformers' generation_config.json form, for inference."""
    settings = dict(cfg.decoding)
    temperature = settings.get("temperature")
    settings.setdefault("do_sample", bool(temperature) and temperature > 0)
    if eos_id is not None:
        settings.setdefault("eos_token_id", eos_id)
    if pad_id is not None:
        settings.setdefault("pad_token_id", pad_id)
    with atomic_file(out / "generation_config.json") as fh:
        fh.write(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def finish(run, data, parts) -> None:
    """A completed run's outputs (rank 0): the adapter (PEFT format), loss.png (with EX when the run
    scored answers) and report.md (with the best evaluation, best/).
    `run`, `data` and `parts` are what `hive_train.setup` made."""
    out, cfg, device = run.out, run.cfg, run.device
    remove_stale(out / "adapter")
    staging = new_staging_dir(out / "adapter")
    save_adapter(parts.model, staging)
    commit_dir(staging, out / "adapter")
    records = read_metrics(out / "metrics.jsonl")
    plot_losses(records, out / "loss.png")
    total_steps = data.schedule.total_steps
    summary = dict(
        data.shards_info,
        run_dir=str(out),
        shards=data.shards_info["path"],
        steps=total_steps,
        epochs=data.schedule.epoch_progress(total_steps - 1) if total_steps else 0.0,
        trainable_params=sum(p.numel() for p in parts.params),
        device=str(device)
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + (f" x {run.world} data-parallel processes" if run.world > 1 else ""),
        dtype=str(parts.dtype).replace("torch.", ""),
        attention=parts.backend,
        batching=_batching(cfg),
        peak_memory_gb=peak_memory_gb(device),
        wall_s=time.perf_counter() - run.started,
        best=read_best(out),
    )
    write_report(out / "report.md", summary=summary, config=run.resolved, records=records)
    run.log(f"done: {out / 'adapter'} (report: {out / 'report.md'})")


def _batching(cfg: TrainConfig) -> str:
    micro = f"{cfg.tokens_per_micro} tokens" if cfg.tokens_per_micro else f"{cfg.batch_size} rows"
    step = (
        f"{cfg.tokens_per_step} tokens per step"
        if cfg.tokens_per_step
        else f"x {cfg.grad_accum} accumulation"
    )
    return f"{micro} {step}"
