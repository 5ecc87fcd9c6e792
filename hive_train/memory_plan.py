"""GPU memory of a training step, and the fastest batching that fits a memory budget.

`MemoryCosts.from_model(info, rank, targets, keep_4bit)` turns a model's shapes
(`hive_train.model.ModelInfo`) into bytes: what stays put (weights, adapter, optimizer state), what
one token costs in each decoder layer with and without activation checkpointing, outside the layers,
and in the LM-head loss. `plan(costs, budget_bytes, rows_per_step, seq)` tries every micro-batch size
that divides the rows of an optimizer step, every count of checkpointed layers and every loss chunk,
keeps those whose predicted peak fits the budget, and returns the one predicted to train fastest.

Pure arithmetic (no torch, no GPU), so that the plan can be made, printed and tested anywhere;
`hive_train.config.apply_vram_plan` writes a plan into a `TrainConfig`. Memory is counted in
decimal bytes and reported in GB (10**9 bytes), as `--vram` tiers are.

The counts follow hive's fast path on CUDA (`hive_train.fast_adapters`, `hive_train.kernels`,
`hive_train.rmsnorm`, FlashAttention varlen, the chunked LM-head loss that CUDA graphs run): each
term says which tensor it is and who keeps it for backward. Tensors that several operations save
(a projection's output that the next norm also saves) are counted once, as memory holds them once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

GB = 10**9

# ---- calibration: the one number a GPU measurement sets --------------------------------------
# Measured peak activation memory over the analytic count below (what the count misses or
# over-counts: allocator rounding, kernels that save less than the model's code suggests). Fitted
# on an H200 (2026-12-02, this tree's fast path; seq 2048, Qwen3-0.6B shapes, rank 12, CUDA graphs,
# 8 rows per step), peak allocated GB against rows per micro-batch / checkpointed layers:
# 8/0 25.46, 4/0 13.81, 2/0 7.88, 1/0 4.94, 8/7 20.17, 8/14 14.80, 8/28 3.98. A least-squares fit
# gives 0.98 and 0.6 GB of runtime memory; 1.0 keeps every prediction at or up to 2% above the
# measurement. (The first probe, before the stacked DoRA GEMM, hive's RoPE and loss kernels, needed
# 1.11: 30.4 GB at 8 rows.) Re-fit with `benchmarks/train_throughput.py --only hive,tiers`, which
# prints predicted and measured peaks.
ACTIVATION_CALIBRATION = 1.0

# Memory the caching allocator holds at the peak that no model tensor accounts for: cuBLAS
# workspaces, the CUDA graph's static inputs and outputs, the adapters' per-step tensors, Triton
# scratch (the fit above).
RUNTIME_BYTES = 600 * 10**6

# ---- the budget -----------------------------------------------------------------------------
# A tier of N GB plans for 90% of N (the CUDA context, other processes' and the display's memory
# live in the rest, and a card sold as N GB holds N GiB, 7% more than N * 10**9 bytes) ...
USABLE_FRACTION = 0.9
# ... less an allowance for what the count cannot see: blocks split and left unused in the CUDA
# graph's private pool and in the ordinary pool. With the allocator's expandable segments (which
# hive turns on: `hive_train.setup.expandable_segments`) a pool is one growing range of pages and
# peak reserved exceeded the predicted step peak by 0.4-1.5 GB at every tier (H200, 2026-12-02,
# benchmarks/results/2026-12-02-h200-lean/) ...
ALLOWANCE_BYTES = 600 * 10**6
ALLOWANCE_FRACTION = 0.04
# ... without them, blocks of fixed-size segments strand far more: 0.5-3.4 GB, about 0.5 GB plus
# 12% of the tier (a fixed 1 GB let the 8, 12 and 24 GB tiers reserve 96-99% of the tier and the
# 16 GB one run out)
FRAGMENTED_ALLOWANCE_BYTES = 500 * 10**6
FRAGMENTED_ALLOWANCE_FRACTION = 0.12

# ---- the speed model ------------------------------------------------------------------------
# Throughput relative to 16,384-token micro-batches by tokens per micro-batch, with CUDA graphs
# and no checkpointing (H200, 2026-12-02, this tree, Qwen3-0.6B, 8 rows x 2048 tokens per step:
# 118.5k tokens/s at 8 rows per micro-batch, 101.3k at 4, 83.3k at 2, 66.3k at 1; the first probe
# measured 1.0 / 0.95 / 0.84 / 0.62 on the slower fast path before it). A micro-batch costs a fixed
# amount of GPU time besides its tokens (thousands of small kernels), so smaller ones run slower.
# Interpolated in log2(tokens); flat above the table.
SPEED_BY_MICRO_TOKENS = ((2048, 0.56), (4096, 0.703), (8192, 0.855), (16384, 1.0))
# What recomputing one layer adds, as a fraction of that layer's forward + backward time at 16k
# tokens (with a frozen base the backward computes input gradients only, but FlashAttention's
# backward and DoRA's fused ends weigh more than their forward, so a layer's forward is about a
# third of it). Fitted on the tiers' plans (H200, 2026-12-02, 8 rows per micro-batch,
# benchmarks/results/2026-12-02-h200-lean/allocator-expandable.log): 21, 13 and 2 checkpointed
# layers beside 6, 15 and 26 lean ones ran at 0.817, 0.850 and 0.930 of none: 0.28, 0.29 and 0.32
# (7, 14 and 28 checkpointed layers alone, earlier: 0.909, 0.850, 0.739).
# Recomputing adds compute, not the fixed time every micro-batch costs, so it is added to the time
# per token (`plan_speed`). A 4-bit base (the 8 GB tier) dequantizes again as it recomputes: 0.43.
RECOMPUTE_COST = 0.29
# What a lean layer (`hive_train.lean`: its norm, SwiGLU and RoPE outputs rebuilt in backward)
# adds, in the same unit: all 28 layers lean ran at 0.968 and 0.965 of none in two calls (H200,
# 2026-12-02, each against the plain run of its call; q and k rebuilt in one pass from the norm's
# input, `rope.norm_rope`; 0.947 and 0.943 before that) for 7.4 GB less at 16k tokens (29% of the
# step's peak).
LEAN_COST = 0.035
# LM-head loss chunks the planner may pick, largest first, and the speed of each when a micro-batch
# has more loss positions than the chunk (more, smaller GEMMs). An earlier fast path ran 512 at
# 0.972 of 4096 with 4,096 loss positions per micro-batch; with hive's in-place loss kernel and
# CUDA graphs the whole LM head and loss is 4.1 ms of a 122.5 ms step at 4096 (H200,
# 2026-12-03, BENCHMARKS.md), and a chunk of 512 or more rows still gives its two GEMMs
# (rows x 151,936 x 1024) thousands of tiles, so a smaller chunk adds launches, not GEMM time:
# estimated from that profile, checked by the tiers' throughput
LOSS_CHUNKS = (4096, 2048, 1024, 512)
LOSS_CHUNK_SPEED = {4096: 1.0, 2048: 0.998, 1024: 0.995, 512: 0.99}
# the most loss rows an evaluation (a no-grad forward beside the step's CUDA graph pool) computes
# at once (`hive_train.loss.evaluate`)
EVAL_LOSS_CHUNK = 1024
# CUDA graphs pad a micro-batch's loss positions to a multiple of this (`cuda_graphs.static_shape`)
LOSS_PADDING = 128

# the projections hive adapts in a Qwen3/Llama-style decoder layer, and their (out, in) shapes
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


def module_shapes(info) -> dict[str, tuple[int, int]]:
    """(out features, in features) of each linear projection of one decoder layer."""
    h, i = info.hidden, info.intermediate
    q, kv = info.heads * info.head_dim, info.kv_heads * info.head_dim
    return {
        "q_proj": (q, h),
        "k_proj": (kv, h),
        "v_proj": (kv, h),
        "o_proj": (h, q),
        "gate_proj": (i, h),
        "up_proj": (i, h),
        "down_proj": (h, i),
    }


def rank_padding(rank: int) -> int:
    """Rows a DoRA layer's stacked weight [W; A; 0] adds under W (`hive_train.kernels.rank_padding`,
    repeated here so that planning needs no torch)."""
    return -(-rank // 16) * 16


@dataclass(frozen=True)
class MemoryCosts:
    """Bytes of one training process, split the way the planner varies them.

    A step's peak is `fixed` plus, for a micro-batch of T tokens of which L carry loss, with k of
    the `layers` decoder layers checkpointed, the next l lean and loss chunk C (`peak`):
      the saved activations T x (outside + k x checkpointed + l x lean + (layers - k - l) x layer)
      and L x loss,
      plus the larger of the loss chunk min(C, L) x logits_row (end of forward) and one layer's
      backward working set T x backward (start of backward; with every layer checkpointed, one
      recomputed layer's activations live beside the kept inputs; a lean layer's rebuilt tensors
      add `rebuilt` per token to it).
    CUDA graphs keep that step's memory in their own pool, so an evaluation between steps (a no-grad
    forward) allocates beside it: T x evaluation plus the same loss chunk.
    Per-token terms include `ACTIVATION_CALIBRATION`.
    """

    layers: int
    vocab: int
    fixed: int  # weights, adapter + gradients + AdamW state, runtime workspaces
    prepare: int  # transient at a step's start: DoRA's weight norms, one group of layers in float32
    layer: int  # per token: one decoder layer's saved activations, not checkpointed
    checkpointed: int  # per token: a checkpointed layer (its input, kept to recompute from)
    lean: int  # per token: a lean layer (`hive_train.lean`: what it keeps besides rebuildable outputs)
    rebuilt: int  # per token: a lean layer's rebuilt tensor alive in its backward (SwiGLU's output)
    backward: int  # per token: one layer's backward working set beyond what it saved
    outside: int  # per token: RoPE tables, the final norm, the graph's token inputs
    loss: int  # per loss token: its hidden row, the row's gradient, target, position and weight
    logits_row: int  # per row of a loss chunk: its logits (and, off the fused kernel, log-probabilities)
    evaluation: int  # per token: a no-grad forward's working set (one layer's MLP)
    breakdown: tuple[tuple[str, int], ...] = ()  # `fixed`, item by item, for reports

    @classmethod
    def from_model(
        cls,
        info,
        rank: int,
        targets: Iterable[str],
        keep_4bit: bool,
        *,
        adapter: str = "dora",
        quant: str = "nf4",
        compute_bytes: int = 2,
        fused_loss: bool = True,
    ) -> MemoryCosts:
        """The costs of training `adapter` (dora, lora, ia3) of `rank` on `targets` of the model
        `info` describes (`hive_train.model.ModelInfo`), base weights `quant` (nf4 or none) kept
        4-bit when `keep_4bit` (else dequantized once into a dense copy), computing in
        `compute_bytes`-byte floats (2: bf16). `fused_loss`: the LM-head loss runs hive's CUDA
        kernel (`kernels.cross_entropy_rows`: a chunk's bf16 logits, the gradient written over
        them), else PyTorch's (the logits, float32 log-probabilities and a copy at once)."""
        c, f = compute_bytes, 4
        h, i, hd = info.hidden, info.intermediate, info.head_dim
        q, kv = info.heads * hd, info.kv_heads * hd
        shapes = module_shapes(info)
        adapted = [m for m in dict.fromkeys(targets) if m in shapes]
        dora = adapter == "dora"
        low_rank = adapter in ("lora", "dora")

        # -- fixed: weights and the adapter
        linear = sum(o * n for o, n in shapes.values()) * info.layers
        parts: dict[str, int] = {}
        if quant == "nf4":
            # 4 bits a weight plus double-quantized absmax (one byte per block of 64)
            parts["NF4 base weights"] = int(linear * (0.5 + 1 / 64))
            if not keep_4bit and low_rank:  # the fast path's dense copy: [W; A; 0] per adapted layer
                pad = rank_padding(rank) if dora else 0
                parts["dense base copy"] = (
                    sum((shapes[m][0] + pad) * shapes[m][1] for m in adapted) * info.layers * c
                )
        else:
            parts["base weights"] = linear * c
        parts["embeddings"] = info.vocab_size * h * c * (1 if info.tied_embeddings else 2)
        parts["norms"] = (info.layers * (2 * h + 2 * hd) + h) * c
        if low_rank:
            params = sum(rank * (o + n) + (o if dora else 0) for o, n in (shapes[m] for m in adapted))
            # per step, A and s·B in the compute dtype, DoRA's scales and magnitudes in float32
            prepared = sum(
                rank * (o + n) * c + (3 * o * f if dora else 0) for o, n in (shapes[m] for m in adapted)
            )
        else:  # IA3: one scale per output (per input for the MLP's down projection)
            params = sum(shapes[m][1] if m == "down_proj" else shapes[m][0] for m in adapted)
            prepared = 0
        # float32 master weights, their gradients and AdamW's two moments: 16 bytes a parameter
        parts["adapter + AdamW"] = params * info.layers * 16 + prepared * info.layers
        parts["runtime"] = RUNTIME_BYTES

        # DoRA's per-step norms ||W + s·BA|| (`FastAdapters.prepare`): with the dense copy, over a
        # whole group of same-shaped layers at once from W·Aᵀ, multiplied in bf16 into float32 (no
        # copy of W: `fast_adapters._times_a`; the products, A's two halves and B in float32); with a
        # 4-bit base, one layer at a time from a float32 copy of W and the sum
        prepare = 0
        if dora and adapted:
            per_shape: dict[tuple[int, int], int] = {}
            for m in adapted:
                per_shape[shapes[m]] = per_shape.get(shapes[m], 0) + 1
            if "dense base copy" in parts:
                prepare = max(
                    count * info.layers * (3 * o * rank * f + 2 * rank * n * c + rank * (o + n) * f)
                    for (o, n), count in per_shape.items()
                )
            else:
                prepare = 2 * f * max(o * n for o, n in per_shape)

        # -- per token, one decoder layer without checkpointing: the tensors saved for backward
        layer = h * c + f  # input_layernorm: its input (the residual stream) and 1/rms
        rebuildable = 0  # of `layer`: what a lean layer rebuilds instead (`hive_train.lean`)
        if set(adapted) & {"q_proj", "k_proj", "v_proj"}:
            layer += h * c  # the normed input, saved by the adapted q/k/v projections
            rebuildable += h * c
        layer += q * c + info.heads * f  # q projection output: q_norm's input (and DoRA's y), 1/rms per head
        layer += kv * c + info.kv_heads * f  # k projection output, likewise
        layer += kv * c  # v projection output: FlashAttention's value input (and DoRA's y)
        layer += (q + kv) * c  # q and k after norm and RoPE: FlashAttention's query and key inputs
        rebuildable += (q + kv) * c
        layer += q * c + info.heads * f  # attention output (o_proj's input) and its log-sum-exp
        if dora and "o_proj" in adapted:
            layer += h * c  # o_proj's output, kept by DoRA for the magnitude gradient
        layer += h * c + f  # post_attention_layernorm: its input and 1/rms
        if set(adapted) & {"gate_proj", "up_proj"}:
            layer += h * c  # the normed input, saved by the adapted gate/up projections
            rebuildable += h * c
        layer += 2 * i * c  # gate and up outputs, saved by the fused SwiGLU (up's is also DoRA's y)
        if "down_proj" in adapted:
            layer += i * c  # SwiGLU's output: down_proj's input
            rebuildable += i * c
            if dora:
                layer += h * c  # down_proj's output, for the magnitude gradient
        if low_rank:
            layer += len(adapted) * rank * c  # x·Aᵀ of each adapted projection
        checkpointed = h * c  # the layer's input, from which backward recomputes the rest
        # backward of the MLP, the widest moment: SwiGLU's two input gradients and down_proj's
        # input gradient, beside the residual stream's gradient and the branch's
        backward = 2 * i * c + 2 * h * c
        # outside the layers: RoPE's cos and sin, the final norm's input, 1/rms and output, and
        # the step's token ids and positions (int64)
        outside = 2 * hd * c + 2 * h * c + f + 16
        # per loss position: its hidden row and that row's gradient (computed in forward), the
        # target and position (int64) and the weight (float32)
        loss = 2 * h * c + 16 + 4
        # a no-grad forward holds at most the residual stream, the normed input and three MLP
        # intermediates (gate, up, and SwiGLU's output) at once
        evaluation = 2 * h * c + 3 * i * c

        def calibrated(n: int) -> int:
            return math.ceil(n * ACTIVATION_CALIBRATION)

        return cls(
            layers=info.layers,
            vocab=info.vocab_size,
            fixed=sum(parts.values()),
            prepare=prepare,
            layer=calibrated(layer),
            checkpointed=calibrated(checkpointed),
            lean=calibrated(layer - rebuildable),
            rebuilt=calibrated(i * c if "down_proj" in adapted else h * c),
            backward=calibrated(backward),
            outside=calibrated(outside),
            loss=loss,
            logits_row=info.vocab_size * (c if fused_loss and c == 2 else 2 * c + f),
            evaluation=calibrated(evaluation),
            breakdown=tuple(parts.items()),
        )

    def step_peak(self, tokens: int, loss_tokens: int, checkpointed: int, chunk: int, lean: int = 0) -> int:
        """Predicted peak allocated bytes of one micro-batch's forward and backward (`fixed` included)."""
        k = min(max(checkpointed, 0), self.layers)
        n = min(max(lean, 0), self.layers - k)
        loss_tokens = min(loss_tokens, tokens)
        chunk_rows = min(chunk, loss_tokens)
        kept = tokens * (self.outside + k * self.checkpointed) + loss_tokens * self.loss
        layers = (self.layers - k - n) * self.layer + n * self.lean
        forward_end = kept + tokens * layers + chunk_rows * self.logits_row
        # backward: with every layer checkpointed one recomputed layer is live; with the first k
        # checkpointed (`hive_train.checkpointing`) their recomputation comes after the later layers
        # freed theirs, so it never adds to the forward's peak
        working = self.backward + (self.rebuilt if n else 0)
        backward = kept + tokens * ((layers if k < self.layers else self.layer) + working)
        return self.fixed + max(forward_end, backward, self.prepare)

    def evaluation_peak(self, tokens: int, loss_tokens: int, chunk: int) -> int:
        """Bytes an evaluation (a no-grad forward) allocates outside a CUDA graph's pool."""
        chunk_rows = min(chunk, EVAL_LOSS_CHUNK, loss_tokens, tokens)
        return max(self.prepare, tokens * self.evaluation + chunk_rows * self.logits_row)

    def peak(self, tokens: int, loss_tokens: int, checkpointed: int, chunk: int, lean: int = 0) -> int:
        """Predicted peak reserved bytes: the step's peak, which a CUDA graph keeps in its pool, and
        an evaluation beside it."""
        return self.step_peak(tokens, loss_tokens, checkpointed, chunk, lean) + self.evaluation_peak(
            tokens, loss_tokens, chunk
        )


