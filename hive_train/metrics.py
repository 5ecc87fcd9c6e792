"""Throughput, MFU, memory, and the `metrics.jsonl` log.

FLOPs per optimizer step (written down so MFU is reproducible), for a frozen base with adapters:
- linear layers: forward 2N and input-gradient backward 2N per token, N = decoder linear weights
  (no weight-gradient matmuls: the base is frozen; the small adapter matmuls are left out);
- LM head: 4 * vocab * hidden per *loss* token (logits are computed only where loss is taken);
- attention: per layer and document of length L, causal forward 2 L^2 Hq D, backward twice that.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hive_train.model import ModelInfo

# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment, for MFU.
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "4090": 165e12,
    "3090": 71e12,
}


def step_flops(info: ModelInfo, tokens: int, loss_tokens: int, doc_lengths: np.ndarray) -> float:
    linear = 4.0 * info.decoder_linear_params * tokens
    head = 4.0 * info.vocab_size * info.hidden * loss_tokens
    squares = float(np.square(doc_lengths.astype(np.float64)).sum())
    attn = 6.0 * info.layers * info.heads * info.head_dim * squares
    return linear + head + attn


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, flops in PEAK_BF16.items():
        if fragment in name:
            return flops
    return None


def peak_memory_gb(device: torch.device) -> float:
    """Peak allocated GPU memory on CUDA; peak resident memory of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20


def gpu_total_gib(device: torch.device) -> float | None:
    """Total memory of the GPU in GiB (for the out-of-memory advice); None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def log_record(
    *,
    step: int,
    epoch: float,
    loss: float,
    lr: float,
    grad_norm: float,
    tokens: int,
    step_tokens: int,
    loss_tokens: int,
    step_time: float,
    flops: float,
    peak: float | None,
    device: torch.device,
    started: float,
) -> dict:
    """One line of `metrics.jsonl` for optimizer step `step` (1-based); `val_loss` is filled by the
    loop on evaluation steps. `tokens` counts every token trained on so far, `flops` is the step's
    nominal FLOPs (`step_flops`), `peak` the FLOP/s of all GPUs (None: no MFU), `started` the
    run's start (time.perf_counter())."""
    return {
        "step": step,
        "epoch": round(epoch, 4),
        "loss": loss,
        "val_loss": None,
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens": tokens,
        "step_tokens": step_tokens,
        "loss_tokens": loss_tokens,
        "tokens_per_s": step_tokens / step_time,
        "step_time": step_time,
        "nominal_flops": flops,
        "mfu": flops / step_time / peak if peak else None,
        "peak_mem_gb": round(peak_memory_gb(device), 3),
        "elapsed_s": round(time.perf_counter() - started, 3),
        "wall_time": time.time(),
    }


class MetricsLog:
    """Appends one JSON object per line, flushed, so a crash keeps everything logged so far."""

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            # drop what a stopped run logged after its last checkpoint: it will be logged again
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            from hive_core.atomic import atomic_file

            with atomic_file(self.path) as fh:
                for record in kept:
                    fh.write(json.dumps(record) + "\n")
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, allow_nan=True) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break  # a torn last line from a crash
    return records
