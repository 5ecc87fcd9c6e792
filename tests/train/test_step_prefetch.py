"""The host work a graphed step does ahead (`CudaGraphStep.prefetch`) and the loop's one read-back
per step (`loop.reduce_and_clip`), checked on the CPU: the replay itself needs a GPU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from train_helpers import make_documents, packed_table

from hive_train.cuda_graphs import (
    STATIC_FIELDS,
    GraphedStep,
    Prepared,
    empty_micro_batch,
    pad_static,
    static_shape,
)
from hive_train.data import build_schedule, flatten
from hive_train.loop import reduce_and_clip
from hive_train.steps import CudaGraphStep


@pytest.fixture(scope="module")
def table():
    return packed_table(make_documents(40, seed=5, min_len=4, max_len=40), 64)


@pytest.fixture
def setup(table):
    schedule = build_schedule(
        table.row_tokens, seed=1, epochs=1, max_steps=None, batch_size=2, grad_accum=2,
        tokens_per_micro=None, tokens_per_step=None,
    )  # fmt: skip
    steps = [step for plan in schedule.epochs for step in plan]
    shape = static_shape(table, [m for step in steps for m in step], multiple=16)
    graphed = GraphedStep(
        torch.nn.Linear(2, 2), "varlen", shape, pad_id=0, device=torch.device("cpu"), micro=2
    )
    step = CudaGraphStep(graphed, table, fallback=None, log=lambda msg: None)
    return step, schedule


def assert_same(got: Prepared, want: list):
    assert len(got.batches) == len(want)
    for a, b in zip(got.batches, want):
        for name in STATIC_FIELDS:
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert a.max_doc_len == b.max_doc_len and a.padding == b.padding
        assert np.array_equal(a.rows, b.rows)


def test_prefetched_batches_are_those_run_would_build(setup, table):
    step, schedule = setup
    shape = step.graphed_step.shape
    for index in range(schedule.total_steps):
        rows = schedule.micro_batches(index)
        step.prefetch(rows)
        ahead = step.ahead[1]
        want = [pad_static(flatten(table, r), shape, 0) for r in rows]
        want += [pad_static(empty_micro_batch(), shape, 0)] * (2 - len(rows))  # a short last step
        got = step.prepared(list(rows))  # the loop hands over a new list of the same arrays
        assert got is ahead and step.ahead is None
        assert_same(got, want)


def test_batches_prefetched_for_other_rows_are_not_used(setup, table):
    step, schedule = setup
    step.prefetch(schedule.micro_batches(0))
    rows = schedule.micro_batches(1)
    got = step.prepared(rows)
    assert step.ahead is None
    assert_same(got, step.graphed_step.prepare([flatten(table, r) for r in rows]).batches)
    # equal values in other arrays: built again rather than trusted
    step.prefetch(rows)
    ahead = step.ahead[1]
    assert step.prepared([r.copy() for r in rows]) is not ahead


def test_no_prefetch_after_the_capture_failed(setup):
    step, schedule = setup
    step.eager = object()  # what `run` sets when the capture fails
    step.prefetch(schedule.micro_batches(0))
    assert step.ahead is None


def test_a_batch_that_does_not_fit_is_left_for_its_own_step(setup):
    step, schedule = setup
    too_many = list(schedule.micro_batches(0)) * 2
    step.prefetch(too_many)
    assert step.ahead is None
    with pytest.raises(ValueError, match="graphed for 2"):
        step.prepared(too_many)


def grads_of(*values):
    params = []
    for v in values:
        p = torch.nn.Parameter(torch.zeros(len(v)))
        p.grad = torch.tensor(v, dtype=torch.float32)
        params.append(p)
    return params


def test_loss_and_norm_come_back_together_and_the_gradients_are_clipped():
    params = grads_of([3.0, 0.0], [4.0])
    loss = torch.tensor(0.25, dtype=torch.float64)
    assert reduce_and_clip(params, loss, 1.0) == (0.25, pytest.approx(5.0))
    assert torch.cat([p.grad for p in params]).norm() == pytest.approx(1.0, rel=1e-5)
    params = grads_of([3.0, 0.0], [4.0])
    loss_value, norm = reduce_and_clip(params, loss, None)  # no clipping
    assert norm == pytest.approx(5.0) and params[1].grad.item() == 4.0
    assert isinstance(loss_value, float) and isinstance(norm, float)


def test_non_finite_values_come_back_for_the_check():
    loss, norm = reduce_and_clip(grads_of([1.0]), torch.tensor(float("nan"), dtype=torch.float64), 1.0)
    assert math.isnan(loss) and norm == pytest.approx(1.0)
    loss, norm = reduce_and_clip(grads_of([float("inf")]), torch.tensor(0.5, dtype=torch.float64), 1.0)
    assert loss == 0.5 and not math.isfinite(norm)
