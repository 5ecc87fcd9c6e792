"""Document-isolated attention for packed rows, registered with transformers as `hive_docs`.

A micro-batch is one flattened row holding several documents; a token may attend only to earlier
tokens of its own document. The model is loaded with `attn_implementation="hive_docs"`, so
quantization never pushes it to eager attention, and transformers builds no mask of its own for
this name (it only passes through a prepared 4D mask). Per micro-batch, `attention_inputs()`
prepares what the chosen backend needs, once, and the model call carries it to every layer:

- `flex` (CUDA default): FlexAttention with a document-causal `BlockMask` (compiled on CUDA);
- `varlen`: `torch.nn.attention.varlen.varlen_attn` over `cu_seqlens` (torch >= 2.10, CUDA);
- `sdpa` (CPU default): `scaled_dot_product_attention` with a block-diagonal causal boolean mask.

With no document information (plain inference), it is ordinary causal SDPA.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

NAME = "hive_docs"
BACKENDS = ("flex", "varlen", "sdpa")


def varlen_available() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(requested: str, device: torch.device) -> str:
    """`auto` -> flex on CUDA, sdpa elsewhere; an explicit choice is checked against what exists."""
    if requested == "auto":
        return "flex" if device.type == "cuda" else "sdpa"
    if requested == "varlen" and (device.type != "cuda" or not varlen_available()):
        from hive_data.errors import ConfigError

        raise ConfigError("--attention varlen needs CUDA and torch >= 2.10; use flex or sdpa")
    return requested


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # Uncompiled FlexAttention materialises scores; compiled it is a fused kernel.
    return torch.compile(flex_attention, dynamic=None)


def document_ids(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """(T,) document index of each position, from the boundaries."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    return torch.repeat_interleave(
        torch.arange(len(lengths), device=cu_seqlens.device), lengths, output_size=total
    )


def block_diagonal_mask(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """(1, 1, T, T) boolean mask: True where query i may attend key j (same document, j <= i)."""
    doc = document_ids(cu_seqlens, total)
    idx = torch.arange(total, device=cu_seqlens.device)
    return ((doc[:, None] == doc[None, :]) & (idx[:, None] >= idx[None, :]))[None, None]


def flex_block_mask(cu_seqlens: torch.Tensor, total: int):
    from torch.nn.attention.flex_attention import create_block_mask

    doc = document_ids(cu_seqlens, total)

    def document_causal(b, h, q, kv):
        return (doc[q] == doc[kv]) & (q >= kv)

    return create_block_mask(document_causal, None, None, total, total, device=cu_seqlens.device)


def attention_inputs(backend: str, cu_seqlens: torch.Tensor, max_len: int, total: int) -> dict:
    """Keyword arguments for the model call that make every layer attend within documents."""
    if backend == "sdpa":
        return {"attention_mask": block_diagonal_mask(cu_seqlens, total)}
    if backend == "flex":
        return {"attention_mask": flex_block_mask(cu_seqlens, total)}
    if backend == "varlen":
        # FlashAttention's names: transformers passes them through to the attention function
        return {
            "cu_seq_lens_q": cu_seqlens,
            "cu_seq_lens_k": cu_seqlens,
            "max_length_q": max_len,
            "max_length_k": max_len,
        }
    raise ValueError(f"unknown attention backend {backend!r}")


def _plain_causal(query, key, value, scaling):
    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len == kv_len:
        return F.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=scaling, enable_gqa=True
        )
    # decoding with a cache: queries are the last q_len positions (bottom-right aligned)
    mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling, enable_gqa=True)


def hive_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers attention function: q (B, Hq, T, D), k/v (B, Hkv, T, D) -> ((B, T, Hq, D), None)."""
    from torch.nn.attention.flex_attention import BlockMask

    if isinstance(attention_mask, BlockMask):
        flex = _compiled_flex() if query.device.type == "cuda" else _eager_flex()
        out = flex(query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=True)
    elif attention_mask is None and kwargs.get("cu_seq_lens_q") is not None:
        from torch.nn.attention.varlen import varlen_attn

        cu = kwargs["cu_seq_lens_q"]
        max_len = int(kwargs["max_length_q"])
        # varlen takes (tokens, heads, dim) without a batch axis: the row is already flat
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scaling, window_size=(-1, 0))
        return out[None], None
    elif attention_mask is None:
        out = _plain_causal(query, key, value, scaling)
    else:
        if attention_mask.dtype != torch.bool:
            attention_mask = attention_mask.to(query.dtype)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=True
        )
    return out.transpose(1, 2).contiguous(), None


def _eager_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def register() -> None:
    """Register `hive_docs` with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, hive_attention)
