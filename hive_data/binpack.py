"""Global packing of documents into rows of `seq` tokens, over the whole dataset at once.

Pure functions on numpy arrays of document lengths; no tokens are touched here. `pack_documents` is
what `hive-data pack` uses; it is best-fit decreasing plus two refinements, and keeps whichever
result needs fewer rows:

- `best_fit_decreasing`: documents longest first (ties by index, so the result depends only on the
  lengths), each into the open row whose free space is the smallest that still fits it. Rows are
  grouped by free space (0..seq); a bit set over free-space values finds the smallest fitting one
  with one shift and one lowest-set-bit operation, so after the O(n log n) sort each document costs
  O(seq / 64) word operations.
- `exact_fit_first`: longest first, each document opens a row that is completed *exactly* to `seq`
  by one, two or three shorter documents when such a set exists (searched over the distinct length
  values with bit-set lookups, O(seq / 64) word operations per row); documents without an exact
  completion are packed by BFD afterwards. BFD alone leaves a gap in most rows that hold one long document (the gap is
  smaller than any document left when it is reached); exact completion avoids that on datasets with
  many long documents, such as text-to-SQL rows with large schemas.
- `refine`: the emptiest rows are dissolved into a pool; every other row with free space takes a
  pool document or swaps one of its documents for a longer pool document that still fits, which
  moves tokens out of the pool; the rest of the pool is packed again. A few rounds.

All of it is deterministic: same lengths and `seq`, same rows.
"""

from __future__ import annotations

import bisect
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


def _from_rows(rows: list[list[int]], lengths: np.ndarray, seq: int) -> Packing:
    counts = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    row_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=row_offsets[1:])
    order = np.fromiter((d for r in rows for d in r), dtype=np.int64, count=int(row_offsets[-1]))
    row_tokens = np.add.reduceat(lengths[order], row_offsets[:-1]) if len(rows) else np.zeros(0, np.int64)
    return Packing(order=order, row_offsets=row_offsets, row_tokens=row_tokens.astype(np.int64), seq=seq)


def _rows_of(packing: Packing) -> list[list[int]]:
    order = packing.order.tolist()
    offs = packing.row_offsets.tolist()
    return [order[a:b] for a, b in zip(offs[:-1], offs[1:])]


def _check(lengths, seq: int) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and (lengths.min() < 1 or lengths.max() > seq):
        raise ValueError(f"document lengths must be within 1..{seq}")
    return lengths


