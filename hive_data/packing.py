"""Global best-fit-decreasing packing of documents into rows of `seq` tokens.

Pure functions on numpy arrays of document lengths; no tokens are touched here.

Best-fit decreasing: documents are taken longest first (ties by index, so the result depends only on
the lengths), and each goes into the open row whose free space is the smallest that still fits it,
or starts a new row. Rows are grouped by their free space (0..seq); a bit set over free-space values
finds the smallest fitting one with one shift and one lowest-set-bit operation, so after the
O(n log n) sort each document costs O(seq / 64) word operations, independent of n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Packing:
    """Rows of documents: row r holds documents `order[row_offsets[r]:row_offsets[r+1]]`."""

    order: np.ndarray  # int64 document indices, row after row
    row_offsets: np.ndarray  # int64, len = rows + 1
    row_tokens: np.ndarray  # int64 tokens per row
    seq: int

    @property
    def rows(self) -> int:
        return len(self.row_tokens)

    @property
    def tokens(self) -> int:
        return int(self.row_tokens.sum())

    @property
    def padding(self) -> int:
        """Tokens of padding the rows would need to be `seq` long each."""
        return self.rows * self.seq - self.tokens

    @property
    def fill(self) -> float:
        """Share of the `rows * seq` slots holding real tokens (1.0 when there are no rows)."""
        return self.tokens / (self.rows * self.seq) if self.rows else 1.0


def best_fit_decreasing(lengths: np.ndarray, seq: int) -> Packing:
    """Pack documents of the given lengths (each 1..seq) into as few rows of `seq` tokens as BFD finds.

    Deterministic: the result depends only on `lengths` and `seq`. Within a row, documents keep the
    order they were placed in (longest first).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    n = len(lengths)
    if n and (lengths.min() < 1 or lengths.max() > seq):
        raise ValueError(f"document lengths must be within 1..{seq}")
    # stable sort on -length: longest first, equal lengths in index order
    by_size = np.argsort(-lengths, kind="stable")
    row_of = np.empty(n, dtype=np.int64)
    row_used: list[int] = []
    # rows_with_space[s]: rows whose free space is exactly s (a stack: the last opened is reused first)
    rows_with_space: list[list[int]] = [[] for _ in range(seq + 1)]
    free_bits = 0  # bit s set <=> rows_with_space[s] is not empty (s >= 1)
    sizes = lengths[by_size].tolist()
    for pos, size in enumerate(sizes):
        fits = free_bits >> size
        if fits:
            space = size + ((fits & -fits).bit_length() - 1)
            bucket = rows_with_space[space]
            row = bucket.pop()
            if not bucket:
                free_bits &= ~(1 << space)
            row_used[row] += size
        else:
            row = len(row_used)
            row_used.append(size)
            space = seq
        row_of[pos] = row
        left = space - size
        if left > 0:
            if not rows_with_space[left]:
                free_bits |= 1 << left
            rows_with_space[left].append(row)
    # documents grouped by row, in placement order within a row
    group = np.argsort(row_of, kind="stable")
    order = by_size[group]
    counts = np.bincount(row_of, minlength=len(row_used)) if n else np.zeros(0, np.int64)
    row_offsets = np.zeros(len(row_used) + 1, dtype=np.int64)
    np.cumsum(counts, out=row_offsets[1:])
    return Packing(
        order=order, row_offsets=row_offsets, row_tokens=np.asarray(row_used, dtype=np.int64), seq=seq
    )


def shuffle_rows(packing: Packing, seed: int) -> Packing:
    """The same rows in a seeded random order, so that training does not see the longest documents
    first. Deterministic for a given packing and seed."""
    perm = np.random.default_rng(seed).permutation(packing.rows)
    counts = np.diff(packing.row_offsets)[perm]
    starts = packing.row_offsets[:-1][perm]
    row_offsets = np.zeros(packing.rows + 1, dtype=np.int64)
    np.cumsum(counts, out=row_offsets[1:])
    # gather each row's slice of `order` in the new row order, vectorized
    within = np.arange(row_offsets[-1], dtype=np.int64) - np.repeat(row_offsets[:-1], counts)
    order = packing.order[np.repeat(starts, counts) + within]
    return Packing(order=order, row_offsets=row_offsets, row_tokens=packing.row_tokens[perm], seq=packing.seq)


def length_histogram(lengths: np.ndarray, seq: int, bins: int = 16) -> dict:
    """Document-length histogram over 0..seq in `bins` equal-width bins (edges are ints)."""
    edges = np.unique(np.linspace(0, seq, bins + 1).round().astype(np.int64))
    counts, _ = np.histogram(np.asarray(lengths, dtype=np.int64), bins=edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}
