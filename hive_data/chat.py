"""Chat rendering with exact token-level loss masks.

A conversation is rendered with the tokenizer's own chat template, but message contents never pass
through it: the template is rendered once per sequence of roles with placeholder contents (a
"skeleton"), which yields the framing text between messages (`<|im_start|>user\\n`, `<|im_end|>\\n`...).
Contents are then put between the framing pieces verbatim. This is what makes the mask exact and cheap:

- the loss region of an assistant turn is known as text (its content plus the end-of-turn token),
  never searched for afterwards;
- the prompt and each assistant turn are tokenized as separate pieces, cut where the model's
  generation starts, which is how the tokens are produced at inference (prompt tokens, then the
  model's own tokens); elsewhere pieces are cut only next to special tokens, where tokenizing apart
  and together give the same ids;
- repeated pieces (a system prompt holding the same schema for thousands of rows) are tokenized once.

Qwen3 thinking blocks are decided by the `think` policy, not by the template: whatever empty think
block a template adds on its own before an assistant turn is removed, and the policy writes its own:

- `empty` (default): every assistant turn is `<think>\\n\\n</think>\\n\\n` + answer, the form Qwen3 uses
  for non-thinking answers; reasoning in the data is dropped;
- `keep`: reasoning in the data (`reasoning_content`, or a leading `<think>...</think>` block in the
  content) is kept as `<think>\\n{reasoning}\\n</think>\\n\\n` + answer; turns without any get the empty block;
- `strip`: no think block at all, the answer alone.

No reasoning text is ever made up. The think block belongs to the assistant turn, so with the default
`loss="assistant"` it carries loss together with the answer and the closing `<|im_end|>`; the newline the
template writes after `<|im_end|>` does not. `loss="all"` puts every token under loss.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hive_core.errors import PackError

THINK_POLICIES = ("empty", "keep", "strip")
LOSS_POLICIES = ("assistant", "all")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
EMPTY_THINK = "<think>\n\n</think>\n\n"

# Placeholder contents for skeleton renders: private-use characters no template touches.
_SENTINEL = "\ue000{}\ue001"
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")
# An empty think block a template adds on its own right before an assistant content.
_INJECTED_THINK = re.compile(r"<think>\s*</think>\s*\Z")


def split_think(content: str, reasoning: str | None = None) -> tuple[str | None, str]:
    """(reasoning, answer) of an assistant message.

    Reasoning comes from `reasoning` when given, else from a `<think>...</think>` block at the start of
    the content; None when there is none. The answer loses the newlines that separate it from the block.
    """
    if reasoning is not None:
        if content.lstrip().startswith(THINK_OPEN) and THINK_CLOSE in content:
            content = content.split(THINK_CLOSE, 1)[1]
        return reasoning.strip("\n"), content.lstrip("\n")
    stripped = content.lstrip()
    if stripped.startswith(THINK_OPEN) and THINK_CLOSE in stripped:
        head, answer = stripped[len(THINK_OPEN) :].split(THINK_CLOSE, 1)
        return head.strip("\n"), answer.lstrip("\n")
    return None, content


def apply_think(content: str, policy: str, reasoning: str | None = None) -> str:
    """The assistant text that is trained on, under think policy `policy` (see the module doc)."""
    if policy not in THINK_POLICIES:
        raise ValueError(f"think policy must be one of {THINK_POLICIES}, got {policy!r}")
    found, answer = split_think(content, reasoning)
    if policy == "strip":
        return answer
    if policy == "keep" and found:
        return f"{THINK_OPEN}\n{found}\n{THINK_CLOSE}\n\n{answer}"
    return EMPTY_THINK + answer


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text and whether its tokens carry loss."""

    text: str
    loss: bool


