"""hive's document-causal attention kernels (`hive_train.doc_attention`), run by Triton's
interpreter on the CPU against float64 attention with an explicit block-diagonal causal mask.

The interpreter's bf16 block products are not faithful, so the checks run in float32 with the
interpreter's 16 x 16 tiles: every loop (masked boundary blocks, unmasked inner blocks, the
diagonal), partial last blocks, empty padding documents and grouped key/value heads are exercised.
On a GPU `benchmarks/attention_probe.py` checks the bf16 kernels against FlashAttention 2.
"""

from __future__ import annotations

import json
import textwrap

import pytest

pytest.importorskip("triton")

from train_helpers import interpret_many  # noqa: E402

CHECK = textwrap.dedent(
    """
    import json, sys, torch
    from hive_train import doc_attention
    from hive_train.attention import block_diagonal_mask, hive_attention

    def reference(q, k, v, cu, scale):
        t, hq, _ = q.shape
        group = hq // k.shape[1]
        k, v = k.double().repeat_interleave(group, 1), v.double().repeat_interleave(group, 1)
        s = torch.einsum("thd,shd->hts", q.double(), k) * scale
        s = s.masked_fill(~block_diagonal_mask(cu, t)[0, 0], float("-inf"))
        return torch.einsum("hts,shd->thd", s.softmax(-1), v)

    def rel(a, b):
        return float((a.double() - b).norm() / b.norm())

    out = []
    for case in json.loads(sys.argv[1]):
        torch.manual_seed(0)
        cu = torch.tensor(case["cu"], dtype=torch.int32)
        t, hq, hk, d = cu[-1].item(), case["hq"], case["hk"], case["d"]
        # q, k, v as hive's attention function receives them: (1, H, T, D) views of (1, T, H, D)
        q, k, v = (torch.randn(1, t, h, d).transpose(1, 2).requires_grad_() for h in (hq, hk, hk))
        dout = torch.randn(t, hq, d)
        flat = [x.squeeze(0).transpose(0, 1) for x in (q, k, v)]
        got = doc_attention.doc_attention(*flat, cu)
        grads = torch.autograd.grad(got, (q, k, v), dout)
        ref = reference(*flat, cu, d ** -0.5)
        ref_grads = torch.autograd.grad(ref, (q, k, v), dout.double())
        # the same through hive's attention function, as the model calls it (varlen inputs)
        via, _ = hive_attention(None, q, k, v, None, cu_seq_lens_q=cu, cu_seq_lens_k=cu,
                                max_length_q=t, max_length_k=t)
        out.append({
            "case": case,
            "forward": rel(got, ref),
            "grads": [rel(g, r) for g, r in zip(grads, ref_grads)],
            "grad_layout": [list(g.shape) == list(x.shape) for g, x in zip(grads, (q, k, v))],
            "via_attention_function": rel(via[0], ref),
        })
    print(json.dumps(out))
    """
)

CASES = [
    # grouped heads; documents of 7, 33, 1 and 59 tokens (partial last block), two empty padding
    # documents at the end as CUDA graphs add them
    {"cu": [0, 7, 40, 41, 100, 100, 100], "hq": 4, "hk": 2, "d": 16},
    # one document over several blocks: the unmasked inner loops run; one head per key/value head
    {"cu": [0, 80], "hq": 2, "hk": 2, "d": 32},
    # single-token documents followed by a long one; four query heads per key/value head
    {"cu": [0, 1, 2, 3, 4, 5, 70], "hq": 4, "hk": 1, "d": 16},
]


@pytest.fixture(scope="module")
def interpreted():
    return interpret_many({"doc_attention": (CHECK, [json.dumps(CASES)])})["doc_attention"]


def test_document_causal_attention_matches_masked_attention(interpreted):
    """Output and the gradients of q, k and v agree with float64 attention under the
    block-diagonal causal mask to float32 rounding, in every layout case; the gradients come back
    in the inputs' shapes; hive's attention function routes varlen calls to these kernels."""
    assert isinstance(interpreted, list), interpreted.get("error")
    for r in interpreted:
        assert r["forward"] < 1e-5, r
        assert max(r["grads"]) < 1e-5, r
        assert all(r["grad_layout"]), r
        assert r["via_attention_function"] < 1e-5, r


def test_flash_attention_can_be_chosen_instead(monkeypatch):
    """HIVE_ATTENTION_KERNEL=flash hands packed-row attention back to FlashAttention."""
    from hive_train.attention import triton_kernels_chosen

    monkeypatch.delenv("HIVE_ATTENTION_KERNEL", raising=False)
    assert triton_kernels_chosen()
    monkeypatch.setenv("HIVE_ATTENTION_KERNEL", "flash")
    assert not triton_kernels_chosen()


def test_tiles_step_down_until_the_gpu_holds_them():
    """A GPU whose shared memory the chosen tiles overflow (Triton's OutOfResources at the first
    launch) gets the next smaller set, and the next, until one fits; when none does, the error
    stays Triton's own."""
    from triton.runtime.errors import OutOfResources

    from hive_train import doc_attention as da

    tried = []

    def launch(blocks, limit):
        tried.append(blocks)
        if blocks.kv_n * blocks.kv_m > limit:
            raise OutOfResources(blocks.kv_n * blocks.kv_m, limit, "shared memory")
        return "ran"

    assert da.fitting(lambda b: launch(b, 10**6), da.BLOCKS) == ("ran", da.BLOCKS)
    tried.clear()
    assert da.fitting(lambda b: launch(b, 32 * 32), da.BLOCKS) == ("ran", da.MINIMAL_BLOCKS)
    assert tried == list(da.TILE_SETS)
    with pytest.raises(OutOfResources):
        da.fitting(lambda b: launch(b, 16), da.SMALL_BLOCKS)


def test_a_gpu_keeps_the_tiles_that_fit(monkeypatch):
    """The step-down is remembered per GPU: the next launch starts from the set that fitted."""
    from types import SimpleNamespace

    from triton.runtime.errors import OutOfResources

    from hive_train import doc_attention as da

    monkeypatch.setattr(da, "_device_blocks", {0: da.BLOCKS})
    gpu_tensor = SimpleNamespace(is_cuda=True, device=SimpleNamespace(index=0))
    seen = []

    def launch(blocks):
        seen.append(blocks)
        if blocks == da.BLOCKS:
            raise OutOfResources(1, 0, "shared memory")
        return blocks

    assert da._tiled(launch, gpu_tensor, None) == da.SMALL_BLOCKS
    assert da._tiled(launch, gpu_tensor, None) == da.SMALL_BLOCKS
    assert seen == [da.BLOCKS, da.SMALL_BLOCKS, da.SMALL_BLOCKS]
    assert da._tiled(launch, gpu_tensor, da.MINIMAL_BLOCKS) == da.MINIMAL_BLOCKS  # given tiles win
