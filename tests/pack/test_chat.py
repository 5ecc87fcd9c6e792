"""Rendering and loss masks, checked at token level against the fixture tokenizer."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive_core.errors import PackError
from hive_data.chat import EMPTY_THINK, ChatRenderer, apply_think, split_think
from hive_data.prompt import sql_messages

# The plain ChatML template of ../shared/tools/make_qwen_tokenizer.py: no think handling at all.
PLAIN_CHATML = (
    "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(fixtures_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(fixtures_dir / "tokenizer"))


@pytest.fixture(scope="module")
def plain_tokenizer(fixtures_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(fixtures_dir / "tokenizer"))
    tok.chat_template = PLAIN_CHATML
    return tok


SQL = sql_messages(
    "How many singers are there?", "CREATE TABLE singer (id INT);", "postgres", "SELECT COUNT(*) FROM singer"
)
MULTI = [
    {"role": "system", "content": "You write JSON."},
    {"role": "user", "content": "  Give me {a: 1}\n"},
    {"role": "assistant", "content": '<think>\nthe user wants json\n</think>\n\n{"a": 1}'},
    {"role": "user", "content": "Now with b"},
    {"role": "assistant", "content": '{"a": 1, "b": 2}', "reasoning_content": "add b"},
]
EDGES = [
    {"role": "user", "content": "\n\nleading newlines and ünïcödé ✓ 数据"},
    {"role": "assistant", "content": "  starts with spaces\n\nends with newline\n"},
]


def expected_loss_text(messages, think: str) -> str:
    """What the masked-in tokens must decode to: each assistant turn under the policy plus <|im_end|>."""
    return "".join(
        apply_think(m["content"], think, m.get("reasoning_content")) + "<|im_end|>"
        for m in messages
        if m["role"] == "assistant"
    )


def test_split_and_apply_think():
    assert split_think("SELECT 1") == (None, "SELECT 1")
    assert split_think("<think>\nwhy\n</think>\n\nSELECT 1") == ("why", "SELECT 1")
    assert split_think("<think>\n\n</think>\n\nSELECT 1") == ("", "SELECT 1")
    assert split_think("SELECT 1", reasoning="\nbecause\n") == ("because", "SELECT 1")
    assert apply_think("SELECT 1", "empty") == EMPTY_THINK + "SELECT 1"
    assert apply_think("<think>\nwhy\n</think>\n\nSELECT 1", "empty") == EMPTY_THINK + "SELECT 1"
    assert apply_think("<think>\nwhy\n</think>\n\nSELECT 1", "keep") == "<think>\nwhy\n</think>\n\nSELECT 1"
    assert apply_think("SELECT 1", "keep") == EMPTY_THINK + "SELECT 1"  # no reasoning is ever made up
    assert apply_think("<think>\nwhy\n</think>\n\nSELECT 1", "strip") == "SELECT 1"
    with pytest.raises(ValueError):
        apply_think("x", "invent")


@pytest.mark.parametrize("think", ["empty", "keep"])
def test_single_turn_render_matches_the_chat_template(tokenizer, think):
    # For a single turn, the fixture's Qwen3-style template and hive agree byte for byte.
    renderer = ChatRenderer(tokenizer, think=think)
    content = "<think>\nlook at the table\n</think>\n\nSELECT 1"
    messages = SQL[:2] + [{"role": "assistant", "content": content}]
    expected = tokenizer.apply_chat_template(
        SQL[:2] + [{"role": "assistant", "content": apply_think(content, think)}], tokenize=False
    )
    assert renderer.render(messages) == expected


def test_prompt_tokens_are_the_inference_prompt(tokenizer):
    # Tokens before the first loss token are exactly what inference feeds the model.
    renderer = ChatRenderer(tokenizer, think="strip")
    ids, mask = renderer.encode_one(SQL)
    first = int(np.flatnonzero(mask)[0])
    prompt = tokenizer.apply_chat_template(SQL[:2], tokenize=False, add_generation_prompt=True)
    assert ids[:first].tolist() == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # with think=empty the empty block opens the loss region, as Qwen3 writes it for non-thinking answers
    ids, mask = ChatRenderer(tokenizer).encode_one(SQL)
    assert tokenizer.decode(ids[mask == 1]) == EMPTY_THINK + "SELECT COUNT(*) FROM singer<|im_end|>"


@pytest.mark.parametrize("think", ["empty", "keep", "strip"])
@pytest.mark.parametrize("messages", [SQL, MULTI, EDGES], ids=["sql", "multi", "edges"])
@pytest.mark.parametrize("which", ["qwen3_style", "plain_chatml"])
def test_masked_tokens_decode_to_assistant_contents(tokenizer, plain_tokenizer, which, messages, think):
    tok = tokenizer if which == "qwen3_style" else plain_tokenizer
    renderer = ChatRenderer(tok, think=think)
    ids, mask = renderer.encode_one(messages)
    assert ids.dtype == np.int32 and mask.dtype == np.int8 and len(ids) == len(mask)
    assert tok.decode(ids[mask == 1]) == expected_loss_text(messages, think)
    # everything is there exactly once: the whole row decodes to the rendered text
    assert tok.decode(ids) == renderer.render(messages)
    # the template's own think handling never adds a second block
    text = renderer.render(messages)
    turns = sum(m["role"] == "assistant" for m in messages)
    assert text.count("<think>") == (0 if think == "strip" else turns)
    # every assistant turn ends on a loss-carrying <|im_end|>, followed by a non-loss token
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    loss_ends = [i for i in range(len(ids)) if ids[i] == end_id and mask[i] == 1]
    assert len(loss_ends) == turns
    assert all(mask[i + 1] == 0 for i in loss_ends if i + 1 < len(ids))


def test_loss_all_masks_every_token(tokenizer):
    ids, mask = ChatRenderer(tokenizer, loss="all").encode_one(MULTI)
    assert mask.all()
    ids_a, _ = ChatRenderer(tokenizer, loss="assistant").encode_one(MULTI)
    assert tokenizer.decode(ids) == tokenizer.decode(ids_a)


def test_batch_encode_equals_one_by_one(tokenizer):
    renderer = ChatRenderer(tokenizer)
    convs = [SQL, MULTI, EDGES, SQL]
    enc = renderer.encode(convs)
    offsets = enc.offsets
    for i, conv in enumerate(convs):
        ids, mask = ChatRenderer(tokenizer).encode_one(conv)
        assert enc.ids[offsets[i] : offsets[i + 1]].tolist() == ids.tolist()
        assert enc.mask[offsets[i] : offsets[i + 1]].tolist() == mask.tolist()


def test_template_without_chat_template_is_refused(tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = None
    with pytest.raises(PackError, match="no chat template"):
        ChatRenderer(tok)


def test_template_that_rewrites_order_is_refused(fixtures_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(fixtures_dir / "tokenizer"))
    tok.chat_template = "{%- for m in messages|reverse %}{{ m['content'] }}<|im_end|>{%- endfor %}"
    with pytest.raises(PackError, match="in order"):
        ChatRenderer(tok).encode_one(SQL)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFF), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    turns=st.lists(st.tuples(text, text), min_size=1, max_size=3),
    system=st.one_of(st.none(), text),
    think=st.sampled_from(["empty", "keep", "strip"]),
)
def test_masks_hold_for_arbitrary_text(tokenizer, turns, system, think):
    messages = [{"role": "system", "content": system}] if system is not None else []
    for user, answer in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    ids, mask = ChatRenderer(tokenizer, think=think).encode_one(messages)
    # the tokenizer normalizes to NFC, as Qwen's does
    expected = unicodedata.normalize("NFC", expected_loss_text(messages, think))
    assert tokenizer.decode(ids[mask == 1]) == expected
