"""Document-isolated attention for packed rows, registered with transformers as `hive_docs`.

A micro-batch is one flattened row holding several documents; a token may attend only to earlier
tokens of its own document. The model is loaded with `attn_implementation="hive_docs"`, so
quantization never pushes it to eager attention, and transformers builds no mask of its own for
this name (it only passes through a prepared 4D mask). Per micro-batch, `attention_inputs()`
prepares what the chosen backend needs, once, and the model call carries it to every layer:

- `flex` (CUDA default): FlexAttention with a document-causal `BlockMask` (compiled on CUDA);
- `varlen`: attention over `cu_seqlens` on CUDA: hive's own Triton kernels
  (`hive_train.doc_attention`: key/value head groups summed inside the backward), or with
  `HIVE_ATTENTION_KERNEL=flash` FlashAttention through `torch.nn.attention.varlen.varlen_attn`
  (torch >= 2.10);
- `sdpa` (CPU default): `scaled_dot_product_attention` with a block-diagonal causal boolean mask.

With no document information (plain inference), it is ordinary causal SDPA.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

NAME = "hive_docs"
BACKENDS = ("flex", "varlen", "sdpa")


def triton_kernels_chosen() -> bool:
    """Whether packed-row attention runs hive's Triton kernels (the default) rather than
    FlashAttention (`HIVE_ATTENTION_KERNEL=flash`)."""
    import os

    return os.environ.get("HIVE_ATTENTION_KERNEL", "triton").strip().lower() != "flash"


def varlen_available() -> bool:
    """Whether packed-row (`varlen`) attention can run: hive's Triton kernels, or torch's
    FlashAttention varlen entry (torch >= 2.10)."""
    from hive_train import doc_attention

    return (triton_kernels_chosen() and doc_attention.triton is not None) or flash_varlen_available()


def flash_varlen_available() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(requested: str, device: torch.device) -> str:
    """`auto` -> varlen (hive's Triton kernels or FlashAttention, no compile step) on CUDA when
    it can run, else flex; sdpa elsewhere. An explicit choice is checked against what exists."""
    if requested == "auto":
        if device.type != "cuda":
            return "sdpa"
        return "varlen" if varlen_available() else "flex"
    if requested == "varlen" and (device.type != "cuda" or not varlen_available()):
        from hive_core.errors import ConfigError

        raise ConfigError("--attention varlen needs CUDA and Triton (or torch >= 2.10); use flex or sdpa")
    return requested


# FlashAttention implementations torch can switch its flash kernels to, by GPU generation (FA3 is
# written for Hopper's tensor cores, FA4 for Blackwell's); FlashAttention 2 stays otherwise
FLASH_IMPLS = {9: ("FA3",), 10: ("FA4",)}


@functools.cache
def newer_flash_attention(device_index: int = 0) -> str | None:
    """Switch torch's flash kernels (varlen and SDPA's flash backend) to the FlashAttention made for
    this GPU's generation when torch has it registered and it loads (`FLASH_IMPLS`; torch >= 2.11:
    `torch.nn.attention.activate_flash_attention_impl`); once per process. Returns its name, or
    None when FlashAttention 2 stays (older torch, another GPU, or HIVE_FLASH_ATTENTION=2)."""
    import os

    import torch.nn.attention as attn

    if os.environ.get("HIVE_FLASH_ATTENTION") == "2" or not torch.cuda.is_available():
        return None
    lister = getattr(attn, "list_flash_attention_impls", None)
    activate = getattr(attn, "activate_flash_attention_impl", None)
    if lister is None or activate is None:
        return None
    try:
        registered = list(lister())
    except Exception:  # noqa: BLE001 - an optional speed-up: anything wrong keeps FlashAttention 2
        return None
    return pick_flash_impl(torch.cuda.get_device_capability(device_index)[0], registered, activate)


def pick_flash_impl(major: int, registered, activate) -> str | None:
    """The first of `FLASH_IMPLS[major]` that is `registered` and that `activate(name)` switches to
    without raising (its package missing, say); None when none does."""
    for name in FLASH_IMPLS.get(major, ()):
        if name not in registered:
            continue
        try:
            activate(name)
        except Exception:  # noqa: BLE001 - its package is missing or does not load
            continue
        return name
    return None


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


def flex_block_mask(cu_seqlens: torch.Tensor, total: int, block: int = 128):
    """A document-causal FlexAttention `BlockMask`.

    When the row is a whole number of blocks (always on CUDA, where rows are padded to one shape),
    the block structure is derived from the document boundaries directly, at block granularity:
    torch's `create_block_mask` would evaluate the mask for all T x T token pairs (gigabytes for a
    32k-token row) to find the same thing.
    """
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask

    doc = document_ids(cu_seqlens, total)

    def document_causal(b, h, q, kv):
        return (doc[q] == doc[kv]) & (q >= kv)

    if total % block:
        return create_block_mask(document_causal, None, None, total, total, device=cu_seqlens.device)
    partial, full = document_blocks(doc, block)
    kv_num, kv_idx = _block_lists(partial)
    full_num, full_idx = _block_lists(full)
    return BlockMask.from_kv_blocks(
        kv_num,
        kv_idx,
        full_num,
        full_idx,
        BLOCK_SIZE=block,
        mask_mod=document_causal,
        seq_lengths=(total, total),
    )


def document_blocks(doc: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(partial, full): (n, n) booleans over (query block, key block) for a document-causal mask.

    Documents are contiguous and in order, so a block spans the documents from its first token's
    to its last token's. A key block j <= i matters to query block i when it reaches i's first
    document; it is full (no masking inside) when both blocks lie in one and the same document and
    j < i; the diagonal and boundary blocks are partial.
    """
    n = doc.numel() // block
    blocks = doc.view(n, block)
    lo, hi = blocks[:, 0], blocks[:, -1]
    q = torch.arange(n, device=doc.device)[:, None]
    k = torch.arange(n, device=doc.device)[None, :]
    reach = (k <= q) & (hi[None, :] >= lo[:, None])
    single = lo == hi
    full = (k < q) & single[:, None] & single[None, :] & (lo[:, None] == lo[None, :])
    return reach & ~full, full


