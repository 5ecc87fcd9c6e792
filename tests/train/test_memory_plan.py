"""The --vram cost model and planner (hive_train/memory_plan.py): pure arithmetic, checked on its own.

Every plan fits its budget, keeps the rows of an optimizer step, and a bigger budget never gets a
slower plan; the cost model predicts the peaks measured on an H200 (the calibration's data).
"""

from __future__ import annotations

import re

import pytest
from train_helpers import TINY_MODEL

from hive_train import memory_plan as mp
from hive_train.config import QWEN_TARGETS, TIERS, tier_bytes
from hive_train.memory_plan import GB, MemoryCosts, plan, usable_bytes
from hive_train.model import ModelInfo, read_model_info

# Qwen3-0.6B's shapes, from its config.json
QWEN3_06B = ModelInfo(
    name="Qwen/Qwen3-0.6B", vocab_size=151936, max_positions=40960, layers=28, hidden=1024, heads=16,
    kv_heads=8, head_dim=128, intermediate=3072, eos_ids=(151645,),
)  # fmt: skip
TARGETS = list(QWEN_TARGETS)


def costs(keep_4bit: bool = False, **kwargs) -> MemoryCosts:
    return MemoryCosts.from_model(QWEN3_06B, 12, TARGETS, keep_4bit, **kwargs)


def tier_plan(tier: str, rows: int = 8, seq: int = 2048, **kwargs) -> mp.Plan:
    return plan(costs(keep_4bit=tier == "8"), usable_bytes(tier_bytes(tier)), rows, seq, **kwargs)


def test_the_cost_model_predicts_the_measured_peaks():
    """H200 (2026-12-02, the fast path of this tree), seq 2048, rank 12, CUDA graphs, 8 rows per
    step, peak allocated GB; the loss positions of the benchmark's micro-batches (the most over its
    schedule, padded to 128) as measured. `ACTIVATION_CALIBRATION` was fitted on these."""
    measured = [  # rows per micro-batch, loss positions, checkpointed layers, peak GB
        (8, 4096, 0, 25.46),
        (4, 2176, 0, 13.81),
        (2, 1152, 0, 7.88),
        (1, 640, 0, 4.94),
        (8, 4096, 7, 20.17),
        (8, 4096, 14, 14.80),
        (8, 4096, 28, 3.98),
    ]
    for rows, loss_tokens, k, peak in measured:
        predicted = costs().step_peak(rows * 2048, loss_tokens, k, 4096) / GB
        # at or a little above what ran: the calibration errs on the side of fitting
        assert peak * 0.99 <= predicted <= peak * 1.08, (rows, k, predicted, peak)


def test_costs_follow_the_settings():
    dense, four_bit = costs(), costs(keep_4bit=True)
    parts = dict(dense.breakdown)
    assert set(parts) >= {"NF4 base weights", "dense base copy", "embeddings", "adapter + AdamW"}
    assert 0.6 * GB < parts["dense base copy"] < 0.8 * GB  # ~352M adapted weights in bf16 (+ A rows)
    assert dense.fixed - four_bit.fixed == parts["dense base copy"]
    assert dense.layer == four_bit.layer  # keep_4bit changes the weights, not the activations
    # about 1.4 MB of saved activations per token over the 28 layers, 24x what a checkpointed layer keeps
    assert 1.3e6 < 28 * dense.layer < 1.6e6 and dense.layer > 20 * dense.checkpointed
    assert costs(quant="none").fixed > dense.fixed - parts["dense base copy"]  # bf16 base weights
    assert MemoryCosts.from_model(QWEN3_06B, 64, TARGETS, False).fixed > dense.fixed  # a bigger adapter
    assert costs(adapter="lora").layer < dense.layer  # LoRA keeps no outputs for a magnitude gradient
    assert costs(compute_bytes=4).layer > 1.9 * dense.layer  # float32 compute
    # the peak grows with tokens and loss positions, falls with checkpointed layers and smaller chunks
    peak = dense.step_peak
    assert peak(8192, 2048, 0, 4096) < peak(16384, 2048, 0, 4096) < peak(16384, 4096, 0, 4096)
    assert peak(16384, 4096, 0, 4096) > peak(16384, 4096, 0, 512) > peak(16384, 4096, 14, 512)
    assert all(peak(16384, 4096, k, 512) > peak(16384, 4096, k + 1, 512) for k in range(27))
    # the last layer gains nothing: with every layer checkpointed one recomputed layer is live
    assert peak(16384, 4096, 28, 512) >= peak(16384, 4096, 27, 512)
    # an evaluation between graph replays allocates beside the step's pool
    assert dense.peak(16384, 4096, 0, 4096) > peak(16384, 4096, 0, 4096)


