"""Lean decoder layers: activations one elementwise pass away from kept tensors are rebuilt, not kept.

On hive's fast path a Qwen3-style decoder layer saves about a third of its activation bytes in
tensors that backward could rebuild cheaply from tensors it keeps anyway:

- each RMSNorm's output, kept by the projections that read it (q/k/v, gate/up) as their input,
  is norm(the norm's input), which the norm keeps;
- SwiGLU's output, kept by down_proj as its input, is silu(gate)·up, both kept by SwiGLU;
- q and k after q_norm/k_norm and RoPE, kept by FlashAttention, are rope(norm(q)), q being the
  projection's output that q_norm (and DoRA) keep.

In a lean layer (`make_lean`), the kernels that produce these tensors (`hive_train.rmsnorm`,
`hive_train.kernels.swiglu`, `hive_train.rope`) `mark` their output with how to rebuild it, and a
saved-tensor hook around the layer's forward stores that recipe instead of any tensor that is a
view of a marked one. Backward rebuilds it on first use, once for all the operations that saved it
(the q, k and v projections share one normed input), with the same kernels on the same inputs, so
the values are bit for bit those of the forward pass.

A lean layer costs a few elementwise passes in backward (about 3.5% of its time) for a third of
its memory; checkpointing a layer recomputes all of its forward (about 29%) for nearly all of it.
Per byte saved, lean is the cheaper of the two, so `hive_train.memory_plan` uses it first.
Checkpointed layers are never lean (the checkpoint's own hooks keep nothing to mark), and outside
a lean layer's forward nothing is marked. Everything here is host-side bookkeeping at the first
(captured) step: CUDA graph replays run the recorded kernels only.
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Callable

import torch
from torch import nn

# the marks of the lean layer whose forward is running (a stack: nested forwards, if any)
_ACTIVE: list[_Marks] = []


class _Recipe:
    """How to rebuild one marked tensor, and the rebuilt tensor while saves of it wait for it."""

    __slots__ = ("fn", "args", "shape", "stride", "waiting", "value")

    def __init__(self, fn: Callable[..., torch.Tensor], args: tuple, like: torch.Tensor):
        self.fn, self.args = fn, args
        self.shape, self.stride = tuple(like.shape), like.stride()
        self.waiting = 0  # saves packed as this recipe and not yet unpacked
        self.value: torch.Tensor | None = None

    def build(self) -> torch.Tensor:
        if self.value is not None:
            return self.value
        with torch.no_grad():
            value = self.fn(*self.args)
        if tuple(value.shape) != self.shape or value.stride() != self.stride:
            raise RuntimeError(
                f"lean rebuild gave shape {tuple(value.shape)} strides {value.stride()}, "
                f"the forward had {self.shape} {self.stride}"
            )
        if self.waiting > 0:  # others saved it too: keep it until they have it
            self.value = value
        return value

    def unpacked(self) -> None:
        self.waiting -= 1
        if self.waiting <= 0:
            self.value = None


class _Marks:
    """Marked tensors of one lean forward, by the address of their storage."""

    def __init__(self):
        self.by_storage: dict[int, tuple[weakref.ref, _Recipe]] = {}

    def add(self, tensor: torch.Tensor, recipe: _Recipe) -> None:
        key = tensor.untyped_storage().data_ptr()

        def forget(_ref, key=key):
            # the storage may be reused once the tensor dies: its mark must go with it
            entry = self.by_storage.get(key)
            if entry is not None and entry[0] is _ref:
                del self.by_storage[key]

        self.by_storage[key] = (weakref.ref(tensor, forget), recipe)

    def find(self, tensor: torch.Tensor) -> tuple[torch.Tensor, _Recipe] | None:
        """The marked tensor `tensor` is a view of (same storage), and its recipe."""
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            return None
        entry = self.by_storage.get(tensor.untyped_storage().data_ptr())
        if entry is None:
            return None
        root = entry[0]()
        if root is None or root.dtype != tensor.dtype or root.device != tensor.device:
            return None
        return root, entry[1]


def active() -> bool:
    """Whether a lean layer's forward is running (producers mark their outputs only then)."""
    return bool(_ACTIVE)


