"""hive's greedy decoder pieces on their own: the one-query attention and the prefill mask."""

from types import SimpleNamespace

import pytest
import torch

from hive_eval.decode import one_query_attention


@pytest.mark.parametrize("with_mask", [True, False])
def test_one_query_attention_equals_transformers_sdpa(with_mask):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    b, heads, kv, length, d = 3, 8, 2, 11, 16
    module = SimpleNamespace(num_key_value_groups=heads // kv, is_causal=True, training=False)
    query = torch.randn(b, heads, 1, d)
    key, value = torch.randn(b, kv, length, d), torch.randn(b, kv, length, d)
    mask = None
    if with_mask:  # left padding of different widths, and positions past the current one
        allowed = torch.ones(b, length, dtype=torch.bool)
        allowed[0, :3], allowed[1, :1], allowed[:, 9:] = False, False, False
        mask = torch.zeros(b, 1, 1, length).masked_fill(
            ~allowed[:, None, None, :], torch.finfo(torch.float).min
        )
    got, _ = one_query_attention(module, query, key, value, mask, scaling=d**-0.5)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=d**-0.5, is_causal=False)
    assert got.shape == want.shape == (b, 1, heads, d)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # a masked position changes nothing: the mask is honoured, not ignored
    if with_mask:
        key[0, :, 0] += 100.0
        again, _ = one_query_attention(module, query, key, value, mask, scaling=d**-0.5)
        torch.testing.assert_close(again[0], got[0])


def test_prefill_mask_is_causal_over_real_tokens_and_never_empty():
    from hive_eval.decode import GreedyDecoder

    decoder = GreedyDecoder.__new__(GreedyDecoder)  # only the mask arithmetic: no model needed
    decoder.device, decoder.dtype, decoder.max_len = torch.device("cpu"), torch.float32, 6
    attention = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    mask = decoder.prefill_mask(attention)
    allowed = mask[:, 0] == 0
    assert mask.shape == (2, 1, 4, 6)
    assert allowed[1].tolist() == [[k <= q for k in range(6)] for q in range(4)]
    # row 0: padding positions attend to themselves only; real ones to the real tokens up to them
    assert allowed[0, 0].tolist() == [True, False, False, False, False, False]
    assert allowed[0, 3].tolist() == [False, False, True, True, False, False]
    assert allowed.any(-1).all()  # no softmax row is empty