def test_every_tier_fits_qwen3_06b_at_seq_2048():
    for tier in TIERS:
        for rows in (8, 64):
            chosen = tier_plan(tier, rows)
            assert chosen.fits and chosen.peak_bytes <= chosen.budget_bytes == usable_bytes(tier_bytes(tier))
            assert chosen.micro_rows * chosen.grad_accum == rows
            assert 0 <= chosen.checkpoint_layers <= 28 and chosen.loss_chunk in mp.LOSS_CHUNKS
    # the budget: 90% of the tier less the fragmentation allowance
    fraction = mp.USABLE_FRACTION - mp.ALLOWANCE_FRACTION
    assert usable_bytes(tier_bytes("24")) == int(24 * GB * fraction) - mp.ALLOWANCE_BYTES
    # the 80 GB tier runs today's fastest setup: one micro-batch of 8 rows, nothing recomputed
    top = tier_plan("80")
    assert (top.micro_rows, top.grad_accum, top.checkpoint_layers, top.loss_chunk) == (8, 1, 0, 4096)
    # smaller tiers trade speed for memory, never the other way
    speeds = [tier_plan(tier).speed for tier in TIERS]
    assert speeds == sorted(speeds) and speeds[-1] == 1.0
    assert tier_plan("8").speed > mp.plan_speed(2048, 0, 28)  # better than one row per micro-batch


