"""The loss of a micro-batch and gradient accumulation over a step's micro-batches.

Each micro-batch's loss is a *sum* over its loss tokens; a step divides by the loss tokens of the
whole step (over all ranks), so the step's gradient is the gradient of the mean over all its loss
tokens, however it is split, over micro-batches or over data-parallel ranks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hive_train import attention, distributed
from hive_train.data import MicroBatch, RowTable, flatten
from hive_train.fast_adapters import linear_cross_entropy_sum
from hive_train.memory_plan import EVAL_LOSS_CHUNK

DEFAULT_LOSS_CHUNK = 4096  # `TrainConfig.loss_chunk`'s default, for models not made by `load_model`


def micro_loss(model, batch: MicroBatch, backend: str, most_rows: int | None = None) -> torch.Tensor:
    """Sum of token cross-entropies over the micro-batch's loss positions (not a mean).

    Logits are computed only at loss positions: prompt tokens never produce a vocab-sized row, and
    at most `model.hive_loss_chunk` rows of them exist at once (`load_model` sets it from
    `TrainConfig.loss_chunk`; 4096 on a model loaded otherwise), nor more than `most_rows`.
    """
    base = model.get_base_model()
    out = base.model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        use_cache=False,
        **attention.attention_inputs(backend, batch.cu_seqlens, batch.max_doc_len, batch.length),
    )
    hidden = out.last_hidden_state[0].index_select(0, batch.loss_positions)
    head = base.get_output_embeddings()
    if head.bias is None:
        # chunked: the (loss tokens x vocab) logits never exist in full
        return linear_cross_entropy_sum(
            hidden,
            head.weight,
            batch.targets,
            chunk=min(getattr(model, "hive_loss_chunk", DEFAULT_LOSS_CHUNK), most_rows or 2**62),
            weights=batch.loss_weights,
        )
    losses = F.cross_entropy(head(hidden).float(), batch.targets, reduction="none")
    return losses.sum() if batch.loss_weights is None else (losses * batch.loss_weights).sum()


def accumulate(model, batches: list[MicroBatch], backend: str, autocast, denom: int) -> torch.Tensor:
    """Backward through every micro-batch's loss sum divided by `denom`, the loss tokens of the
    whole optimizer step (over all ranks); return the summed loss / `denom` as a float64 tensor on
    the device (no host sync). Summed over ranks, the gradients and the returned value are those
    of the mean over all the step's loss tokens."""
    total = None
    for batch in batches:
        with autocast():
            loss = micro_loss(model, batch, backend)
        (loss / max(denom, 1)).backward()
        # summed on the device: one host sync per step, not one per micro-batch
        total = loss.detach().double() if total is None else total + loss.detach().double()
    if total is None:  # a data-parallel rank with no micro-batch in this step
        return torch.zeros((), dtype=torch.float64)
    return total / max(denom, 1)


def forward_backward(model, batches: list[MicroBatch], backend: str, autocast) -> tuple[float, int]:
    """Accumulate the gradient of the mean loss over all loss tokens of `batches`; return (mean loss, tokens)."""
    denom = sum(b.loss_tokens for b in batches)
    return float(accumulate(model, batches, backend, autocast, denom)), denom


@torch.no_grad()
def evaluate(
    model,
    table: RowTable,
    micro_rows: list[np.ndarray],
    device,
    backend: str,
    autocast,
    pad: dict | None = None,
) -> float | None:
    """Mean loss over all loss tokens of the validation split.

    Under data parallelism each rank evaluates micro-batches rank, rank + world, ... and the
    (loss sum, token count) pairs are summed over ranks: every rank gets the same mean.
    """
    if not micro_rows:
        return None
    model.eval()
    total, count = 0.0, 0
    for rows in micro_rows[distributed.rank() :: distributed.world()]:
        batch = flatten(table, rows, **(pad or {})).to(device)
        with autocast():
            # smaller loss chunks than training's: an evaluation allocates beside the memory a
            # CUDA graph's step keeps, and its speed matters less
            total += float(micro_loss(model, batch, backend, most_rows=EVAL_LOSS_CHUNK))
        count += batch.loss_tokens
    model.train()
    total, count = distributed.all_reduce_sum([total, count])
    return total / count if count else None
