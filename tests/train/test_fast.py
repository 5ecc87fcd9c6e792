"""The fast adapter path computes the same loss and adapter gradients as stock bitsandbytes + peft."""

from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip("bitsandbytes")

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Qwen3Config, Qwen3ForCausalLM  # noqa: E402

from hive_train.fast_adapters import install_fast_adapters, linear_cross_entropy_sum  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def tiny_config() -> Qwen3Config:
    return Qwen3Config(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        tie_word_embeddings=True,
    )


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base")
    Qwen3ForCausalLM(tiny_config()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bf16_base_dir(tmp_path_factory):
    """A bf16 checkpoint: loaded in float32 or in bf16 it quantizes to the same NF4 codes, so a
    float32 run is a higher-precision run of the very model a bf16 run trains."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base-bf16")
    Qwen3ForCausalLM(tiny_config()).to(torch.bfloat16).save_pretrained(path)
    return path


def loss_and_grads(base_dir, ids, *, dtype, dora, fast, keep_4bit=True, autocast=False):
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
    )
    model = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=quant, dtype=dtype)
    torch.manual_seed(5)
    adapter = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, use_dora=dora, target_modules=TARGETS)
    model = get_peft_model(model, adapter)
    torch.manual_seed(2)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; make the adapter contribute
            torch.nn.init.normal_(param, std=0.02)
        if "magnitude" in name:
            param.data.mul_(1 + 0.1 * torch.randn_like(param))
    model.train()
    if fast:
        assert len(install_fast_adapters(model, keep_4bit=keep_4bit, dtype=dtype).layers) == 2 * len(TARGETS)
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad])
    return out.loss.item(), grads


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("dora", [True, False], ids=["dora", "lora"])
@pytest.mark.parametrize("keep_4bit", [True, False], ids=["nf4-each-step", "dequantized-once"])
def test_fast_path_matches_stock_in_fp32(base_dir, dora, keep_4bit):
    ids = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(1))
    ref_loss, ref_grads = loss_and_grads(base_dir, ids, dtype=torch.float32, dora=dora, fast=False)
    loss, grads = loss_and_grads(
        base_dir, ids, dtype=torch.float32, dora=dora, fast=True, keep_4bit=keep_4bit
    )
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert rel(grads, ref_grads) < 1e-4


@pytest.mark.parametrize("seed", [0, 3])
def test_fast_path_bf16_is_within_stock_bf16_spread(bf16_base_dir, seed):
    """In bf16 no two executions agree bit for bit: stock peft with and without autocast (two
    correct runs of the same layers) already differ by about 1% in their gradients on this model.
    The fast path must be no further from stock than that, and no further from the float32 run of
    the same NF4 model than stock is. (Rounding the DoRA-scaled weight g ⊙ W to bf16, as an earlier
    version did, put it 16-22% beyond that spread on these inputs.)"""
    ids = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(seed))
    _, ref = loss_and_grads(bf16_base_dir, ids, dtype=torch.float32, dora=True, fast=False)
    stock_loss, stock = loss_and_grads(bf16_base_dir, ids, dtype=torch.bfloat16, dora=True, fast=False)
    _, stock_autocast = loss_and_grads(
        bf16_base_dir, ids, dtype=torch.bfloat16, dora=True, fast=False, autocast=True
    )
    fast_loss, fast = loss_and_grads(
        bf16_base_dir, ids, dtype=torch.bfloat16, dora=True, fast=True, keep_4bit=False
    )
    spread = rel(stock_autocast, stock)
    assert 1e-4 < spread < 5e-2  # a real bf16 difference, not a broken comparison
    assert fast_loss == pytest.approx(stock_loss, rel=1e-3)
    assert rel(fast, stock) < 1.1 * spread
    assert rel(fast, ref) < 1.15 * rel(stock, ref)


def test_chunked_cross_entropy_matches_full_logits():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(100, 32, generator=gen, requires_grad=True)
    weight = torch.randn(300, 32, generator=gen)
    targets = torch.randint(0, 300, (100,), generator=gen)
    chunked = linear_cross_entropy_sum(hidden, weight, targets, chunk=17)
    chunked.backward(torch.tensor(0.5))
    grad_chunked = hidden.grad.clone()
    hidden.grad = None
    full = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    full.backward(torch.tensor(0.5))
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5)
    assert rel(grad_chunked, hidden.grad) < 1e-5


def test_prepared_weights_follow_optimizer_steps(base_dir):
    """After each optimizer step the fast path must see the updated adapter (not a stale copy)."""
    ids = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(4))
    losses = {}
    for fast in (False, True):
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
        model = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=quant, dtype=torch.float32)
        torch.manual_seed(5)
        model = get_peft_model(
            model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, use_dora=True, target_modules=TARGETS)
        )
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-2)
        if fast:
            install_fast_adapters(model, keep_4bit=False, dtype=torch.float32).attach(optimizer)
        trace = []
        for _ in range(3):
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            trace.append(loss.item())
        losses[fast] = trace
    assert losses[True][0] != losses[True][2]  # training moved the adapter
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)
