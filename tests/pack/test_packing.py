"""Global best-fit-decreasing packing as a pure function."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hive_data.binpack import (
    best_fit_decreasing,
    exact_fit_first,
    length_histogram,
    pack_documents,
    refine,
    shuffle_rows,
)


def reference_bfd(lengths, seq):
    """Textbook BFD, quadratic: longest first (ties by index), into the fullest row that still fits."""
    rows: list[list[int]] = []
    used: list[int] = []
    for doc in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        size = lengths[doc]
        best = None
        for r in range(len(rows)):
            if used[r] + size <= seq and (best is None or used[r] > used[best]):
                best = r
        if best is None:
            rows.append([])
            used.append(0)
            best = len(rows) - 1
        rows[best].append(doc)
        used[best] += size
    return rows


def rows_of(packing):
    return [packing.order[a:b].tolist() for a, b in zip(packing.row_offsets[:-1], packing.row_offsets[1:])]


def check_valid(packing, lengths, seq):
    lengths = np.asarray(lengths)
    assert sorted(packing.order.tolist()) == list(range(len(lengths)))  # every document exactly once
    for row, tokens in zip(rows_of(packing), packing.row_tokens.tolist()):
        assert row and int(lengths[row].sum()) == tokens <= seq


@settings(max_examples=80, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), max_size=120), seq=st.integers(64, 100))
def test_same_fill_as_textbook_bfd(lengths, seq):
    packing = best_fit_decreasing(np.array(lengths, dtype=np.int64), seq)
    check_valid(packing, lengths, seq)
    ref = reference_bfd(lengths, seq)
    # the same number of rows and the same multiset of row loads (ties between equally full rows may
    # be broken differently, which changes which row a document lands in but not the loads)
    assert packing.rows == len(ref)
    assert sorted(packing.row_tokens.tolist()) == sorted(sum(lengths[d] for d in row) for row in ref)


def test_fill_on_a_realistic_length_distribution():
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(300), 0.8, 20_000).astype(np.int64), 1, 2048)
    packing = best_fit_decreasing(lengths, 2048)
    check_valid(packing, lengths, 2048)
    assert packing.fill >= 0.995
    assert packing.padding == packing.rows * 2048 - int(lengths.sum())


def test_deterministic_and_independent_of_input_array_type():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 500, 3000)
    a = best_fit_decreasing(lengths, 512)
    b = best_fit_decreasing(lengths.astype(np.int32).tolist(), 512)
    assert a.order.tolist() == b.order.tolist() and a.row_offsets.tolist() == b.row_offsets.tolist()


def test_full_documents_and_empty_input():
    p = best_fit_decreasing(np.array([8, 8, 3, 5]), 8)
    assert sorted(p.row_tokens.tolist()) == [8, 8, 8]
    assert p.fill == 1.0
    empty = best_fit_decreasing(np.zeros(0, dtype=np.int64), 8)
    assert empty.rows == 0 and empty.fill == 1.0


@pytest.mark.parametrize("bad", [[0], [9], [-1]])
def test_lengths_outside_the_row_are_refused(bad):
    with pytest.raises(ValueError):
        best_fit_decreasing(np.array(bad), 8)


def test_shuffle_keeps_rows_and_depends_on_the_seed():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 200, 2000)
    packing = best_fit_decreasing(lengths, 256)
    a, b, c = shuffle_rows(packing, 0), shuffle_rows(packing, 0), shuffle_rows(packing, 1)
    check_valid(a, lengths, 256)
    assert sorted(map(tuple, rows_of(a))) == sorted(map(tuple, rows_of(packing)))
    assert rows_of(a) == rows_of(b)
    assert rows_of(a) != rows_of(c)
    assert a.row_tokens.tolist() == [int(lengths[r].sum()) for r in rows_of(a)]


def test_length_histogram_counts_every_document():
    lengths = np.array([1, 10, 100, 1000, 2048, 2048])
    hist = length_histogram(lengths, 2048, bins=8)
    assert sum(hist["counts"]) == len(lengths)
    assert hist["edges"][0] == 0 and hist["edges"][-1] == 2048


def long_schema_mix(n: int, seed: int) -> np.ndarray:
    """Text-to-SQL-like lengths: most rows a few hundred tokens, one in seven with a schema filling
    more than half a row (where BFD leaves a gap in most of those rows)."""
    rng = np.random.default_rng(seed)
    short = np.clip(rng.lognormal(np.log(420), 0.45, n), 160, 1024)
    long = rng.integers(1025, 2049, n)
    return np.where(rng.random(n) < 0.15, long, short).astype(np.int64)


@pytest.mark.parametrize("seed", [0, 1])
def test_pack_documents_fills_rows_with_long_documents(seed):
    lengths = long_schema_mix(20_000, seed)
    bfd = best_fit_decreasing(lengths, 2048)
    packed = pack_documents(lengths, 2048)
    check_valid(packed, lengths, 2048)
    assert packed.fill >= 0.995 > bfd.fill
    again = pack_documents(lengths, 2048)
    assert packed.order.tolist() == again.order.tolist()
    assert packed.row_offsets.tolist() == again.row_offsets.tolist()


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 64), max_size=150), seq=st.integers(64, 100))
def test_refinements_are_valid_and_never_worse_than_bfd(lengths, seq):
    lengths = np.array(lengths, dtype=np.int64)
    bfd = best_fit_decreasing(lengths, seq)
    for packing in (exact_fit_first(lengths, seq), refine(lengths, bfd), pack_documents(lengths, seq)):
        check_valid(packing, lengths, seq)
    assert refine(lengths, bfd).rows <= bfd.rows
    assert pack_documents(lengths, seq).rows <= bfd.rows


def test_exact_fit_first_closes_rows_exactly():
    # 8 + 2, 7 + 3, 6 + 3 + 1, 5 + 2 + 2 + 1: every row can be made exactly full
    lengths = np.array([6, 3, 1, 5, 2, 2, 1, 7, 3, 8, 2])
    packing = exact_fit_first(lengths, 10)
    check_valid(packing, lengths, 10)
    assert packing.rows == 4 and packing.fill == 1.0
