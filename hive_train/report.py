"""The end-of-run artefacts: `loss.png` (train and val curves, and EX when the run scored answers
during training) and `report.md`."""

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
    ex = [(r["step"], 100 * r["eval_ex"]) for r in records if r.get("eval_ex") is not None]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    lines = []
    if train:
        lines += ax.plot(*zip(*train), label="train", linewidth=1.2)
    if val:
        lines += ax.plot(*zip(*val), label="val", marker="o", linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean over loss tokens)")
    ax.grid(alpha=0.3)
    if ex:  # its own axis on the right: a percentage does not share the loss's scale
        right = ax.twinx()
        lines += right.plot(*zip(*ex), label="EX", color="tab:green", marker="s", linewidth=1.2)
        right.set_ylabel("execution accuracy (%)")
        right.set_ylim(0, 100)
    if lines:
        ax.legend(lines, [line.get_label() for line in lines])
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def write_report(path: str | os.PathLike, *, summary: dict, config: dict, records: list[dict]) -> None:
    """A short human-readable summary of the run (data, config, final losses and EX, the best
    evaluation, throughput, wall time). `summary["best"]` is best/best.json, or None."""
    train = [r for r in records if r.get("loss") is not None]
    val = [r for r in records if r.get("val_loss") is not None]
    ex = [r for r in records if r.get("eval_ex") is not None]
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
        f"final val loss {_fmt(val[-1]['val_loss'] if val else None)}"
        + (f"; final EX {ex[-1]['eval_ex']:.1%} ({ex[-1].get('eval_rows', '?')} rows)" if ex else ""),
        *_best_lines(summary.get("best"), ex),
        f"- throughput {_fmt(sum(tps) / len(tps) if tps else None, ',.0f')} tokens/s (mean after the first step); "
        f"MFU {_fmt(sum(mfu) / len(mfu) if mfu else None, '.1%')}",
        f"- peak memory {_fmt(summary['peak_memory_gb'], '.2f')} GB; wall time {summary['wall_s']:.1f} s",
        "",
        "## Outputs",
        "- `adapter/` (PEFT format), "
        + ("`best/` (the best evaluation's adapter), " if summary.get("best") else "")
        + "`tokenizer/`, `config.yaml`, `generation_config.json`, `metrics.jsonl`, `loss.png`"
        + (", `eval/step-*/` (answers and scores of each evaluation)" if ex else ""),
        "",
        "![loss](loss.png)",
        "",
    ]
    with atomic_file(path) as fh:
        fh.write("\n".join(lines))


def _best_lines(best: dict | None, ex: list[dict]) -> list[str]:
    """The report's line on best/: its step, the metric that chose it and its scores there."""
    if not best:
        return []
    scores = best.get("scores") or {}
    parts = []
    if scores.get("eval_ex") is not None:
        parts.append(f"EX {scores['eval_ex']:.1%}")
    if scores.get("val_loss") is not None:
        parts.append(f"val loss {scores['val_loss']:.4f}")
    # chosen by val loss, the EX peak may lie elsewhere
    peak = f"; highest EX {max(r['eval_ex'] for r in ex):.1%}" if ex and best.get("metric") != "ex" else ""
    return [
        f"- best: step {best.get('step')} by {best.get('metric')} ({', '.join(parts) or 'n/a'}), "
        f"adapter in `best/`{peak}"
    ]
