"""Packed shards -> micro-batches: seeded per-epoch order, token-budgeted batching, flattening.

Everything here is a pure function of (shards, config, seed, epoch), so the position in the data
is just `(epoch, step_in_epoch)` and a resumed run sees exactly the batches it would have seen.

A micro-batch is one flattened row: its rows' documents back to back, with `position_ids`
restarting at every document and `cu_seqlens` marking the document boundaries for the attention
kernel. Loss positions are those whose *next* token is a completion token of the same document
(the first token of a document is never predicted from the previous document).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch


@dataclass
class RowTable:
    """One split's rows as flat numpy arrays (memory-mapped Arrow buffers where possible)."""

    ids: np.ndarray  # all tokens, int32
    offsets: np.ndarray  # row r is ids[offsets[r]:offsets[r+1]]
    doc_lengths: np.ndarray  # all document lengths, int32
    doc_offsets: np.ndarray  # row r's documents are doc_lengths[doc_offsets[r]:doc_offsets[r+1]]
    mask: np.ndarray  # completion mask, int8, aligned with ids
    _loss_tokens: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def row_tokens(self) -> np.ndarray:
        return np.diff(self.offsets)

    def doc_lengths_of(self, rows: np.ndarray) -> np.ndarray:
        """The (non-empty) document lengths of `rows`, in order."""
        lengths = _gather(self.doc_lengths, self.doc_offsets, np.asarray(rows, dtype=np.int64))
        return lengths[lengths > 0]

    def row_loss_tokens(self) -> np.ndarray:
        """Loss tokens each row contributes to any micro-batch holding it (int64, per row).

        A token is a target when it is a completion token and not the first of its document, so
        the count is additive over rows: a step's loss-token total is known from its row indices
        alone, without flattening (every data-parallel rank computes the same global count).
        Memory stays O(rows + documents).
        """
        if self._loss_tokens is None:
            counts = np.zeros(self.rows, dtype=np.int64)
            nonempty = np.flatnonzero(self.offsets[1:] > self.offsets[:-1])
            if len(nonempty):
                counts[nonempty] = np.add.reduceat(self.mask, self.offsets[nonempty], dtype=np.int64)
            # completion tokens at document starts are never targets: subtract them per row
            lengths = self.doc_lengths.astype(np.int64)
            starts = np.cumsum(lengths) - lengths
            real = (lengths > 0) & (starts < len(self.mask))
            at_start = np.zeros(len(lengths), dtype=np.int64)
            at_start[real] = self.mask[starts[real]] != 0
            per_row = np.concatenate([[0], np.cumsum(at_start)])
            counts -= per_row[self.doc_offsets[1:]] - per_row[self.doc_offsets[:-1]]
            self._loss_tokens = counts
        return self._loss_tokens

    @classmethod
    def from_arrow(cls, table: pa.Table) -> RowTable:
        def flat(name: str, dtype) -> tuple[np.ndarray, np.ndarray]:
            column = table.column(name).combine_chunks()
            offsets = column.offsets.to_numpy().astype(np.int64)
            values = column.values.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
            # a sliced list array may start its offsets above 0
            return values[offsets[0] : offsets[-1]], offsets - offsets[0]

        ids, offsets = flat("input_ids", np.int32)
        doc_lengths, doc_offsets = flat("seq_lengths", np.int32)
        mask, _ = flat("completion_mask", np.int8)
        return cls(ids=ids, offsets=offsets, doc_lengths=doc_lengths, doc_offsets=doc_offsets, mask=mask)


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The row order of one epoch: a permutation depending only on (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def plan_epoch(
    order: np.ndarray,
    row_tokens: np.ndarray,
    *,
    batch_size: int,
    grad_accum: int,
    tokens_per_micro: int | None = None,
    tokens_per_step: int | None = None,
) -> list[list[np.ndarray]]:
    """Group an epoch's rows into optimizer steps of micro-batches (each an array of row indices).

    A micro-batch takes `batch_size` rows, or, with `tokens_per_micro`, as many rows as fit in that
    many tokens (always at least one). A step takes `grad_accum` micro-batches, or, with
    `tokens_per_step`, micro-batches until it holds at least that many tokens. The last step of an
    epoch may be smaller; its loss is still normalised by its own loss tokens.
    """
    micros: list[np.ndarray] = []
    if tokens_per_micro is None:
        micros = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    else:
        lengths = row_tokens[order]
        start, used = 0, 0
        for i, n in enumerate(lengths.tolist()):
            if i > start and used + n > tokens_per_micro:
                micros.append(order[start:i])
                start, used = i, 0
            used += n
        if start < len(order):
            micros.append(order[start:])
    steps: list[list[np.ndarray]] = []
    if tokens_per_step is None:
        steps = [micros[i : i + grad_accum] for i in range(0, len(micros), grad_accum)]
    else:
        current: list[np.ndarray] = []
        used = 0
        for micro in micros:
            current.append(micro)
            used += int(row_tokens[micro].sum())
            if used >= tokens_per_step:
                steps.append(current)
                current, used = [], 0
        if current:
            steps.append(current)
    return steps


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # (1, T) int64
    position_ids: torch.Tensor  # (1, T) int64, restarting at 0 at every document
    cu_seqlens: torch.Tensor  # (docs + 1,) int32, document boundaries in the flattened row
    max_doc_len: int
    loss_positions: torch.Tensor  # (n,) int64: positions whose logits carry loss
    targets: torch.Tensor  # (n,) int64: the token predicted at each loss position
    doc_lengths: np.ndarray  # real documents only, for the attention FLOP count
    rows: np.ndarray
    padding: int = 0  # trailing pad tokens (their own document, no loss) added for a fixed shape
    # (n,) float32, 0 for loss positions added to reach a fixed count (`hive_train.cuda_graphs`); None: all 1
    loss_weights: torch.Tensor | None = None

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int(self.input_ids.shape[1]) - self.padding

    @property
    def length(self) -> int:
        """Length of the flattened row, padding included."""
        return int(self.input_ids.shape[1])

    @property
    def loss_tokens(self) -> int:
        """Real loss positions (padded ones, weighted 0, not counted)."""
        if self.loss_weights is not None:
            return int((self.loss_weights != 0).sum())
        return int(self.targets.shape[0])

    def to(self, device: torch.device | str) -> MicroBatch:
        move = {"non_blocking": True}
        return MicroBatch(
            input_ids=self.input_ids.to(device, **move),
            position_ids=self.position_ids.to(device, **move),
            cu_seqlens=self.cu_seqlens.to(device, **move),
            max_doc_len=self.max_doc_len,
            loss_positions=self.loss_positions.to(device, **move),
            targets=self.targets.to(device, **move),
            doc_lengths=self.doc_lengths,
            rows=self.rows,
            padding=self.padding,
            loss_weights=None if self.loss_weights is None else self.loss_weights.to(device, **move),
        )


def _gather(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenate values[offsets[r]:offsets[r+1]] for r in rows, vectorised."""
    starts, ends = offsets[rows], offsets[rows + 1]
    lengths = ends - starts
    total = int(lengths.sum())
    if total == 0:
        return values[:0]
    # index = start of its row + position within the row
    row_of = np.repeat(np.arange(len(rows)), lengths)
    within = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return values[starts[row_of] + within]


def flatten(table: RowTable, rows: np.ndarray, *, pad_to: int | None = None, pad_id: int = 0) -> MicroBatch:
    """Flatten rows into one micro-batch row with document boundaries (see the module docstring).

    `pad_to` appends pad tokens up to that length as one more document without loss, so that
    compiled kernels see a single shape; padding changes neither the loss nor the gradients.
    """
    rows = np.asarray(rows, dtype=np.int64)
    ids = _gather(table.ids, table.offsets, rows).astype(np.int64)
    mask = _gather(table.mask, table.offsets, rows).astype(bool)
    doc_lengths = _gather(table.doc_lengths, table.doc_offsets, rows).astype(np.int64)
    doc_lengths = doc_lengths[doc_lengths > 0]
    real_docs = doc_lengths
    padding = max(0, (pad_to or 0) - len(ids))
    if padding:
        ids = np.concatenate([ids, np.full(padding, pad_id, np.int64)])
        mask = np.concatenate([mask, np.zeros(padding, bool)])
        doc_lengths = np.concatenate([doc_lengths, [padding]])
    total = len(ids)
    doc_starts = np.zeros(len(doc_lengths) + 1, dtype=np.int64)
    np.cumsum(doc_lengths, out=doc_starts[1:])
    position_ids = np.arange(total, dtype=np.int64) - np.repeat(doc_starts[:-1], doc_lengths)
    # position p predicts token p+1: it carries loss when p+1 is a completion token that is not
    # the first token of its document
    carries = np.zeros(total, dtype=bool)
    if total > 1:
        carries[:-1] = mask[1:] & (position_ids[1:] != 0)
    loss_positions = np.flatnonzero(carries)
    return MicroBatch(
        input_ids=torch.from_numpy(ids)[None],
        position_ids=torch.from_numpy(position_ids)[None],
        cu_seqlens=torch.from_numpy(doc_starts.astype(np.int32)),
        max_doc_len=int(doc_lengths.max()) if len(doc_lengths) else 0,
        loss_positions=torch.from_numpy(loss_positions),
        targets=torch.from_numpy(ids[loss_positions + 1]) if total else torch.zeros(0, dtype=torch.int64),
        doc_lengths=real_docs,
        rows=rows,
        padding=padding,
    )


@dataclass
class Schedule:
    """Every optimizer step of the run, as (epoch, step-in-epoch) -> micro-batches of row indices."""

    epochs: list[list[list[np.ndarray]]]  # epoch -> step -> micro -> rows
    total_steps: int

    def locate(self, step: int) -> tuple[int, int]:
        """0-based global step -> (epoch, index within the epoch)."""
        for epoch, plan in enumerate(self.epochs):
            if step < len(plan):
                return epoch, step
            step -= len(plan)
        raise IndexError("step beyond the schedule")

    def micro_batches(self, step: int) -> list[np.ndarray]:
        epoch, index = self.locate(step)
        return self.epochs[epoch][index]

    def epoch_progress(self, step: int) -> float:
        """Epochs completed after 0-based `step` finishes (fractional)."""
        epoch, index = self.locate(step)
        return epoch + (index + 1) / len(self.epochs[epoch])


def build_schedule(
    row_tokens: np.ndarray,
    *,
    seed: int,
    epochs: float,
    max_steps: int | None,
    batch_size: int,
    grad_accum: int,
    tokens_per_micro: int | None,
    tokens_per_step: int | None,
) -> Schedule:
    """Plan the whole run. `max_steps` (when set) wins over `epochs`; fractional epochs cut the last one."""
    n_rows = len(row_tokens)
    plans: list[list[list[np.ndarray]]] = []
    total = 0
    wanted_epochs = math.ceil(epochs) if max_steps is None else None
    epoch = 0
    while n_rows:
        plan = plan_epoch(
            epoch_order(n_rows, seed, epoch),
            row_tokens,
            batch_size=batch_size,
            grad_accum=grad_accum,
            tokens_per_micro=tokens_per_micro,
            tokens_per_step=tokens_per_step,
        )
        if max_steps is not None:
            plan = plan[: max_steps - total]
        elif epoch == wanted_epochs - 1 and epochs != math.ceil(epochs):
            plan = plan[: max(1, round((epochs - math.floor(epochs)) * len(plan)))]
        plans.append(plan)
        total += len(plan)
        epoch += 1
        if (max_steps is not None and total >= max_steps) or (
            wanted_epochs is not None and epoch >= wanted_epochs
        ):
            break
    return Schedule(epochs=plans, total_steps=total)


def shard_micro_batches(micro_batches: list[np.ndarray], rank: int, world: int) -> list[np.ndarray]:
    """This rank's disjoint share of one optimizer step's micro-batches (data parallelism).

    Micro-batch m goes to rank m % world. When a step has fewer micro-batches than ranks, the
    largest micro-batches are halved (by rows, in order) until every rank has one or no piece has
    two rows left; a piece is a subset of a planned micro-batch, so token budgets still hold.
    Ranks left without a piece take part with zero gradients. With world == 1 the step is
    returned unchanged. A pure function of its arguments: every rank computes the same split.
    """
    pieces = list(micro_batches)
    while len(pieces) < world:
        largest = max(range(len(pieces)), key=lambda i: len(pieces[i]), default=None)
        if largest is None or len(pieces[largest]) < 2:
            break
        rows = pieces[largest]
        half = (len(rows) + 1) // 2
        pieces[largest : largest + 1] = [rows[:half], rows[half:]]
    return pieces[rank::world]


def micro_capacity(table: RowTable, micro_batches, multiple: int = 128) -> int:
    """The longest micro-batch in tokens, rounded up to `multiple`: the one padded shape."""
    longest = max((int(table.row_tokens[rows].sum()) for rows in micro_batches), default=1)
    return -(-longest // multiple) * multiple


def eval_batches(table: RowTable, *, batch_size: int, tokens_per_micro: int | None) -> list[np.ndarray]:
    """Validation micro-batches, in file order (no shuffling: the val loss is comparable across evals)."""
    order = np.arange(table.rows)
    steps = plan_epoch(
        order, table.row_tokens, batch_size=batch_size, grad_accum=1, tokens_per_micro=tokens_per_micro
    )
    return [micro for step in steps for micro in step]