def usable_bytes(memory_bytes: int, expandable: bool = True) -> int:
    """The budget a plan fills for `memory_bytes` of GPU memory (a tier's size, or free memory):
    `USABLE_FRACTION` of it less the allowance (`ALLOWANCE_BYTES` + `ALLOWANCE_FRACTION` of it;
    the larger `FRAGMENTED_` pair when the allocator runs without `expandable` segments)."""
    if expandable:
        fixed, fraction = ALLOWANCE_BYTES, ALLOWANCE_FRACTION
    else:
        fixed, fraction = FRAGMENTED_ALLOWANCE_BYTES, FRAGMENTED_ALLOWANCE_FRACTION
    return max(0, int(memory_bytes * (USABLE_FRACTION - fraction)) - fixed)


def relative_speed(micro_tokens: int) -> float:
    """Throughput at `micro_tokens` tokens per micro-batch relative to 16,384 (no checkpointing),
    interpolated in log2(tokens) over `SPEED_BY_MICRO_TOKENS`, extrapolated below it (never under
    0.05) and flat above it."""
    table = SPEED_BY_MICRO_TOKENS
    if micro_tokens >= table[-1][0]:
        return table[-1][1]
    # the first segment that reaches micro_tokens (the first one also extends below the table)
    (t0, s0), (t1, s1) = next(pair for pair in zip(table, table[1:]) if micro_tokens <= pair[1][0])
    x, x0, x1 = math.log2(max(micro_tokens, 1)), math.log2(t0), math.log2(t1)
    return max(0.05, s0 + (s1 - s0) * (x - x0) / (x1 - x0))