def mark(output: torch.Tensor, fn: Callable[..., torch.Tensor], *args) -> None:
    """Record that `output` (a freshly allocated tensor, not a view) equals `fn(*args)`, so a lean
    layer saves the recipe instead of it. `args` must be tensors backward keeps anyway (or
    constants); `fn` must give the same shape and strides. Does nothing outside a lean forward."""
    if _ACTIVE and output._base is None:
        _ACTIVE[-1].add(output, _Recipe(fn, args, output))


def source(tensor: torch.Tensor) -> tuple[Callable, tuple, int] | None:
    """(fn, args, offset) of the mark `tensor` is a view of: the marked tensor is fn(*args), and
    `tensor` starts `offset` elements after it (for a producer that fuses the rebuild into its
    own); None when it is not marked."""
    found = _ACTIVE[-1].find(tensor) if _ACTIVE else None
    if found is None:
        return None
    root, recipe = found
    return recipe.fn, recipe.args, tensor.storage_offset() - root.storage_offset()


def rebuilder(tensor: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    """A function that rebuilds `tensor` (a marked tensor or a view of one) in backward, for a
    producer whose output is a function of it (RoPE of a normed q); None when it is not marked."""
    if not _ACTIVE:
        return None
    found = _ACTIVE[-1].find(tensor)
    if found is None:
        return None
    root, recipe = found
    size, stride, offset = (
        tuple(tensor.shape),
        tensor.stride(),
        tensor.storage_offset() - root.storage_offset(),
    )

    def rebuild() -> torch.Tensor:
        value = recipe.build()
        return value.as_strided(size, stride, value.storage_offset() + offset)

    return rebuild


class _Saved:
    """What a lean forward saves in place of a marked tensor's view."""

    __slots__ = ("recipe", "size", "stride", "offset")

    def __init__(self, recipe: _Recipe, size, stride, offset: int):
        self.recipe, self.size, self.stride, self.offset = recipe, size, stride, offset


@contextlib.contextmanager
def lean_forward(stats: dict | None = None):
    """Run a forward pass whose marked tensors are saved as recipes. `stats`, when given, counts
    the saves replaced (`saves`) and their bytes (`bytes`), for tests and reports."""
    marks = _Marks()

    def pack(tensor):
        found = marks.find(tensor)
        if found is None:
            return tensor
        root, recipe = found
        recipe.waiting += 1
        if stats is not None:
            stats["saves"] = stats.get("saves", 0) + 1
            stats["bytes"] = stats.get("bytes", 0) + tensor.numel() * tensor.element_size()
        offset = tensor.storage_offset() - root.storage_offset()
        return _Saved(recipe, tuple(tensor.shape), tensor.stride(), offset)

    def unpack(saved):
        if not isinstance(saved, _Saved):
            return saved
        value = saved.recipe.build()
        saved.recipe.unpacked()
        return value.as_strided(saved.size, saved.stride, value.storage_offset() + saved.offset)

    _ACTIVE.append(marks)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        _ACTIVE.pop()


def _lean_layer_forward(self, *args, **kwargs):
    # evaluation and generation save nothing: plain forward
    if not (self.training and torch.is_grad_enabled()):
        return self._hive_lean_plain_forward(*args, **kwargs)
    with lean_forward():
        return self._hive_lean_plain_forward(*args, **kwargs)


def make_lean(layers: list[nn.Module], indices) -> list[int]:
    """Make the decoder `layers` at `indices` lean (patched on these instances; calling it again
    re-chooses, an empty `indices` undoes it). Returns the lean layers' indices, ascending."""
    chosen = sorted(set(indices))
    for index, layer in enumerate(layers):
        if "_hive_lean_plain_forward" in layer.__dict__:  # undo an earlier choice
            plain = layer.__dict__.pop("_hive_lean_plain_forward")
            if getattr(plain, "__func__", None) is type(layer).forward:
                del layer.forward
            else:
                layer.forward = plain
        if index in chosen:
            layer._hive_lean_plain_forward = layer.forward
            layer.forward = types.MethodType(_lean_layer_forward, layer)
    return chosen


def lean_layers(layers: list[nn.Module]) -> list[int]:
    """Indices of the `layers` that `make_lean` made lean."""
    return [i for i, layer in enumerate(layers) if "_hive_lean_plain_forward" in layer.__dict__]
