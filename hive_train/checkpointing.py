"""Selective activation checkpointing of decoder layers, usable inside a CUDA graph capture.

`checkpoint_layers(model, n)` makes the first `n` decoder layers of a causal LM recompute their
activations in backward instead of keeping them: each chosen layer instance's `forward` is
patched to run through `torch.utils.checkpoint.checkpoint` (non-reentrant), so the layer keeps only
its input and recomputes the rest when backward reaches it. The math is unchanged (same operations
on the same inputs); memory per checkpointed layer drops from all its saved activations to its
input, and the step pays one extra forward of that layer.

Why not transformers' `gradient_checkpointing_enable`: it is all layers or none, and it turns
CUDA graphs off in hive. This keeps graphs: with `preserve_rng_state=False` the checkpoint never
reads or restores the CUDA RNG state (which a capture forbids). That is exact as long as the
layers draw no random numbers, which holds on hive's fast path (adapter dropout 0: the only
randomness in a layer). With dropout, the RNG state is preserved so the recomputed masks match,
and CUDA graphs do not apply (`cuda_graphs.graph_eligibility`).

Why the first n layers: backward runs the last layer first, so by the time it reaches the first
layers every later layer has freed its activations; recomputing an early layer then only refills
memory the later layers gave back, and the step's peak stays the end of the forward pass (all
non-checkpointed activations live). Checkpointing later or evenly spaced layers costs the same
recompute but can put a recomputed layer's activations on top of that peak
(`memory_plan.MemoryCosts.step_peak` counts it this way).
"""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a transformers causal LM (or a peft model around one), in order."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, "model", base)
    inner = getattr(inner, "language_model", inner)  # multimodal wrappers
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(base).__name__} has no decoder layers (model.layers) to checkpoint")
    return list(layers)


def _checkpointed_forward(self, *args, **kwargs):
    # evaluation and generation (no grad, or eval mode) have nothing to save: plain forward
    if not (self.training and torch.is_grad_enabled()):
        return self._hive_plain_forward(*args, **kwargs)
    return checkpoint(
        self._hive_plain_forward,
        *args,
        use_reentrant=False,
        preserve_rng_state=self._hive_preserve_rng_state,
        **kwargs,
    )


def checkpoint_layers(model: nn.Module, count: int, *, preserve_rng_state: bool = False) -> list[int]:
    """Make the first `count` decoder layers of `model` recompute their activations in backward
    (patched on these layer instances; calling it again re-chooses). `preserve_rng_state`: keep
    the RNG state for the recomputation (needed when the layers draw random numbers, e.g. adapter
    dropout; not allowed inside a CUDA graph capture). Returns the checkpointed layers' indices."""
    layers = decoder_layers(model)
    count = max(0, min(count, len(layers)))
    for index, layer in enumerate(layers):
        if "_hive_plain_forward" in layer.__dict__:  # undo an earlier choice
            plain = layer.__dict__.pop("_hive_plain_forward")
            if getattr(plain, "__func__", None) is type(layer).forward:
                del layer.forward  # it was the class's own forward
            else:
                layer.forward = plain
        if index < count:
            layer._hive_plain_forward = layer.forward
            layer._hive_preserve_rng_state = preserve_rng_state
            layer.forward = types.MethodType(_checkpointed_forward, layer)
    return list(range(count))


def checkpointed(model: nn.Module) -> list[int]:
    """Indices of the decoder layers that `checkpoint_layers` made recompute their activations."""
    return [i for i, layer in enumerate(decoder_layers(model)) if "_hive_plain_forward" in layer.__dict__]
