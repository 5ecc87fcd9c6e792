"""Selective activation checkpointing (hive_train/checkpointing.py) on the real QLoRA path, CPU.

Checkpointing k of the tiny model's decoder layers must change nothing but memory: the same loss
and adapter gradients for k = 0, 1 and all (float32), a checkpointed layer keeps none of its
activations for backward (it recomputes them), and `train` runs what the config asks for.
(Inside a CUDA graph capture it is exercised by the GPU benchmark's --vram tiers.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from train_helpers import TINY_MODEL, TOKENIZER, make_documents, packed_table

from hive_train.checkpointing import checkpoint_layers, checkpointed, decoder_layers
from hive_train.config import TrainConfig
from hive_train.data import flatten
from hive_train.loop import train
from hive_train.loss import micro_loss
from hive_train.model import load_model, trainable_state

LAYERS = 2  # fixtures/tiny-qwen3


def make_model(checkpoint: int | None, dropout: float = 0.0, gradient_checkpointing: bool = False):
    """The tiny model with a seeded DoRA adapter whose B is not zero (every adapter tensor gets a
    gradient), float32 on the CPU, `checkpoint` layers checkpointed."""
    torch.manual_seed(0)
    cfg = TrainConfig(
        model=str(TINY_MODEL), rank=4, alpha=8, dropout=dropout, checkpoint_layers=checkpoint,
        gradient_checkpointing=gradient_checkpointing,
    )  # fmt: skip
    model = load_model(cfg, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model.train()


@pytest.fixture(scope="module")
def batch():
    table = packed_table(make_documents(14, seed=3, min_len=6, max_len=30), 64)
    return flatten(table, np.array([0, 1, 2]))


def loss_and_grads(model, batch, seed: int = 7):
    torch.manual_seed(seed)  # the same dropout masks for every model
    loss = micro_loss(model, batch, "sdpa")
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().clone() for n, p in trainable_state(model).items()}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_checkpointed_layers_give_the_same_loss_and_gradients(batch, dropout):
    """k = 0, 1 and all: equal within 1e-6. With dropout (peft's own layers) the RNG state is
    kept, so the recomputed layers draw the same masks."""
    reference_loss, reference = loss_and_grads(make_model(0, dropout), batch)
    for k in (1, LAYERS):
        model = make_model(k, dropout)
        assert checkpointed(model) == list(range(k))
        assert all(layer._hive_preserve_rng_state == (dropout > 0) for layer in decoder_layers(model)[:k])
        loss, grads = loss_and_grads(model, batch)
        assert abs(loss - reference_loss) <= 1e-6 * abs(reference_loss)
        for name, grad in reference.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-6, atol=1e-7, msg=name)


def saved_bytes(model, batch) -> int:
    """Bytes of the distinct tensors autograd keeps for backward over a forward pass (parameters
    left out): what stays in memory until backward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = micro_loss(model, batch, "sdpa")
    loss.backward()
    return sum(seen.values())


def test_a_checkpointed_layer_keeps_no_activations_and_recomputes(batch):
    kept = [saved_bytes(make_model(k), batch) for k in range(LAYERS + 1)]
    assert kept[0] > kept[1] > kept[2] > 0  # the loss and the final norm still keep theirs
    # each checkpointed layer frees one layer's worth (the two layers have the same shapes)
    assert abs((kept[0] - kept[1]) - (kept[1] - kept[2])) <= 0.1 * (kept[0] - kept[1])
    # ... and runs its forward again in backward; the other layers run once (a pre-hook: the
    # recomputation stops inside the MLP once its last saved tensor is back)
    model = make_model(1)
    calls = [0] * LAYERS
    for index, layer in enumerate(decoder_layers(model)):
        layer.mlp.register_forward_pre_hook(
            lambda *_, index=index: calls.__setitem__(index, calls[index] + 1)
        )
    loss = micro_loss(model, batch, "sdpa")
    assert calls == [1, 1]
    loss.backward()
    assert calls == [2, 1]


def test_choices_evaluation_and_gradient_checkpointing_flag(batch):
    model = make_model(None, gradient_checkpointing=True)  # --gradient-checkpointing: every layer
    assert checkpointed(model) == [0, 1]
    assert TrainConfig(checkpoint_layers=5).checkpointed_layers(LAYERS) == LAYERS  # at most all
    assert TrainConfig(checkpoint_layers=0, gradient_checkpointing=True).checkpointed_layers(LAYERS) == 0
    with torch.no_grad():  # evaluation: a plain forward, nothing recomputed or saved
        evaluated = float(micro_loss(model, batch, "sdpa"))
    assert evaluated == pytest.approx(loss_and_grads(model, batch)[0], rel=1e-6)
    layer = decoder_layers(model)[0]
    checkpoint_layers(model, 0)  # choosing again undoes the patch
    assert checkpointed(model) == [] and "forward" not in layer.__dict__


def test_train_runs_the_configured_checkpointing(shards, tmp_path):
    """`train` with --checkpoint-layers 1 (and a --vram tier, planned on the CPU too) trains as
    without checkpointing, and config.yaml records what ran."""

    def run(name: str, **overrides):
        cfg = TrainConfig(
            model=str(TINY_MODEL), tokenizer=str(TOKENIZER), rank=4, alpha=8, batch_size=2, grad_accum=2,
            max_steps=2, eval_every=0, save_every=0, seed=3, **overrides,
        )  # fmt: skip
        return train(cfg, shards, tmp_path / name, progress=False, explicit={"checkpoint_layers"})

    plain = run("plain", checkpoint_layers=0)
    recomputing = run("recomputing", checkpoint_layers=1, vram="8")
    np.testing.assert_allclose(recomputing.losses, plain.losses, rtol=1e-6)
    assert checkpointed(recomputing.model) == [0] and checkpointed(plain.model) == []
    recorded = yaml.safe_load((tmp_path / "recomputing" / "config.yaml").read_text())["train"]
    plan = recomputing.memory_plan
    assert recorded["checkpoint_layers"] == 1 and recorded["vram"] == "8"
    assert plan["fits"] and plan["checkpoint_layers"] == 1 and plan["layers"] == LAYERS
    assert (recorded["batch_size"], recorded["grad_accum"]) == (plan["micro_rows"], plan["grad_accum"])
    assert recorded["batch_size"] * recorded["grad_accum"] == 4  # rows per step kept
    assert recorded["loss_chunk"] == plan["loss_chunk"] and recorded["keep_4bit"]  # the 8 GB tier's rule
    assert plain.memory_plan is None  # vram auto on a CPU: no plan