def plan_speed(
    micro_tokens: int, checkpointed: int, layers: int, chunk_speed: float = 1.0, lean: int = 0
) -> float:
    """Predicted throughput relative to 16,384-token micro-batches without checkpointing: time per
    token 1 / `relative_speed` plus `RECOMPUTE_COST` for each checkpointed fraction of the layers
    and `LEAN_COST` for each lean fraction, times `chunk_speed`, the loss chunk's factor
    (`LOSS_CHUNK_SPEED`; 1.0 when the chunk holds every loss position of a micro-batch)."""
    recompute = (RECOMPUTE_COST * checkpointed + LEAN_COST * lean) / max(layers, 1)
    return chunk_speed / (1 / relative_speed(micro_tokens) + recompute)


@dataclass(frozen=True)
class Plan:
    """How a step is batched and what it keeps, with the predicted peak memory."""

    micro_rows: int | None  # rows per micro-batch (None: micro-batches built by tokens, left alone)
    grad_accum: int | None  # micro-batches per optimizer step (None with micro_rows)
    micro_tokens: int  # tokens per micro-batch (at most)
    checkpoint_layers: int  # the first N decoder layers recompute their activations in backward
    layers: int
    loss_chunk: int  # LM-head loss rows computed at once
    peak_bytes: int  # predicted peak reserved (the step, and an evaluation beside its graph pool)
    step_bytes: int  # predicted peak allocated by a step
    budget_bytes: int
    speed: float  # predicted throughput relative to 16k-token micro-batches without checkpointing
    fits: bool  # peak_bytes <= budget_bytes (False: nothing fits; this is the smallest there is)
    lean_layers: int = 0  # the next N layers rebuild their norm, SwiGLU and RoPE outputs (`lean`)

    def describe(self) -> str:
        """One line: `micro-batch 2 rows x 4, 10 of 28 layers checkpointed, 6 lean, loss chunk 2048,
        predicted peak 9.8 GB`."""
        if self.micro_rows is not None:
            batching = (
                f"micro-batch {self.micro_rows} row{'s' if self.micro_rows != 1 else ''} x {self.grad_accum}"
            )
        else:
            batching = f"micro-batches of {self.micro_tokens} tokens"
        line = (
            f"{batching}, {self.checkpoint_layers} of {self.layers} layers checkpointed, "
            f"{self.lean_layers} lean, loss chunk {self.loss_chunk}, predicted peak {self.peak_bytes / GB:.1f} GB"
        )
        if not self.fits:
            line += f" (over the {self.budget_bytes / GB:.1f} GB budget: nothing smaller fits)"
        return line

    def to_dict(self) -> dict:
        return {
            "micro_rows": self.micro_rows,
            "grad_accum": self.grad_accum,
            "micro_tokens": self.micro_tokens,
            "checkpoint_layers": self.checkpoint_layers,
            "lean_layers": self.lean_layers,
            "layers": self.layers,
            "loss_chunk": self.loss_chunk,
            "peak_gb": round(self.peak_bytes / GB, 3),
            "step_gb": round(self.step_bytes / GB, 3),
            "budget_gb": round(self.budget_bytes / GB, 3),
            "speed": round(self.speed, 4),
            "fits": self.fits,
            "description": self.describe(),
        }


