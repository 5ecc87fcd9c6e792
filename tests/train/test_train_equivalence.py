"""Correctness of the training math on the real QLoRA path (bitsandbytes NF4 + peft DoRA, fp32, CPU).

- a packed row gives the same loss and adapter gradients as its documents run one by one through
  the model's ordinary causal attention;
- accumulating 4 micro-batches of 1 row gives the gradient of 1 micro-batch of the same 4 rows
  (the loss is the mean over all loss tokens of the step).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from train_helpers import TINY_MODEL, make_documents, packed_table

from hive_train.attention import block_diagonal_mask
from hive_train.checkpointing import checkpointed
from hive_train.config import TrainConfig
from hive_train.data import flatten
from hive_train.loss import evaluate, forward_backward, micro_loss
from hive_train.model import load_model, trainable_state

DEVICE = torch.device("cpu")


def make_model(adapter: str = "dora", gradient_checkpointing: bool = False):
    torch.manual_seed(0)
    cfg = TrainConfig(
        model=str(TINY_MODEL),
        adapter=adapter,
        rank=4,
        alpha=8,
        dropout=0.0,
        gradient_checkpointing=gradient_checkpointing,
    )
    model = load_model(cfg, DEVICE, torch.float32)
    # peft starts B at zero (the adapter is a no-op); give it values so every adapter tensor
    # gets a gradient and the comparison covers the whole DoRA computation
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.train()
    return model


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in trainable_state(model).items()}


def zero(model) -> None:
    for p in model.parameters():
        p.grad = None


@pytest.fixture(scope="module")
def table():
    return packed_table(make_documents(14, seed=3, min_len=6, max_len=30), 64)


@pytest.fixture(scope="module")
def model():
    return make_model()


def unpacked_loss(model, ids: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """One document alone, through the stock model forward (causal, positions 0..L-1)."""
    logits = model(input_ids=ids[None]).logits[0].float()
    carries = torch.from_numpy(mask[1:].astype(bool))
    return F.cross_entropy(logits[:-1][carries], ids[1:][carries], reduction="sum")


def test_packed_row_equals_documents_one_by_one(model, table):
    row = int(np.argmax(np.diff(table.doc_offsets)))  # the row with the most documents
    docs = table.doc_lengths[table.doc_offsets[row] : table.doc_offsets[row + 1]]
    assert len(docs) >= 3
    zero(model)
    packed = micro_loss(model, flatten(table, np.array([row])), "sdpa")
    packed.backward()
    packed_grads = grads(model)

    zero(model)
    start = table.offsets[row]
    alone = torch.zeros(())
    for length in docs:
        ids = torch.from_numpy(table.ids[start : start + length].astype(np.int64))
        loss = unpacked_loss(model, ids, table.mask[start : start + length])
        loss.backward()
        alone = alone + loss.detach()
        start += length
    alone_grads = grads(model)

    torch.testing.assert_close(packed.detach(), alone, rtol=1e-5, atol=1e-5)
    assert packed_grads.keys() == alone_grads.keys()
    assert sum(g.abs().sum() for g in packed_grads.values()) > 0
    for name in packed_grads:
        # float32 summation order differs between one packed row and its documents alone: gradients
        # of magnitude ~4 then differ by a few 1e-6 (peft 0.21.2 / transformers 5.24 reorder it)
        torch.testing.assert_close(packed_grads[name], alone_grads[name], rtol=1e-4, atol=1e-5, msg=name)

    # the same row without document isolation really is different: the test can fail
    mb = flatten(table, np.array([row]))
    base = model.get_base_model()
    with torch.no_grad():
        hidden = base.model(input_ids=mb.input_ids).last_hidden_state[0, mb.loss_positions]
        crossing = F.cross_entropy(base.lm_head(hidden), mb.targets, reduction="sum")
    assert abs(float(crossing) - float(alone)) > 1e-3


@pytest.mark.parametrize("pad_to", [None, 256])  # 256: the block-level mask built from boundaries
def test_flex_backend_matches_sdpa(model, table, pad_to):
    mb = flatten(table, np.array([0, 1, 2]), pad_to=pad_to)
    assert pad_to is None or mb.length == pad_to
    with torch.no_grad():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager FlexAttention on CPU: "unfused implementation"
            flex = micro_loss(model, mb, "flex")
        sdpa = micro_loss(model, mb, "sdpa")
    torch.testing.assert_close(flex, sdpa, rtol=1e-5, atol=1e-5)


def test_accumulation_4x1_equals_1x4(model, table):
    rows = np.arange(4)
    loss_tokens = [flatten(table, rows[i : i + 1]).loss_tokens for i in range(4)]
    assert len(set(loss_tokens)) > 1  # unequal rows: a mean of means would differ

    zero(model)
    one_loss, one_tokens = forward_backward(model, [flatten(table, rows)], "sdpa", contextlib.nullcontext)
    one = grads(model)
    zero(model)
    four_loss, four_tokens = forward_backward(
        model, [flatten(table, rows[i : i + 1]) for i in range(4)], "sdpa", torch.enable_grad
    )
    four = grads(model)

    assert one_tokens == four_tokens == sum(loss_tokens)
    assert four_loss == pytest.approx(one_loss, rel=1e-6)
    for name in one:
        torch.testing.assert_close(four[name], one[name], rtol=1e-4, atol=1e-7, msg=name)

    # and the mean of micro-batch means (the classic accumulation bug) is measurably different
    with torch.no_grad():
        means = [
            float(micro_loss(model, flatten(table, rows[i : i + 1]), "sdpa")) / n
            for i, n in enumerate(loss_tokens)
        ]
    assert abs(sum(means) / 4 - one_loss) > 1e-4


def test_evaluation_leaves_the_training_path_intact(model, table):
    """bitsandbytes repacks NF4 weights for CPU inference in eval mode; training must not see that."""
    mb = flatten(table, np.array([2]))
    zero(model)
    micro_loss(model, mb, "sdpa").backward()
    before = grads(model)
    evaluate(model, table, [np.array([0]), np.array([1])], DEVICE, "sdpa", contextlib.nullcontext)
    assert model.training
    zero(model)
    micro_loss(model, mb, "sdpa").backward()
    after = grads(model)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)


def test_padding_to_a_fixed_shape_changes_nothing(model, table):
    rows = np.array([0, 1])
    plain = flatten(table, rows)
    padded = flatten(table, rows, pad_to=plain.length + 37, pad_id=4070)
    assert padded.length == plain.length + 37 and padded.tokens == plain.tokens
    zero(model)
    a = micro_loss(model, plain, "sdpa")
    a.backward()
    ga = grads(model)
    zero(model)
    b = micro_loss(model, padded, "sdpa")
    b.backward()
    gb = grads(model)
    torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-4, atol=1e-6, msg=name)  # summation order only


@pytest.mark.parametrize("lengths", [[128, 128], [5, 300, 17, 190, 1, 127, 128], [40] * 12 + [32], [512]])
def test_document_block_mask_matches_torch(lengths):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from hive_train.attention import document_ids, flex_block_mask

    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    total = int(cu[-1])
    assert total % 128 == 0
    doc = document_ids(cu, total)
    mine = flex_block_mask(cu, total)
    ref = create_block_mask(
        lambda b, h, q, kv: (doc[q] == doc[kv]) & (q >= kv), None, None, total, total, device="cpu"
    )
    assert torch.equal(mine.to_dense(), ref.to_dense())
    assert torch.equal(mine.full_kv_num_blocks, ref.full_kv_num_blocks)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, total, 16, generator=g) for h in (4, 2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager FlexAttention on CPU: "unfused implementation"
        out = flex_attention(q, k, v, block_mask=mine, enable_gqa=True)
    dense = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=block_diagonal_mask(cu, total), enable_gqa=True
    )
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)


def test_expanded_kv_heads_equal_grouped_query_attention():
    """On CUDA the masked and float32 SDPA calls expand key/value heads (so the memory-efficient
    kernel takes them instead of the math kernel); the expansion must pair query head h with
    key/value head h // group, exactly as SDPA's own grouped-query broadcast does."""
    from hive_train.attention import expand_kv_heads

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, 50, 8, generator=g) for h in (6, 2, 2))
    mask = block_diagonal_mask(torch.tensor([0, 20, 50], dtype=torch.int32), 50)
    grouped = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    k6, v6 = expand_kv_heads(q, k, v)
    assert k6.shape == v6.shape == (1, 6, 50, 8)
    torch.testing.assert_close(F.scaled_dot_product_attention(q, k6, v6, attn_mask=mask), grouped)


def test_gradient_checkpointing_gives_the_same_gradients(model, table):
    """The small --vram tiers recompute activations; the gradients must not change."""
    mb = flatten(table, np.array([0, 1]))
    zero(model)
    micro_loss(model, mb, "sdpa").backward()
    plain = grads(model)
    recomputing = make_model(gradient_checkpointing=True)
    assert checkpointed(recomputing) == [0, 1]  # every layer of the tiny model (hive's own checkpointing)
    micro_loss(recomputing, mb, "sdpa").backward()
    again = grads(recomputing)
    for name in plain:
        torch.testing.assert_close(again[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)
