"""Greedy decoding for evaluation: one static KV cache, the decoding step replayed as a CUDA graph.

transformers' `generate` spends most of a small model's decoding step launching kernels from Python
(on an H200, Qwen3-0.6B at batch 64: ~9 ms a step with a static cache, of which the GPU is busy for
about one). Capturing the step once as a CUDA graph and replaying it removes that cost without
`torch.compile`'s half-minute compile. What makes the step capturable:

- a static KV cache (`transformers.StaticCache`) whose layers write at an on-device position counter,
  so every step has the same shapes and addresses;
- position ids and a 4-D additive attention mask held in buffers of fixed shape, filled before each
  replay (the model returns a 4-D mask as given, so no mask is built from Python inside the step);
- only the last position's logits computed (`logits_to_keep=1`);
- attention for the one new position (`one_query_attention`) without copying the cache: with a
  mask, transformers' SDPA path repeats every key/value head for its query heads (Qwen3: 16 query
  heads over 8 key/value heads), which reads and writes the whole cache once more per layer and step;
  grouping the query heads per key/value head instead gives SDPA shapes it takes as they are.

Rows are left-padded. A padding position may attend to itself only, so no softmax row is empty (an
empty one would put NaN into the cache where later rows cannot mask it out of a product).

`GreedyDecoder(model, batch_size, max_len, graphs=...)` decodes batches of exactly `batch_size` rows
whose prompts plus new tokens fit in `max_len`; the same decoder (cache, buffers, graph) serves
every batch. Without `graphs` it runs the same steps eagerly (the CPU path, and the reference the
tests compare with transformers' own greedy `generate`).
"""

from __future__ import annotations

import contextlib
import warnings

import torch

ATTENTION = "hive_one_query"  # the name `one_query_attention` is registered under in transformers


