"""The fixed shapes behind CUDA-graph steps (hive_train/cuda_graphs.py), checked on the CPU.

The capture and replay need a GPU (the device benchmark runs them); what they rest on runs here:
every micro-batch of a schedule fits the planned shape, and the padded batch gives the loss and
adapter gradients of the unpadded one through the real fast path (NF4 + DoRA, float32).
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
import torch
from test_train_equivalence import grads, make_model, zero
from train_helpers import make_documents, packed_table

from hive_train.config import TrainConfig
from hive_train.cuda_graphs import (
    empty_micro_batch,
    graph_eligibility,
    micro_batches_per_step,
    pad_static,
    static_shape,
)
from hive_train.data import build_schedule, flatten
from hive_train.loss import micro_loss


@pytest.fixture(scope="module")
def table():
    return packed_table(make_documents(40, seed=5, min_len=4, max_len=40), 64)


def micro_batches(table, batch_size=3):
    schedule = build_schedule(
        table.row_tokens, seed=1, epochs=1, max_steps=None, batch_size=batch_size, grad_accum=1,
        tokens_per_micro=None, tokens_per_step=None,
    )  # fmt: skip
    return schedule, [m for plan in schedule.epochs for step in plan for m in step]


def test_every_micro_batch_fits_the_static_shape_as_valid_documents(table):
    _, micros = micro_batches(table)
    shape = static_shape(table, micros, multiple=16)
    assert shape.tokens % 16 == 0 and shape.loss_tokens % 16 == 0
    sizes = {int(table.row_tokens[m].sum()) for m in micros}
    assert len(sizes) > 1, "micro-batches of different lengths, so that padding is exercised"
    for rows in micros:
        plain = flatten(table, rows)
        padded = pad_static(plain, shape, pad_id=0)
        cu = padded.cu_seqlens.numpy().astype(np.int64)
        lengths = np.diff(cu)
        assert padded.length == shape.tokens and len(cu) == shape.docs + 1
        assert cu[0] == 0 and cu[-1] == shape.tokens and (lengths >= 0).all()
        assert lengths.max() <= shape.max_doc == padded.max_doc_len
        # positions restart at every (non-empty) document and count up inside it
        starts = np.repeat(cu[:-1], lengths)
        assert (padded.position_ids[0].numpy() == np.arange(shape.tokens) - starts).all()
        # the real part is untouched; padded loss positions carry weight 0
        assert torch.equal(padded.input_ids[0, : plain.length], plain.input_ids[0])
        assert padded.loss_tokens == plain.loss_tokens
        assert float(padded.loss_weights.sum()) == plain.loss_tokens
        assert len(padded.targets) == shape.loss_tokens


def test_an_empty_micro_batch_pads_to_the_shape_without_loss(table):
    _, micros = micro_batches(table)
    shape = static_shape(table, micros, multiple=16)
    padded = pad_static(empty_micro_batch(), shape, pad_id=0)
    cu = padded.cu_seqlens.numpy()
    assert padded.length == shape.tokens and len(cu) == shape.docs + 1 and cu[-1] == shape.tokens
    assert np.diff(cu).max() <= shape.max_doc
    assert padded.loss_tokens == 0 and len(padded.targets) == shape.loss_tokens


def test_micro_batches_per_step_tolerates_a_short_last_step_only(table):
    def schedule(*counts):
        step = [np.arange(1)]
        return types.SimpleNamespace(epochs=[[step * n for n in counts]])

    assert micro_batches_per_step(schedule(4, 4, 4)) == 4
    assert micro_batches_per_step(schedule(*([4] * 30), 2)) == 4  # 2 empty in 122: within 5%
    assert micro_batches_per_step(schedule(4, 1, 4, 2)) is None  # token budgets that vary
    real, _ = micro_batches(table)
    assert micro_batches_per_step(real) == 1


def test_a_micro_batch_larger_than_the_shape_is_refused(table):
    _, micros = micro_batches(table)
    shape = static_shape(table, micros[:1], multiple=1)
    bigger = max(micros, key=lambda rows: int(table.row_tokens[rows].sum()))
    small = dataclasses.replace(shape, tokens=int(table.row_tokens[bigger].sum()) - 1)
    with pytest.raises(ValueError, match="does not fit"):
        pad_static(flatten(table, bigger), small, pad_id=0)


def test_padding_changes_neither_the_loss_nor_the_adapter_gradients(table):
    model = make_model()
    _, micros = micro_batches(table)
    shape = static_shape(table, micros, multiple=32)
    rows = min(micros, key=lambda m: int(table.row_tokens[m].sum()))  # the most padding
    plain = flatten(table, rows)
    padded = pad_static(plain, shape, pad_id=0)
    assert padded.padding > 0 and padded.loss_weights.eq(0).any()
    results = []
    for batch in (plain, padded):
        zero(model)
        model.hive_fast.mark_stale()
        loss = micro_loss(model, batch, "sdpa")
        loss.backward()
        results.append((float(loss), grads(model)))
    (loss_a, ga), (loss_b, gb) = results
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    for name in ga:  # equal up to float32 summation order (the GEMMs see more rows)
        assert (gb[name] - ga[name]).norm() <= 1e-6 * ga[name].norm(), name
    # the empty micro-batch that fills a short step adds nothing
    zero(model)
    loss = micro_loss(model, pad_static(empty_micro_batch(), shape, pad_id=0), "sdpa")
    loss.backward()
    assert float(loss) == 0.0
    assert all(float(g.abs().max()) == 0.0 for g in grads(model).values())


def test_graphs_are_refused_where_they_cannot_hold(table):
    model = make_model()
    cuda = torch.device("cuda")
    one, _ = micro_batches(table)
    varying = types.SimpleNamespace(epochs=[[[np.arange(2)] * n for n in (3, 1, 3, 1)]])
    cfg = TrainConfig()
    ok = {
        "device": cuda,
        "fast": model.hive_fast,
        "backend": "varlen",
        "cfg": cfg,
        "data_parallel": False,
        "schedule": one,
    }
    assert graph_eligibility(**ok) is None
    assert graph_eligibility(**{**ok, "device": torch.device("cpu")}) == "not on CUDA"
    assert graph_eligibility(**{**ok, "backend": "flex"}) == "attention is flex, not varlen"
    accum = build_schedule(
        table.row_tokens, seed=1, epochs=1, max_steps=None, batch_size=2, grad_accum=2,
        tokens_per_micro=None, tokens_per_step=None,
    )  # fmt: skip
    assert graph_eligibility(**{**ok, "schedule": accum}) is None  # accumulation runs inside the graph
    assert (
        graph_eligibility(**{**ok, "schedule": varying})
        == "the number of micro-batches per step varies too much"
    )
    # a process group, even of one process (torchrun), re-points .grad at its flat buffer
    reason = graph_eligibility(**{**ok, "data_parallel": True})
    assert reason == "data parallel (a process group is running)"
    # hive's own checkpointing is captured with the step; with dropout the recomputation would
    # need the RNG state, which a capture cannot read
    for recompute in (
        dataclasses.replace(cfg, gradient_checkpointing=True),
        dataclasses.replace(cfg, checkpoint_layers=3),
    ):
        assert graph_eligibility(**{**ok, "cfg": recompute}) is None
        with_dropout = dataclasses.replace(recompute, dropout=0.1)
        assert graph_eligibility(**{**ok, "cfg": with_dropout}) == "activation checkpointing with dropout"
    assert graph_eligibility(**{**ok, "fast": None}) is not None
