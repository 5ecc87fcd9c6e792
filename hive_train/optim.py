"""The optimizer (AdamW over the adapter's parameters) and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from hive_train.config import TrainConfig


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based optimizer `step`: linear warmup, then cosine/linear decay or constant."""
    warmup = math.ceil(cfg.warmup_ratio * total)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_scheduler == "constant":
        return cfg.lr
    progress = (step - warmup) / max(1, total - warmup)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.lr_scheduler == "cosine" else 1 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def scheduler_state(cfg: TrainConfig, total: int, done: int) -> dict:
    """The schedule as a checkpoint records it (for the reader; a resume recomputes it)."""
    return {
        "kind": cfg.lr_scheduler,
        "warmup_steps": math.ceil(cfg.warmup_ratio * total),
        "total_steps": total,
        "steps_done": done,
        "next_lr": lr_at(done, total, cfg) if done < total else None,
    }


def make_optimizer(model, cfg: TrainConfig, device: torch.device) -> tuple[torch.optim.Optimizer, list]:
    """(AdamW over the trainable parameters, those parameters). The fast adapter path refreshes its
    prepared weights after every optimizer step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda" or None
    )
    if model.hive_fast is not None:
        model.hive_fast.attach(optimizer)
    return optimizer, params