@dataclass
class Encoded:
    """A batch of tokenized conversations, flat: row i is `ids[offsets[i]:offsets[i+1]]`."""

    ids: np.ndarray  # int32
    mask: np.ndarray  # int8, 1 where the token carries loss
    lengths: np.ndarray  # int64, tokens per conversation
    # rows not tokenized because their rendered text is longer than `max_chars` (length 0 above):
    # row index in the batch -> characters of its rendered text
    over: dict[int, int] = field(default_factory=dict)

    @property
    def offsets(self) -> np.ndarray:
        out = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out


# Normalizers that never delete text. Unicode normalization (composition) and lowercasing can shorten
# it: NFC composes at most 4 code points into one (the longest canonical decomposition), and no case
# mapping turns one character into less than one; each such step counts as a factor 4.
_SHRINKING_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD", "Lowercase"})
_GROWING_NORMALIZERS = frozenset({"Prepend"})
# Pre-tokenizers that only cut or re-map text, never delete any of it.
_KEEPING_PRE_TOKENIZERS = frozenset({"ByteLevel", "Metaspace", "Digits", "UnicodeScripts", "Punctuation"})


def _components(state: dict | None, key: str) -> list[dict]:
    if not state:
        return []
    if state.get("type") == "Sequence":
        return [c for part in state.get(key, []) for c in _components(part, key)]
    return [state]


def _state(component) -> dict | None:
    if component is None:
        return None
    return json.loads(component.__getstate__())