class _Available:
    """Multiset of document lengths 0..seq with O(seq / 64) lookups: bit v of `fwd` is set while some
    document of length v is left, bit (seq - v) of `rev` likewise, so the lengths a with a partner
    b = t - a are the set bits of `fwd & (rev >> (seq - t))`."""

    def __init__(self, lengths: np.ndarray, seq: int):
        self.seq = seq
        self.count = np.bincount(lengths, minlength=seq + 1).astype(np.int64).tolist()
        self.fwd = self.rev = 0
        for v, c in enumerate(self.count):
            if c:
                self.fwd |= 1 << v
                self.rev |= 1 << (seq - v)

    def take(self, v: int) -> None:
        self.count[v] -= 1
        if self.count[v] == 0:
            self.fwd ^= 1 << v
            self.rev ^= 1 << (self.seq - v)

    def put(self, v: int) -> None:
        if self.count[v] == 0:
            self.fwd |= 1 << v
            self.rev |= 1 << (self.seq - v)
        self.count[v] += 1

    def pair(self, target: int) -> tuple[int, int] | None:
        """Two lengths a >= b >= 1 left with a + b == target, the most balanced such pair (keeps the
        shortest documents for later gaps)."""
        if target < 2:
            return None
        half = (target + 1) // 2
        if target % 2 == 0 and self.count[target // 2] >= 2:
            return target // 2, target // 2
        # a in [half', target - 1] with a partner; a == target / 2 was handled above
        lo = half + (1 if target % 2 == 0 else 0)
        both = (self.fwd & (self.rev >> (self.seq - target))) >> lo
        both &= (1 << max(0, target - lo)) - 1
        if not both:
            return None
        a = lo + (both & -both).bit_length() - 1
        return a, target - a

    def largest_below(self, limit: int, k: int) -> list[int]:
        """Up to k distinct lengths left in 1..limit-1, longest first."""
        bits = self.fwd & ((1 << limit) - 2)
        out = []
        while bits and len(out) < k:
            v = bits.bit_length() - 1
            out.append(v)
            bits ^= 1 << v
        return out


def exact_fit_first(lengths, seq: int, triple_candidates: int = 4) -> Packing:
    """Rows completed exactly to `seq` where one, two or three shorter documents allow it (see the
    module doc); the documents left over are packed with BFD."""
    lengths = _check(lengths, seq)
    n = len(lengths)
    avail = _Available(lengths, seq)
    # per length value, its documents with the lowest index on top of the stack
    by_len = np.lexsort((-np.arange(n), lengths))
    bounds = np.searchsorted(lengths[by_len], np.arange(seq + 2))
    stacks = [by_len[bounds[v] : bounds[v + 1]].tolist() for v in range(seq + 1)]
    rows: list[list[int]] = []
    deferred: list[int] = []
    for v in range(seq, 0, -1):
        while avail.count[v] > 0:
            doc = stacks[v].pop()
            avail.take(v)
            gap = seq - v
            found: tuple[int, ...] | None = () if gap == 0 else None
            if found is None and avail.count[gap] > 0:
                found = (gap,)
            if found is None:
                found = avail.pair(gap)
            if found is None and triple_candidates:
                for first in avail.largest_below(gap, triple_candidates):
                    avail.take(first)
                    rest = avail.pair(gap - first)
                    avail.put(first)
                    if rest is not None:
                        found = (first, *rest)
                        break
            if found is None:
                deferred.append(doc)
                continue
            row = [doc]
            for size in found:
                row.append(stacks[size].pop())
                avail.take(size)
            rows.append(row)
    if deferred:
        rest = np.asarray(deferred, dtype=np.int64)
        bfd = best_fit_decreasing(lengths[rest], seq)
        rows += [rest[r].tolist() for r in _rows_of(bfd)]
    return _from_rows(rows, lengths, seq)


def refine(lengths, packing: Packing, rounds: int = 3, dissolve: float = 0.01) -> Packing:
    """Move tokens out of the emptiest rows into the gaps of the others (see the module doc). Never
    returns more rows than it was given."""
    lengths = _check(lengths, packing.seq)
    seq = packing.seq
    rows = _rows_of(packing)
    for _ in range(rounds):
        used = [int(lengths[r].sum()) for r in rows]
        emptiest = sorted(range(len(rows)), key=lambda i: (used[i], i))[: max(1, int(len(rows) * dissolve))]
        gone = set(emptiest)
        pool = sorted((int(lengths[d]), d) for i in emptiest for d in rows[i])
        keep = [i for i in range(len(rows)) if i not in gone]
        for i in keep:
            row, gap = rows[i], seq - used[i]
            while gap > 0 and pool:
                # best move: insert a pool document, or swap one out for a longer one; the largest gain
                j = bisect.bisect_right(pool, (gap, 1 << 62)) - 1
                best = (pool[j][0], -1, j) if j >= 0 else None
                for pos, doc in enumerate(row):
                    size = int(lengths[doc])
                    j = bisect.bisect_right(pool, (size + gap, 1 << 62)) - 1
                    if j >= 0 and pool[j][0] > size and (best is None or pool[j][0] - size > best[0]):
                        best = (pool[j][0] - size, pos, j)
                if best is None:
                    break
                gain, pos, j = best
                _, incoming = pool.pop(j)
                if pos < 0:
                    row.append(incoming)
                else:
                    outgoing = row[pos]
                    row[pos] = incoming
                    bisect.insort(pool, (int(lengths[outgoing]), outgoing))
                gap -= gain
                used[i] += gain
        rest = np.asarray([d for _, d in pool], dtype=np.int64)
        again = (
            [rest[r].tolist() for r in _rows_of(best_fit_decreasing(lengths[rest], seq))] if len(rest) else []
        )
        candidate = [rows[i] for i in keep] + again
        if len(candidate) > len(rows):
            break
        rows = candidate
    return _from_rows(rows, lengths, seq)


def pack_documents(lengths, seq: int) -> Packing:
    """The packing `hive-data pack` uses: refined BFD or refined exact-fit-first, whichever needs fewer
    rows (BFD on a tie). Deterministic; rows come out in no meaningful order (see `shuffle_rows`)."""
    lengths = _check(lengths, seq)
    if len(lengths) == 0:
        return best_fit_decreasing(lengths, seq)
    bfd = refine(lengths, best_fit_decreasing(lengths, seq))
    exact = refine(lengths, exact_fit_first(lengths, seq))
    return exact if exact.rows < bfd.rows else bfd