def divisors(n: int) -> list[int]:
    """The divisors of n >= 1, ascending."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def loss_tokens_of(micro_tokens: int, rows: int | None, loss_tokens_per_row: int | None) -> int:
    """Loss positions a micro-batch holds at most: rows x the most any row has, padded as CUDA
    graphs pad them, never more than its tokens (every token, when the rows are unknown)."""
    if loss_tokens_per_row is None or rows is None:
        return micro_tokens
    padded = -(-rows * loss_tokens_per_row // LOSS_PADDING) * LOSS_PADDING
    return min(micro_tokens, max(padded, LOSS_PADDING))


def plan(
    costs: MemoryCosts,
    budget_bytes: int,
    rows_per_step: int,
    seq: int,
    layers: int | None = None,
    *,
    loss_tokens_per_row: int | None = None,
    micro_rows: int | None = None,
    micro_tokens: int | None = None,
    checkpoint_layers: int | None = None,
    lean_layers: int | None = None,
    loss_chunk: int | None = None,
) -> Plan:
    """The fastest predicted batching whose predicted peak (`MemoryCosts.peak`) fits `budget_bytes`.

    Tries micro-batches of m rows for every m dividing `rows_per_step` (accumulation rows / m, so
    the rows of an optimizer step never change), the first k of `layers` decoder layers
    checkpointed for k = 0..layers (default: all the model's), the fewest lean layers after them
    that fit (more only cost time), and every loss chunk of `LOSS_CHUNKS`; the speed of each is
    `plan_speed`. Ties go to larger micro-batches (fewer launches), then fewer checkpointed and
    lean layers, then larger loss chunks. The keyword arguments pin a choice: `micro_rows` (rows
    per micro-batch), `micro_tokens` (micro-batches built by tokens: the rows are not planned),
    `checkpoint_layers`, `lean_layers`, `loss_chunk`. `loss_tokens_per_row`: the most loss
    positions any row has (None: every token carries loss). Deterministic. When nothing fits, the
    plan with the smallest peak is returned with `fits=False`.
    """
    if rows_per_step < 1 or seq < 1:
        raise ValueError(f"rows_per_step and seq must be positive (got {rows_per_step}, {seq})")
    layers = costs.layers if layers is None else layers
    if micro_tokens is not None:
        shapes = [(None, None, micro_tokens)]
    else:
        rows = [micro_rows] if micro_rows is not None else divisors(rows_per_step)
        shapes = [(m, max(1, -(-rows_per_step // m)), m * seq) for m in rows]
    ks = [min(max(checkpoint_layers, 0), layers)] if checkpoint_layers is not None else range(layers + 1)
    chunks = [loss_chunk] if loss_chunk is not None else LOSS_CHUNKS
    candidates = []
    for m, accum, tokens in shapes:
        loss_tokens = loss_tokens_of(tokens, m, loss_tokens_per_row)
        for k in ks:
            for chunk in chunks:

                def candidate(
                    n: int, m=m, accum=accum, tokens=tokens, loss=loss_tokens, k=k, chunk=chunk
                ) -> Plan:
                    peak = costs.peak(tokens, loss, k, chunk, n)
                    return Plan(
                        micro_rows=m,
                        grad_accum=accum,
                        micro_tokens=tokens,
                        checkpoint_layers=k,
                        layers=layers,
                        loss_chunk=chunk,
                        peak_bytes=peak,
                        step_bytes=costs.step_peak(tokens, loss, k, chunk, n),
                        budget_bytes=budget_bytes,
                        speed=plan_speed(
                            tokens, k, layers, 1.0 if chunk >= loss else LOSS_CHUNK_SPEED.get(chunk, 1.0), n
                        ),
                        fits=peak <= budget_bytes,
                        lean_layers=n,
                    )

                if lean_layers is not None:
                    candidates.append(candidate(min(max(lean_layers, 0), layers - k)))
                    continue
                # the peak only falls as layers turn lean: the fewest that fit, else all of them
                for n in range(layers - k + 1):
                    chosen = candidate(n)
                    if chosen.fits:
                        break
                candidates.append(chosen)
    fitting = [p for p in candidates if p.fits]
    if fitting:
        return max(
            fitting,
            key=lambda p: (p.speed, p.micro_tokens, -p.checkpoint_layers, -p.lean_layers, p.loss_chunk),
        )
    return min(candidates, key=lambda p: (p.peak_bytes, -p.speed))
