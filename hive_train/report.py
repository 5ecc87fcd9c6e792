"""The end-of-run artefacts: `loss.png` (train and val curves) and `report.md`."""

from __future__ import annotations

import os
from pathlib import Path

from hive_core.atomic import atomic_file


def plot_losses(records: list[dict], path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1.2)
    if val:
        ax.plot(*zip(*val), label="val", marker="o", linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over loss tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def write_report(path: str | os.PathLike, *, summary: dict, config: dict, records: list[dict]) -> None:
    """A short human-readable summary of the run (data, config, final losses, throughput, wall time)."""
    train = [r for r in records if r.get("loss") is not None]
    val = [r for r in records if r.get("val_loss") is not None]
    tps = [r["tokens_per_s"] for r in train[1:] if r.get("tokens_per_s")]
    mfu = [r["mfu"] for r in train[1:] if r.get("mfu") is not None]
    lines = [
        f"# hive-train run: {Path(summary['run_dir']).name}",
        "",
        "## Data",
        f"- shards: `{summary['shards']}` (manifest sha256 `{summary['manifest_sha256'][:16]}...`)",
        f"- seq {summary['seq']}; train {summary['train_rows']} rows / {summary['train_tokens']:,} tokens; "
        f"val {summary['val_rows']} rows / {summary['val_tokens']:,} tokens",
        "",
        "## Model and adapter",
        f"- base `{config['model']}`, quantization {config['quant']}, adapter {config['adapter']} "
        f"(rank {config['rank']}, alpha {config['alpha']}, dropout {config['dropout']}, "
        f"targets {', '.join(config['target_modules'])})",
        f"- trainable parameters: {summary['trainable_params']:,}",
        f"- device {summary['device']}, compute {summary['dtype']}, attention {summary['attention']}",
        "",
        "## Training",
        f"- steps {summary['steps']} ({summary['epochs']:.2f} epochs), lr {config['lr']} "
        f"{config['lr_scheduler']} (warmup ratio {config['warmup_ratio']}), "
        f"micro-batches {summary['batching']}",
        f"- final train loss {_fmt(train[-1]['loss'] if train else None)}; "
        f"final val loss {_fmt(val[-1]['val_loss'] if val else None)}",
        f"- throughput {_fmt(sum(tps) / len(tps) if tps else None, ',.0f')} tokens/s (mean after the first step); "
        f"MFU {_fmt(sum(mfu) / len(mfu) if mfu else None, '.1%')}",
        f"- peak memory {_fmt(summary['peak_memory_gb'], '.2f')} GB; wall time {summary['wall_s']:.1f} s",
        "",
        "## Outputs",
        "- `adapter/` (PEFT format), `tokenizer/`, `config.yaml`, `generation_config.json`, "
        "`metrics.jsonl`, `loss.png`",
        "",
        "![loss](loss.png)",
        "",
    ]
    with atomic_file(path) as fh:
        fh.write("\n".join(lines))