def one_query_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers attention function (`AttentionInterface`) for decoding steps: for a single query
    position, the query heads sharing a key/value head become that head's "positions", so SDPA reads
    the cache once, as stored. Anything else goes to transformers' SDPA function."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, heads, q, d = query.shape
    kv = key.shape[1]
    mask_ok = attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[1] == 1)
    if q != 1 or heads == kv or not mask_ok or dropout:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if attention_mask is not None:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    # query head h uses key/value head h // (heads // kv): consecutive query heads share one
    grouped = query.reshape(b, kv, heads // kv, d)
    out = torch.nn.functional.scaled_dot_product_attention(
        grouped, key, value, attn_mask=attention_mask, scale=scaling
    )
    return out.reshape(b, heads, 1, d).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def attention_for_decoding(model):
    """`one_query_attention` as the model's attention while the block runs (masks are passed in 4-D,
    so transformers never builds one for this implementation name)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, one_query_attention)
    before = model.config._attn_implementation
    if before != "sdpa":  # eager or flash attention: leave the model as it is
        yield
        return
    model.config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        model.config._attn_implementation = before


class GreedyDecoder:
    """Greedy decoding of fixed-size batches over one static cache (see the module docstring)."""

    def __init__(self, model, batch_size: int, max_len: int, *, graphs: bool = False):
        from transformers import StaticCache

        self.model, self.batch, self.max_len = model, int(batch_size), int(max_len)
        self.device = model.device
        self.dtype = next(model.parameters()).dtype
        self.graphs = bool(graphs) and self.device.type == "cuda"
        self.cache = StaticCache(config=model.config, max_cache_len=self.max_len)
        self.tokens = torch.zeros((self.batch, 1), dtype=torch.long, device=self.device)
        self.positions = torch.zeros((self.batch, 1), dtype=torch.long, device=self.device)
        self.mask = torch.zeros((self.batch, 1, 1, self.max_len), dtype=self.dtype, device=self.device)
        self.graph = None
        self.logits = None  # the graph's output buffer

    # ------------------------------------------------------------------ one forward

    def _forward(self, ids, positions, mask) -> torch.Tensor:
        with warnings.catch_warnings():
            # `past_key_values` is `cache` from transformers 5.24 on; 5.17 knows only the old name
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            out = self.model(
                input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=self.cache,
                use_cache=True, logits_to_keep=1,
            )  # fmt: skip
        return out.logits[:, -1, :]

    def _set_length(self, length: int) -> None:
        """Point every cache layer's write position at `length` (after warm-up steps moved it)."""
        for layer in self.cache.layers:
            counter = getattr(layer, "cumulative_length", None)
            if isinstance(counter, torch.Tensor):
                counter.fill_(length)

    def _step(self) -> torch.Tensor:
        """The next-token logits of the rows in the step buffers (a graph replay when captured)."""
        if self.graph is not None:
            self.graph.replay()
            return self.logits
        return self._forward(self.tokens, self.positions, self.mask)

    def _capture(self, length: int) -> None:
        """Record the decoding step as a CUDA graph; the cache stays at `length` for the real steps."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up on a side stream, as graph capture requires
            for _ in range(2):
                self._forward(self.tokens, self.positions, self.mask)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._set_length(length)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.logits = self._forward(self.tokens, self.positions, self.mask)
        self.graph = graph
        self._set_length(length)  # (capture records the counter's update without running it)

    # ------------------------------------------------------------------ a batch

    def prefill_mask(self, attention: torch.Tensor) -> torch.Tensor:
        """The additive (B, 1, W, max_len) mask of a left-padded prompt batch: causal over real
        tokens, and each padding position attends to itself."""
        b, w = attention.shape
        keys = torch.arange(self.max_len, device=self.device)
        queries = torch.arange(w, device=self.device)
        real = torch.zeros((b, self.max_len), dtype=torch.bool, device=self.device)
        real[:, :w] = attention.bool()
        allowed = (keys[None, None, :] <= queries[None, :, None]) & real[:, None, :]
        allowed |= keys[None, None, :] == queries[None, :, None]
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=self.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        return mask[:, None]

    @torch.inference_mode()
    def decode(self, input_ids: torch.Tensor, attention: torch.Tensor, max_new_tokens: int, stops, pad: int):
        """(B, max_new_tokens) greedy continuations of a left-padded batch (B = `batch_size`); after a
        row's first stop token the row holds `pad`. Stops early once every row has stopped."""
        with attention_for_decoding(self.model):
            return self._decode(input_ids, attention, max_new_tokens, stops, pad)

    def _decode(self, input_ids, attention, max_new_tokens: int, stops, pad: int) -> torch.Tensor:
        b, width = input_ids.shape
        if b != self.batch or width + max_new_tokens > self.max_len:
            raise ValueError(f"batch {b}x{width}+{max_new_tokens} does not fit {self.batch}x{self.max_len}")
        stops = torch.tensor(sorted(stops), dtype=torch.long, device=self.device)
        self.cache.reset()
        positions = (attention.long().cumsum(-1) - 1).clamp(min=0)
        logits = self._forward(input_ids, positions, self.prefill_mask(attention))
        # the decoding buffers: each row's last position, its real prompt tokens, nothing after them
        self.positions.copy_(positions[:, -1:])
        self.mask.fill_(torch.finfo(self.dtype).min)
        self.mask[:, 0, 0, :width].masked_fill_(attention.bool(), 0.0)
        out = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=self.device)
        done = torch.zeros(b, dtype=torch.bool, device=self.device)
        for t in range(max_new_tokens):
            token = torch.where(done, pad, logits.argmax(-1))
            out[:, t] = token
            done |= torch.isin(token, stops)
            if t + 1 == max_new_tokens or (t % 8 == 7 and bool(done.all())):
                break
            self.tokens.copy_(token[:, None])
            self.positions.add_(1)
            self.mask[:, 0, 0, width + t] = 0.0
            if self.graphs and self.graph is None:
                self._capture(width + t)
            logits = self._step()
        return out