def test_a_bigger_budget_never_plans_slower():
    for keep_4bit in (False, True):
        model = costs(keep_4bit)
        previous = None
        for tenths in range(30, 1000, 10):  # 3 to 100 GB, a GB apart
            chosen = plan(model, tenths * GB // 10, 16, 2048)
            if previous is not None and previous.fits:
                assert chosen.fits and chosen.speed >= previous.speed, tenths / 10
            if chosen.fits:
                assert chosen.peak_bytes <= chosen.budget_bytes
            previous = chosen


def test_rows_per_step_are_kept_and_plans_are_deterministic():
    model = costs()
    for rows in (1, 3, 7, 8, 12, 64, 96):
        for budget in (6 * GB, 14 * GB, 40 * GB):
            chosen = plan(model, budget, rows, 2048)
            assert chosen.micro_rows * chosen.grad_accum == rows and rows % chosen.micro_rows == 0
            assert plan(model, budget, rows, 2048) == chosen
    assert mp.divisors(12) == [1, 2, 3, 4, 6, 12] and mp.divisors(1) == [1]


def test_pinned_choices_and_nothing_fitting():
    model = costs()
    budget = usable_bytes(16 * GB)
    chosen = plan(model, budget, 8, 2048, micro_rows=8)
    assert chosen.micro_rows == 8 and chosen.grad_accum == 1 and chosen.fits and chosen.checkpoint_layers > 0
    assert plan(model, budget, 8, 2048, checkpoint_layers=28).checkpoint_layers == 28
    assert plan(model, budget, 8, 2048, loss_chunk=1000).loss_chunk == 1000
    by_tokens = plan(model, budget, 8, 2048, micro_tokens=6000)
    assert by_tokens.micro_rows is None and by_tokens.micro_tokens == 6000
    assert "micro-batches of 6000 tokens" in by_tokens.describe()
    # nothing fits: the smallest plan, marked
    tiny = plan(model, 1 * GB, 8, 2048)
    smallest = plan(model, 1 * GB, 8, 2048, micro_rows=1, checkpoint_layers=28, loss_chunk=512)
    assert not tiny.fits and tiny.peak_bytes <= smallest.peak_bytes and tiny.micro_rows * tiny.grad_accum == 8
    assert "over the" in tiny.describe()
    # what loss positions the rows have changes the loss term only
    few = plan(
        model, budget, 8, 2048, loss_tokens_per_row=100, micro_rows=4, checkpoint_layers=0, loss_chunk=4096
    )
    every = plan(model, budget, 8, 2048, micro_rows=4, checkpoint_layers=0, loss_chunk=4096)
    assert few.peak_bytes < every.peak_bytes
    with pytest.raises(ValueError):
        plan(model, budget, 0, 2048)


def test_the_speed_table_and_the_description():
    assert [mp.relative_speed(t) for t, _ in mp.SPEED_BY_MICRO_TOKENS] == [
        s for _, s in mp.SPEED_BY_MICRO_TOKENS
    ]
    tokens = [512, 1024, 2048, 3000, 4096, 6000, 8192, 12000, 16384, 65536]
    speeds = [mp.relative_speed(t) for t in tokens]
    assert speeds == sorted(speeds) and speeds[-1] == 1.0 and speeds[0] >= 0.05
    # recomputing adds to the compute time per token, not to a micro-batch's fixed cost
    assert mp.plan_speed(16384, 28, 28) == pytest.approx(1 / (1 + mp.RECOMPUTE_COST))
    assert mp.plan_speed(8192, 14, 28) == pytest.approx(
        1 / (1 / mp.relative_speed(8192) + mp.RECOMPUTE_COST / 2)
    )
    assert mp.plan_speed(16384, 0, 28, chunk_speed=0.972) == pytest.approx(0.972)
    line = tier_plan("12").describe()
    assert re.fullmatch(
        r"micro-batch \d+ rows? x \d+, \d+ of 28 layers checkpointed, \d+ lean, loss chunk \d+, predicted peak [\d.]+ GB",
        line,
    ), line
    assert tier_plan("12").to_dict()["description"] == line


def test_a_real_config_plans():
    """The bundled tiny Qwen3 (read as `hive_train.setup` reads a model): tiny costs, no checkpointing."""
    info = read_model_info(str(TINY_MODEL))
    small = MemoryCosts.from_model(info, 4, TARGETS, False)
    assert 0 < small.layer < costs().layer and small.layers == 2
    chosen = plan(small, usable_bytes(8 * GB), 4, 96)
    assert chosen.fits and (chosen.micro_rows, chosen.checkpoint_layers, chosen.loss_chunk) == (4, 0, 4096)


def test_lean_layers_come_before_checkpointing_and_cost_what_they_save():
    model = costs()
    # a lean layer keeps a third less than a plain one and far more than a checkpointed one
    assert model.checkpointed < model.lean < model.layer
    assert 0.25 < 1 - model.lean / model.layer < 0.4
    plain = model.step_peak(16384, 4096, 0, 4096)
    assert model.step_peak(16384, 4096, 0, 4096, lean=28) == plain - 16384 * 28 * (model.layer - model.lean)
    # lean and checkpointed layers never overlap: k + lean is capped at the layers
    assert model.step_peak(16384, 4096, 28, 4096, lean=5) == model.step_peak(16384, 4096, 28, 4096)
    # per byte saved a lean layer is cheaper than a checkpointed one, so a budget that one of them
    # fits is met with lean layers first
    per_byte_lean = mp.LEAN_COST / (model.layer - model.lean)
    per_byte_checkpoint = mp.RECOMPUTE_COST / (model.layer - model.checkpointed)
    assert per_byte_lean < per_byte_checkpoint
    budget = model.peak(16384, 4096, 0, 4096, 10) + 1
    chosen = plan(model, budget, 8, 2048, micro_rows=8, loss_chunk=4096, loss_tokens_per_row=512)
    assert chosen.fits and chosen.checkpoint_layers == 0 and 0 < chosen.lean_layers <= 10
    assert chosen.speed == pytest.approx(1 / (1 + mp.LEAN_COST * chosen.lean_layers / 28))
    # pinned: no lean layers at all means more checkpointing for the same budget
    none = plan(model, budget, 8, 2048, micro_rows=8, loss_chunk=4096, loss_tokens_per_row=512, lean_layers=0)
    assert none.lean_layers == 0 and none.checkpoint_layers > 0 and none.speed < chosen.speed
    assert chosen.to_dict()["lean_layers"] == chosen.lean_layers


def test_the_allowance_is_larger_without_expandable_segments():
    for tier in ("8", "24"):
        size = tier_bytes(tier)
        expandable, fragmented = usable_bytes(size), usable_bytes(size, expandable=False)
        assert fragmented < expandable < size * mp.USABLE_FRACTION
        assert fragmented == int(size * (mp.USABLE_FRACTION - mp.FRAGMENTED_ALLOWANCE_FRACTION)) - (
            mp.FRAGMENTED_ALLOWANCE_BYTES
        )


def test_expandable_segments_follow_the_users_allocator_settings(monkeypatch):
    import torch

    from hive_train.setup import expandable_segments

    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    assert expandable_segments(torch.device("cpu")) is False
    cuda = torch.device("cuda")  # the settings below are read before anything touches the GPU
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:512, expandable_segments:False")
    assert expandable_segments(cuda) is False
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    assert expandable_segments(cuda) is True
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "backend:cudaMallocAsync")
    assert expandable_segments(cuda) is False
