"""One training step's forward and backward, captured once as a CUDA graph and replayed every step.

On the fast path a micro-batch of 8 x 2048 tokens is bound by the host: the GPU's kernels for one
step take about 190 ms on an H200, but launching them from Python (196 adapted linears, their
Triton ends, the norms, RoPE, attention) takes longer, and the GPU waits. A CUDA graph replays the
whole forward and backward with one launch, so the step runs at the GPU's speed.

A graph replays fixed addresses and shapes, so every micro-batch is padded to one `StaticShape`
planned from the whole schedule before training starts (`static_shape`, `pad_static`): tokens to the
longest micro-batch (a padding document without loss, in pieces no longer than the longest real
document), the document table to the most documents (empty documents at the end), and the loss
positions to the most loss tokens (extra positions weighted 0 in the loss). Padding changes neither
the loss nor any gradient. The chunked LM-head loss (`fast_adapters.linear_cross_entropy_sum`)
never reads a value back to the host, so it is captured with the rest.

`GraphedStep` is used only where it is known to hold: CUDA, the fast path on every adapted layer,
FlashAttention (varlen), no torch.compile, no process group, about the same number of micro-batches
in every step: one graph runs all of a step's micro-batches, and a step with fewer gets empty ones
(`graph_eligibility` says why not otherwise). Activation checkpointing is captured too: hive's own
(`hive_train.checkpointing`) recomputes without touching the RNG state, which holds while nothing
draws random numbers (dropout 0, as the fast path requires). The adapters' per-step
tensors (`FastAdapters.prepare`) are computed inside the graph, so each replay reads the parameters
as the optimizer left them; the gradients live in the graph's memory and each replay overwrites them,
so they are never set to None between steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from hive_train.data import MicroBatch, RowTable, micro_capacity
from hive_train.loss import micro_loss


@dataclass(frozen=True)
class StaticShape:
    """The one shape every micro-batch is padded to."""

    tokens: int  # flattened row length
    docs: int  # documents, padding pieces and empty documents included
    loss_tokens: int  # loss positions, padded ones included
    max_doc: int  # FlashAttention's max_seqlen: the longest document or padding piece


# the tensors of a padded micro-batch that a replay reads: copied into the graph's inputs every step
STATIC_FIELDS = ("input_ids", "position_ids", "cu_seqlens", "loss_positions", "targets", "loss_weights")


@dataclass(frozen=True)
class Prepared:
    """A step's micro-batches as `GraphedStep.prepare` leaves them: filled up to the graph's count
    and padded to its shape, in pinned host memory on CUDA. Wrapped so that `GraphedStep.run` can
    tell them from plain batches, which it still prepares itself."""

    batches: list[MicroBatch]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def static_shape(table: RowTable, micro_batches, multiple: int = 128) -> StaticShape:
    """The smallest `StaticShape` that holds every micro-batch of `micro_batches` (row index arrays)
    and an empty one (all padding: it fills a step that has fewer micro-batches than the others)."""
    micro_batches = [np.asarray(rows, dtype=np.int64) for rows in micro_batches]
    lengths = [table.doc_lengths_of(rows) for rows in micro_batches]
    tokens = [int(table.row_tokens[rows].sum()) for rows in micro_batches]
    total = micro_capacity(table, micro_batches, multiple)
    max_doc = max((int(d.max()) for d in lengths if len(d)), default=total)
    loss = table.row_loss_tokens()
    docs = max(
        [len(d) + -(-(total - t) // max_doc) for d, t in zip(lengths, tokens)] + [-(-total // max_doc)]
    )
    most_loss = max((int(loss[rows].sum()) for rows in micro_batches), default=0)
    return StaticShape(
        tokens=total, docs=docs, loss_tokens=_round_up(max(most_loss, 1), multiple), max_doc=max_doc
    )


def empty_micro_batch() -> MicroBatch:
    """A micro-batch of no tokens: `pad_static` turns it into padding alone (no loss, no gradient)."""
    none = torch.zeros((1, 0), dtype=torch.int64)
    return MicroBatch(
        input_ids=none, position_ids=none, cu_seqlens=torch.zeros(1, dtype=torch.int32), max_doc_len=0,
        loss_positions=torch.zeros(0, dtype=torch.int64), targets=torch.zeros(0, dtype=torch.int64),
        doc_lengths=np.zeros(0, dtype=np.int64), rows=np.zeros(0, dtype=np.int64),
    )  # fmt: skip


def micro_batches_per_step(schedule, most_padding: float = 0.05) -> int | None:
    """How many micro-batches every graphed step runs (the most any step has; shorter steps get
    empty ones), or None when that would add more than `most_padding` of all micro-batches."""
    counts = [len(step) for plan in schedule.epochs for step in plan]
    if not counts:
        return None
    most = max(counts)
    return most if most * len(counts) - sum(counts) <= most_padding * sum(counts) else None


def pad_static(batch: MicroBatch, shape: StaticShape, pad_id: int) -> MicroBatch:
    """`batch` (unpadded, from `flatten`) padded to `shape`; the loss and gradients are unchanged.

    Raises ValueError when the batch does not fit the shape.
    """
    t, n = batch.length, batch.loss_tokens
    docs = int(batch.cu_seqlens.shape[0]) - 1
    padding = shape.tokens - t
    pieces = [shape.max_doc] * (padding // shape.max_doc) + (
        [padding % shape.max_doc] if padding % shape.max_doc else []
    )
    if (
        padding < 0
        or n > shape.loss_tokens
        or docs + len(pieces) > shape.docs
        or batch.max_doc_len > shape.max_doc
    ):
        raise ValueError(f"micro-batch ({t} tokens, {docs} documents, {n} loss tokens) does not fit {shape}")
    ids = torch.cat([batch.input_ids[0], torch.full((padding,), pad_id, dtype=batch.input_ids.dtype)])
    positions = torch.cat(
        [batch.position_ids[0]] + [torch.arange(p, dtype=batch.position_ids.dtype) for p in pieces]
    )
    ends = t + np.cumsum(pieces, dtype=np.int64) if pieces else np.zeros(0, dtype=np.int64)
    empty = np.full(shape.docs - docs - len(pieces), shape.tokens, dtype=np.int64)
    cu = torch.cat([batch.cu_seqlens, torch.from_numpy(np.concatenate([ends, empty]).astype(np.int32))])
    extra = shape.loss_tokens - n
    # padded loss positions read the last position (a pad token, or a real one when nothing is
    # padded) and predict the pad id, with weight 0
    loss_positions = torch.cat(
        [batch.loss_positions, torch.full((extra,), shape.tokens - 1, dtype=torch.int64)]
    )
    targets = torch.cat([batch.targets, torch.full((extra,), pad_id, dtype=torch.int64)])
    weights = torch.cat([torch.ones(n), torch.zeros(extra)])
    return MicroBatch(
        input_ids=ids[None],
        position_ids=positions[None],
        cu_seqlens=cu,
        max_doc_len=shape.max_doc,
        loss_positions=loss_positions,
        targets=targets,
        doc_lengths=batch.doc_lengths,
        rows=batch.rows,
        padding=padding,
        loss_weights=weights,
    )


def graph_eligibility(
    *, device: torch.device, fast, backend: str, cfg, data_parallel: bool, schedule
) -> str | None:
    """None when a training run can replay its steps as a CUDA graph, else the reason it cannot.

    `data_parallel`: a process group is up (even of one process, under torchrun): its gradient
    all-reduce replaces each `.grad` with a view of one flat buffer, which a replay would not fill.
    """
    if device.type != "cuda":
        return "not on CUDA"
    if cfg.dropout > 0 and (cfg.gradient_checkpointing or cfg.checkpoint_layers):
        # recomputing dropout needs the RNG state saved and restored, which a capture forbids
        return "activation checkpointing with dropout"
    if fast is None or not fast.covers_all:
        return "the fast adapter path does not cover every adapted layer"
    if backend != "varlen":
        return f"attention is {backend}, not varlen"
    if cfg.compile:
        return "--compile is on"
    if data_parallel:
        return "data parallel (a process group is running)"
    if micro_batches_per_step(schedule) is None:
        return "the number of micro-batches per step varies too much"
    return None


class GraphedStep:
    """Forward + backward of a step's `micro` (padded) micro-batches, captured at the first call
    and replayed after; the gradients accumulate over the micro-batches inside the graph.

    `run(batches, denom)` leaves in every trainable parameter's `.grad` the gradient of the
    batches' loss sum / `denom` and returns that loss (a float64 tensor on the device). The
    optimizer may read, clip and apply the gradients but must not set them to None. `batches` are
    plain (from `flatten`) or already `prepare`d, which a caller may do ahead, while the GPU works.
    """

    def __init__(
        self,
        model,
        backend: str,
        shape: StaticShape,
        pad_id: int,
        device: torch.device,
        micro: int = 1,
        warmup: int = 2,
    ):
        self.model, self.backend, self.shape, self.pad_id = model, backend, shape, pad_id
        self.device, self.micro, self.warmup = device, micro, warmup
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[MicroBatch] = []
        self.scale = torch.ones((), dtype=torch.float32, device=device)
        self.loss: torch.Tensor | None = None
        self._sources: list[MicroBatch] = []  # the host side of the last copy into `inputs`

    def _forward_backward(self) -> torch.Tensor:
        total = None
        for batch in self.inputs:  # activations of one micro-batch are freed before the next
            loss = micro_loss(self.model, batch, self.backend)
            (loss * self.scale).backward()
            total = loss.detach().double() if total is None else total + loss.detach().double()
        return total * self.scale.double()

    def prepare(self, batches: list[MicroBatch]) -> Prepared:
        """`batches` (from `flatten`) filled up with empty ones and padded to the shape. Host work
        only, so it can run while the GPU replays the step before. On CUDA the tensors are pinned:
        a copy from pageable memory is staged and waited for by the host, one from pinned memory
        is queued and returns at once."""
        if len(batches) > self.micro:
            raise ValueError(f"{len(batches)} micro-batches in a step graphed for {self.micro}")
        batches = list(batches) + [empty_micro_batch()] * (self.micro - len(batches))
        padded = [pad_static(batch, self.shape, self.pad_id) for batch in batches]
        if self.device.type == "cuda" and torch.cuda.is_available():
            padded = [_pinned(batch) for batch in padded]
        return Prepared(padded)

    def _load(self, batches: list[MicroBatch] | Prepared) -> None:
        padded = (batches if isinstance(batches, Prepared) else self.prepare(batches)).batches
        # the copies below may still be reading these host tensors when this returns: keep them
        # until the next step's load, by which time the loop has read the loss back (a sync)
        self._sources = padded
        if not self.inputs:
            self.inputs = [batch.to(self.device) for batch in padded]
            return
        for static, batch in zip(self.inputs, padded):
            for name in STATIC_FIELDS:
                getattr(static, name).copy_(getattr(batch, name), non_blocking=True)

    def _capture(self) -> None:
        fast = self.model.hive_fast
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # compiles the Triton kernels, sets up cuBLAS, off the capture
            for _ in range(self.warmup):
                fast.mark_stale()
                self._forward_backward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        for p in self.params:  # the captured backward allocates them in the graph's memory
            p.grad = None
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()  # the warm-up's blocks belong to the side stream: hand them back
        fast.mark_stale()  # so that `prepare` runs inside the graph
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.loss = self._forward_backward()
        self.graph = graph

    def run(self, batches: list[MicroBatch] | Prepared, denom: int) -> torch.Tensor:
        self._load(batches)
        self.scale.fill_(1.0 / max(denom, 1))
        if self.graph is None:
            self._capture()
        self.graph.replay()
        return self.loss

    def reset(self) -> None:
        """Forget a failed capture so the run can go on eagerly: gradients set to None, the
        adapters' prepared tensors recomputed on next use, the graph's inputs and memory released."""
        torch.cuda.synchronize()
        for p in self.params:
            p.grad = None
        self.model.hive_fast.mark_stale()
        self.inputs, self.loss, self._sources = [], None, []
        torch.cuda.empty_cache()


def _pinned(batch: MicroBatch) -> MicroBatch:
    """`batch` with the tensors a replay reads in pinned host memory."""
    return dataclasses.replace(batch, **{name: getattr(batch, name).pin_memory() for name in STATIC_FIELDS})