def _block_lists(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """BlockMask's sparse form: per query block, how many key blocks and which (those first)."""
    counts = blocks.sum(-1).to(torch.int32)
    order = torch.argsort((~blocks).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return counts[None, None], order[None, None]


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


def expand_kv_heads(query, key, value):
    """Key and value with one head per query head (query head h reads key/value head h // group,
    as SDPA's `enable_gqa` does)."""
    group = query.shape[1] // key.shape[1]
    return key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)


def _sdpa(query, key, value, *, mask=None, causal=False, scale=None):
    """SDPA with grouped-query heads. On CUDA only FlashAttention broadcasts key/value heads itself
    (`enable_gqa`); with a mask or in float32 every other kernel refuses them and SDPA falls back
    to its math kernel, which keeps (heads x T x T) scores per layer: hundreds of GB for a
    16k-token row. There the key/value heads are expanded instead (a copy of the key and value
    tensors, twice their size for Qwen3-0.6B), so the memory-efficient kernel takes the call."""
    grouped = query.shape[1] != key.shape[1]
    if grouped and query.is_cuda and (mask is not None or query.dtype == torch.float32):
        key, value = expand_kv_heads(query, key, value)
        grouped = False
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, is_causal=causal, scale=scale, enable_gqa=grouped
    )


def _plain_causal(query, key, value, scaling):
    q_len, kv_len = query.shape[2], key.shape[2]
    if q_len == kv_len:
        return _sdpa(query, key, value, causal=True, scale=scaling)
    # decoding with a cache: queries are the last q_len positions (bottom-right aligned)
    mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    return _sdpa(query, key, value, mask=mask, scale=scaling)


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
        # varlen takes (tokens, heads, dim) without a batch axis: the row is already flat. squeeze,
        # not t[0]: indexing's backward allocates a zeroed (1, H, T, D) gradient and copies into
        # it, and the transposed copy then costs a second copy in the norm's backward (~12 ms of
        # a 16k-token step on an H200); a view's backward is a view
        q, k, v = (t.squeeze(0).transpose(0, 1) for t in (query, key, value))
        dtype = q.dtype
        if _doc_kernels(q, k, v):
            from hive_train.doc_attention import doc_attention

            return doc_attention(q, k, v, cu, scale=scaling)[None], None
        if dtype not in (torch.float16, torch.bfloat16):  # FlashAttention takes half precision only
            low = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
            q, k, v = q.to(low), k.to(low), v.to(low)
        newer_flash_attention(q.device.index or 0)  # once, before a CUDA graph is captured
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scaling, window_size=(-1, 0))
        return out[None].to(dtype), None
    elif attention_mask is None:
        out = _plain_causal(query, key, value, scaling)
    else:
        if attention_mask.dtype != torch.bool:
            attention_mask = attention_mask.to(query.dtype)
        out = _sdpa(query, key, value, mask=attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _doc_kernels(q, k, v) -> bool:
    """hive's Triton kernels take this call: chosen, usable, and half precision on a GPU (float32
    would run its block products in TF32; it goes to FlashAttention in bf16, as before). Float32
    reaches them only in Triton's interpreter, the CPU tests."""
    from hive_train import doc_attention

    if not triton_kernels_chosen() or not doc_attention.usable(q, k, v):
        return False
    return q.dtype in (torch.float16, torch.bfloat16) or not q.is_cuda


def _eager_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention


def register() -> None:
    """Register `hive_docs` with transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, hive_attention)
