"""Lean layers (`hive_train.lean`): marked activations are saved as recipes and rebuilt in backward.

The gradients must be bit for bit those of a plain forward (the same kernels on the same inputs),
every save of a marked tensor's view must be replaced, and the rebuild must run once however many
operations saved the tensor.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from train_helpers import interpret

from hive_train import lean


class _Twice(torch.autograd.Function):
    """A producer like hive's kernels: y = 2x, marked as rebuildable from x."""

    calls = 0

    @staticmethod
    def forward(ctx, x):
        y = x * 2
        lean.mark(y, _Twice.rebuild, x)
        return y

    @staticmethod
    def backward(ctx, dy):
        return dy * 2

    @staticmethod
    def rebuild(x):
        _Twice.calls += 1
        return x * 2


def _chain(x, w1, w2):
    y = _Twice.apply(x)
    # two consumers save views of y (mm keeps its input for the weight's gradient), as q/k/v share
    # one normed input
    a = y.reshape(-1, y.shape[-1]) @ w1
    b = y.transpose(0, 1) @ w2
    return (a.square().sum() + b.sin().sum()) * (x.sum() + 1)


def _grads(lean_on: bool, stats=None):
    torch.manual_seed(0)
    x = torch.randn(6, 5, requires_grad=True)
    w1 = torch.randn(5, 4, requires_grad=True)
    w2 = torch.randn(6, 3, requires_grad=True)
    if lean_on:
        with lean.lean_forward(stats):
            loss = _chain(x, w1, w2)
    else:
        loss = _chain(x, w1, w2)
    loss.backward()
    return [t.grad for t in (x, w1, w2)]


def test_marked_views_are_saved_as_one_recipe_and_rebuilt_once():
    plain = _grads(False)
    _Twice.calls = 0
    stats: dict = {}
    rebuilt = _grads(True, stats)
    assert all(torch.equal(a, b) for a, b in zip(plain, rebuilt))
    assert stats["saves"] == 2 and stats["bytes"] == 2 * 6 * 5 * 4
    assert _Twice.calls == 1  # the second consumer got the kept rebuild


def test_nothing_is_marked_outside_a_lean_forward():
    _Twice.calls = 0
    _grads(False)
    assert _Twice.calls == 0 and not lean.active()
    x = torch.randn(3)
    assert lean.rebuilder(x) is None


def test_a_dead_marked_tensor_leaves_no_mark():
    # the storage of a freed tensor may be handed to the next one: a stale mark would rebuild the
    # wrong values into it
    with lean.lean_forward():
        y = torch.randn(4) * 2
        lean.mark(y, lambda: torch.zeros(4))
        assert lean.rebuilder(y) is not None
        marks = lean._ACTIVE[-1]
        del y
        assert marks.by_storage == {}


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return _Twice.apply(self.linear(x)).sin()


def test_make_lean_patches_and_restores_layer_instances():
    layers = [_Block(), _Block(), _Block()]
    assert lean.make_lean(layers, [2, 1]) == [1, 2]
    assert lean.lean_layers(layers) == [1, 2]
    x = torch.randn(2, 4)
    _Twice.calls = 0
    out = layers[2](layers[1](layers[0](x)))
    out.sum().backward()
    assert _Twice.calls == 2  # each lean layer rebuilt its marked tensor once, the first kept it
    lean.make_lean(layers, [])
    assert lean.lean_layers(layers) == [] and "forward" not in layers[1].__dict__
    with torch.no_grad():  # evaluation marks nothing: plain forward
        lean.make_lean(layers, [0])
        _Twice.calls = 0
        layers[0](x)
    assert not lean.active()


KERNEL_CHECK = """
import json, torch
from hive_train import lean
from hive_train.rmsnorm import frozen_rms_norm
from hive_train.rope import _NormRope, _Rope
from hive_train.kernels import _SwiGLU
torch.manual_seed(0)
B, T, H, D, HID, I = 1, 12, 2, 16, 32, 48
base = {
    "x": torch.randn(B, T, HID), "wq": torch.randn(H * D, HID) / 6, "wg": torch.randn(I, HID) / 6,
    "wu": torch.randn(I, HID) / 6, "wd": torch.randn(HID, I) / 7, "wk": torch.randn(H * D, HID) / 6,
}
norm_w, q_w = torch.rand(HID) + 0.5, torch.rand(D) + 0.5
cos, sin = torch.randn(1, T, D), torch.randn(1, T, D)

def layer(p):
    h = frozen_rms_norm(p["x"], norm_w, 1e-6)
    q = h @ p["wq"].t()
    qn = frozen_rms_norm(q.view(B, T, H, D), q_w, 1e-6).transpose(1, 2)
    qr = _Rope.apply(qn, cos, sin)
    # Qwen3's k: norm and rotation in one kernel (`rope.norm_rope`)
    kr = _NormRope.apply((h @ p["wk"].t()).view(B, T, H, D), q_w, 1e-6, cos, sin)
    s = _SwiGLU.apply(h @ p["wg"].t(), h @ p["wu"].t())
    return (s @ p["wd"].t()).square().sum() + (qr * qr).sum() * qr.mean() + (kr * kr).sum()

def grads(on):
    p = {k: v.clone().requires_grad_() for k, v in base.items()}
    stats = {}
    if on:
        with lean.lean_forward(stats):
            loss = layer(p)
    else:
        loss = layer(p)
    loss.backward()
    return [p[k].grad for k in base], stats

plain, _ = grads(False)
rebuilt, stats = grads(True)
print(json.dumps({"equal": all(torch.equal(a, b) for a, b in zip(plain, rebuilt)), **stats}))
"""


def test_norm_rope_and_swiglu_outputs_rebuild_exactly_in_triton_interpreter():
    """hive's own kernels mark their outputs: the normed input (saved by four projections), the
    rotated q and k (twice each, by the attention stand-in: rope of a norm's output, and the fused
    norm + rope) and SwiGLU's output (by down_proj) are saved as recipes and backward gives the
    same gradients to the bit."""
    pytest.importorskip("triton")
    r = interpret(KERNEL_CHECK)
    assert r["equal"], r
    h, qr, s = 12 * 32 * 4, 12 * 2 * 16 * 4, 12 * 48 * 4
    assert r["bytes"] >= 4 * h + 2 * (2 * qr) + s, r
    assert json.dumps(r)