def chars_per_token_bound(tokenizer) -> int | None:
    """An upper bound on how many characters of input text one token can stand for, or None when the
    tokenizer can make input text disappear (so no such bound exists).

    A bound exists when every input character ends up in some token: a BPE or Unigram model that is
    byte-level (ByteLevel pre-tokenizer) or falls back to bytes, with a token for each of the 256
    bytes; pre-tokenizers that only cut text (Split, Punctuation without "Removed", ByteLevel,
    Metaspace, Digits...); normalizers that never delete text (Unicode normalization, lowercasing,
    Prepend, Replace by something at least as long); and no added token that swallows the whitespace
    next to it (lstrip/rstrip). A token then covers at most as many normalized characters as its
    vocabulary string has characters (a byte-level string has one character per byte, and a character
    is at least one byte; `▁` stands for one space; a byte-fallback piece like `<0xE2>` for less than
    one character), and normalization shortens text by at most a factor 4 per composing/lowercasing
    step (NFC composes at most 4 code points into one). So a text of more than `seq * bound`
    characters has more than `seq` tokens: dropping it is never wrong.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        model = backend.model
        kind = type(model).__name__
        normalizers = _components(_state(backend.normalizer), "normalizers")
        pre = _components(_state(backend.pre_tokenizer), "pretokenizers")
    except Exception:  # noqa: BLE001 - an unusual tokenizer: no shortcut, everything is tokenized
        return None
    byte_level = any(p.get("type") == "ByteLevel" for p in pre)
    if kind not in ("BPE", "Unigram") or not (byte_level or getattr(model, "byte_fallback", False)):
        return None
    shrink = 1
    for n in normalizers:
        kind_n = n.get("type")
        if kind_n in _SHRINKING_NORMALIZERS:
            shrink *= 4
        elif kind_n == "Replace":
            pattern = (n.get("pattern") or {}).get("String")
            if pattern is None or len(n.get("content") or "") < len(pattern):
                return None
        elif kind_n not in _GROWING_NORMALIZERS:
            return None
    for p in pre:
        if p.get("behavior") == "Removed" or (
            p.get("type") != "Split" and p.get("type") not in _KEEPING_PRE_TOKENIZERS
        ):
            return None
    vocab = tokenizer.get_vocab()
    # the model must have a token for every byte, or a byte without one could vanish
    if byte_level:
        from tokenizers.pre_tokenizers import ByteLevel

        if not all(ch in vocab for ch in ByteLevel.alphabet()):
            return None
    elif not all(f"<0x{b:02X}>" in vocab for b in range(256)):
        return None
    longest = max(map(len, vocab), default=1)
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "lstrip", False) or getattr(added, "rstrip", False):
            return None
        longest = max(longest, len(str(added.content)))
    return longest * shrink


class ChatRenderer:
    """Renders conversations with a tokenizer's chat template into token ids and loss masks.

    `tokenizer` is a Hugging Face fast tokenizer with a chat template. Conversations are lists of
    `{"role", "content"}` dicts (assistant messages may carry `reasoning_content`).
    """

    def __init__(
        self,
        tokenizer,
        *,
        loss: str = "assistant",
        think: str = "empty",
        cache_tokens: int = 4_000_000,
    ):
        if loss not in LOSS_POLICIES:
            raise ValueError(f"loss must be one of {LOSS_POLICIES}, got {loss!r}")
        if think not in THINK_POLICIES:
            raise ValueError(f"think must be one of {THINK_POLICIES}, got {think!r}")
        if not getattr(tokenizer, "chat_template", None):
            raise PackError(f"tokenizer {tokenizer.name_or_path!r} has no chat template")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise PackError(f"tokenizer {tokenizer.name_or_path!r} is not a fast (Rust) tokenizer")
        self.tokenizer = tokenizer
        self.loss = loss
        self.think = think
        self._backend = backend
        self._encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)
        specials = sorted({t for t in tokenizer.all_special_tokens if t}, key=len, reverse=True)
        alt = "|".join(re.escape(t) for t in specials) or "(?!)"
        self._starts_special = re.compile(f"(?:{alt})").match
        self._ends_special = re.compile(f"(?:{alt})\\Z").search
        self._specials = specials
        self._skeletons: dict[tuple[str, ...], tuple[list[str], dict[int, str]]] = {}
        self._cache: dict[str, np.ndarray] = {}
        self._cache_tokens = 0
        self._cache_limit = cache_tokens
        self.chars_per_token = chars_per_token_bound(tokenizer)

    # ------------------------------------------------------------------ rendering

    def _skeleton(self, roles: tuple[str, ...]) -> tuple[list[str], dict[int, str]]:
        """Framing text around each message for this sequence of roles (n+1 pieces for n messages),
        and the end-of-turn special token of each assistant message by index."""
        known = self._skeletons.get(roles)
        if known is not None:
            return known
        placeholder = [{"role": r, "content": _SENTINEL.format(i)} for i, r in enumerate(roles)]
        try:
            text = self.tokenizer.apply_chat_template(placeholder, tokenize=False)
        except Exception as err:  # jinja raises its own errors for shapes a template refuses
            raise PackError(f"chat template cannot render roles {list(roles)}: {err}") from None
        pieces = _SENTINEL_RE.split(text)
        order = [int(x) for x in pieces[1::2]]
        if order != list(range(len(roles))):
            raise PackError(
                f"chat template does not render every message once and in order (roles {list(roles)}); "
                "hive cannot build an exact loss mask for it"
            )
        glue = pieces[0::2]
        ends: dict[int, str] = {}
        for i, role in enumerate(roles):
            if role != "assistant":
                continue
            glue[i] = _INJECTED_THINK.sub("", glue[i])
            after = glue[i + 1]
            end = next((t for t in self._specials if after.startswith(t)), None)
            if end is None:
                raise PackError(
                    "chat template does not close an assistant turn with a special token "
                    f"(found {after[:20]!r}); hive cannot mark where the turn ends"
                )
            ends[i] = end
        self._skeletons[roles] = (glue, ends)
        return glue, ends

    def segments(self, messages: Sequence[Mapping]) -> list[Segment]:
        """The rendered conversation as text segments, each with its loss flag (adjacent segments merged
        only where tokenizing them together is exact)."""
        roles = tuple(str(m["role"]) for m in messages)
        glue, ends = self._skeleton(roles)
        all_loss = self.loss == "all"
        pieces: list[tuple[str, bool]] = []
        pending = glue[0]
        for i, m in enumerate(messages):
            content = m.get("content")
            content = content if isinstance(content, str) else ""
            pieces.append((pending, all_loss))
            if i in ends:
                end = ends[i]
                pieces.append((apply_think(content, self.think, m.get("reasoning_content")) + end, True))
                pending = glue[i + 1][len(end) :]
            else:
                pieces.append((content, all_loss))
                pending = glue[i + 1]
        pieces.append((pending, all_loss))
        return self._merge(pieces)

    def _merge(self, pieces: list[tuple[str, bool]]) -> list[Segment]:
        out: list[list] = []
        for text, loss in pieces:
            if not text:
                continue
            if out:
                prev = out[-1]
                safe_cut = prev[1] != loss or self._ends_special(prev[0]) or self._starts_special(text)
                if not safe_cut:
                    prev[0] += text
                    continue
            out.append([text, loss])
        return [Segment(t, bool(flag)) for t, flag in out]

    def render(self, messages: Sequence[Mapping]) -> str:
        """The full rendered text of a conversation."""
        return "".join(s.text for s in self.segments(messages))

    # ------------------------------------------------------------------ tokenizing

    def max_chars(self, seq: int) -> int | None:
        """Rendered text longer than this many characters has more than `seq` tokens for certain
        (`chars_per_token_bound`); None when the tokenizer gives no such bound."""
        return None if self.chars_per_token is None else seq * self.chars_per_token

    def encode(self, conversations: Sequence[Sequence[Mapping]], max_chars: int | None = None) -> Encoded:
        """Token ids and loss masks of a batch of conversations, batch-encoded, repeated pieces once.

        A conversation whose rendered text is longer than `max_chars` characters is not tokenized:
        it gets length 0 and its character count in `Encoded.over` (so a hostile 50 MB row costs no
        tokenizer memory; `max_chars(seq)` says when such a row cannot fit `seq` tokens)."""
        units: list[str] = []
        flags: list[bool] = []
        per_row: list[int] = []
        over: dict[int, int] = {}
        for row, messages in enumerate(conversations):
            segs = self.segments(messages)
            if max_chars is not None:
                chars = sum(len(s.text) for s in segs)
                if chars > max_chars:
                    over[row] = chars
                    per_row.append(0)
                    continue
            per_row.append(len(segs))
            for s in segs:
                units.append(s.text)
                flags.append(s.loss)
        cache = self._cache
        missing = list(dict.fromkeys(t for t in units if t not in cache))
        if missing:
            encodings = self._encode_batch(missing, add_special_tokens=False)
            fresh = {t: np.asarray(e.ids, dtype=np.int32) for t, e in zip(missing, encodings)}
            arrays = [cache[t] if t in cache else fresh[t] for t in units]
            self._remember(fresh)
        else:
            arrays = [cache[t] for t in units]
        unit_len = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        ids = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
        mask = np.repeat(np.asarray(flags, dtype=np.int8), unit_len)
        bounds = np.zeros(len(per_row) + 1, dtype=np.int64)
        np.cumsum(per_row, out=bounds[1:])
        cum = np.zeros(len(unit_len) + 1, dtype=np.int64)
        np.cumsum(unit_len, out=cum[1:])
        lengths = cum[bounds[1:]] - cum[bounds[:-1]]
        return Encoded(ids=ids, mask=mask, lengths=lengths, over=over)

    def _remember(self, fresh: dict[str, np.ndarray]) -> None:
        # A bounded memo: when full it starts over (results never depend on what is cached).
        for text, arr in fresh.items():
            if self._cache_tokens + len(arr) > self._cache_limit:
                self._cache.clear()
                self._cache_tokens = 0
            self._cache[text] = arr
            self._cache_tokens += len(arr)

    def encode_one(self, messages: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.encode([messages])
        return enc.ids, enc.mask


def chat_template_sha256(tokenizer) -> str:
    import hashlib

    template = tokenizer.chat_template or ""
    if isinstance(template, dict):  # several named templates
        template = "\n".join(f"{k}\n{v}" for k, v in sorted(template.items()))
    return hashlib.sha256(template.encode("utf-8")).hexdigest()
