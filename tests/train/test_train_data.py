"""The trainer's pure parts: flattening with document boundaries, batching plans, schedule, LR."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from hive_data.shards import rows_to_batch
from hive_train.config import TrainConfig
from hive_train.data import RowTable, build_schedule, epoch_order, eval_batches, flatten, plan_epoch
from hive_train.optim import lr_at


def table_of(rows):
    batch = rows_to_batch(
        [np.array(r[0], np.int32) for r in rows],
        [np.array(r[1], np.int32) for r in rows],
        [np.array(r[2], np.int8) for r in rows],
    )
    return RowTable.from_arrow(pa.Table.from_batches([batch]))


def test_flatten_restarts_positions_and_never_predicts_across_documents():
    table = table_of(
        [
            ([11, 12, 13, 14, 15], [2, 3], [0, 1, 0, 1, 1]),
            ([21, 22, 23], [3], [1, 1, 1]),
        ]
    )
    mb = flatten(table, np.array([1, 0]))
    assert mb.input_ids.tolist() == [[21, 22, 23, 11, 12, 13, 14, 15]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    assert mb.cu_seqlens.tolist() == [0, 3, 5, 8]
    assert mb.max_doc_len == 3
    # position p predicts p+1; document starts (23->11, 12->13) are never targets
    assert mb.loss_positions.tolist() == [0, 1, 3, 5, 6]
    assert mb.targets.tolist() == [22, 23, 12, 14, 15]
    assert mb.tokens == 8 and mb.loss_tokens == 5


def test_flatten_handles_sliced_tables():
    rows = [([1, 2], [2], [0, 1]), ([3, 4, 5], [3], [0, 1, 1]), ([6, 7], [2], [1, 1])]
    batch = rows_to_batch(
        [np.array(r[0], np.int32) for r in rows],
        [np.array(r[1], np.int32) for r in rows],
        [np.array(r[2], np.int8) for r in rows],
    )
    sliced = RowTable.from_arrow(pa.Table.from_batches([batch]).slice(1))
    assert sliced.rows == 2
    assert flatten(sliced, np.array([0])).input_ids.tolist() == [[3, 4, 5]]


def test_epoch_order_is_seeded_and_changes_per_epoch():
    assert np.array_equal(epoch_order(50, 7, 0), epoch_order(50, 7, 0))
    assert not np.array_equal(epoch_order(50, 7, 0), epoch_order(50, 7, 1))
    assert not np.array_equal(epoch_order(50, 7, 0), epoch_order(50, 8, 0))
    assert sorted(epoch_order(50, 7, 3)) == list(range(50))


def test_plan_by_rows_and_by_tokens():
    order = np.arange(10)
    tokens = np.array([5, 5, 5, 5, 9, 1, 1, 1, 1, 1])
    steps = plan_epoch(order, tokens, batch_size=3, grad_accum=2)
    assert [[m.tolist() for m in s] for s in steps] == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9]]]
    steps = plan_epoch(order, tokens, batch_size=99, grad_accum=99, tokens_per_micro=10, tokens_per_step=12)
    micros = [m.tolist() for s in steps for m in s]
    assert micros == [[0, 1], [2, 3], [4, 5], [6, 7, 8, 9]]
    assert all(tokens[m].sum() <= 10 for m in micros)
    assert [len(s) for s in steps] == [2, 2]  # a step closes once it holds 12 tokens or more


def test_plan_keeps_an_oversized_row_alone():
    steps = plan_epoch(np.arange(3), np.array([4, 50, 4]), batch_size=1, grad_accum=1, tokens_per_micro=10)
    assert [m.tolist() for s in steps for m in s] == [[0], [1], [2]]


def test_schedule_epochs_fractions_and_max_steps():
    tokens = np.full(8, 10)
    kw = dict(seed=0, batch_size=2, grad_accum=1, tokens_per_micro=None, tokens_per_step=None)
    two = build_schedule(tokens, epochs=2, max_steps=None, **kw)
    assert two.total_steps == 8 and len(two.epochs) == 2
    assert sorted(np.concatenate([m for s in two.epochs[1] for m in s]).tolist()) == list(range(8))
    assert two.locate(5) == (1, 1)
    assert two.epoch_progress(3) == 1.0
    half = build_schedule(tokens, epochs=1.5, max_steps=None, **kw)
    assert half.total_steps == 6
    capped = build_schedule(tokens, epochs=1, max_steps=11, **kw)
    assert capped.total_steps == 11 and len(capped.epochs) == 3


def test_eval_batches_cover_the_split_in_order():
    table = table_of([([1, 2], [2], [0, 1])] * 5)
    micros = eval_batches(table, batch_size=2, tokens_per_micro=None)
    assert np.concatenate(micros).tolist() == [0, 1, 2, 3, 4]


def test_lr_warmup_then_cosine_to_min():
    cfg = TrainConfig(lr=1.0, warmup_ratio=0.1, lr_scheduler="cosine", min_lr_ratio=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 89 / 90)))
    const = TrainConfig(lr=2.0, warmup_ratio=0.0, lr_scheduler="constant")
    assert {lr_at(s, 10, const) for s in range(10)} == {2.0}


def test_padding_is_one_more_document_without_loss():
    table = table_of([([11, 12, 13], [3], [0, 1, 1])])
    mb = flatten(table, np.array([0]), pad_to=6, pad_id=9)
    assert mb.input_ids.tolist() == [[11, 12, 13, 9, 9, 9]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 0, 1, 2]]
    assert mb.cu_seqlens.tolist() == [0, 3, 6]
    assert mb.loss_positions.tolist() == [0, 1]
    assert (mb.tokens, mb.length, mb.padding) == (3, 6, 3)
    assert mb.doc_lengths.tolist() == [3]
