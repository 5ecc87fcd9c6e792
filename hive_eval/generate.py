"""Generation for evaluation: an expert's completions for many prompts, fast and reproducible.

- `load_expert(run_dir)`: the run's base model with its adapter folded into plain weights
  (`hive_train.export.load_folded`): a plain `transformers` model, bf16 on CUDA and float32 on
  CPU by default, with no adapter work left in decoding;
- `render_prompts(rows, tokenizer, settings)`: the prompt of each row, exactly as `hive-data pack`
  rendered everything before the assistant's answer (same chat template, system prompt and think
  policy; the generation prompt included);
- `generate(model, tokenizer, prompts)`: batched completions (greedy unless `temperature > 0`), each
  cut at the end of the assistant turn, in input order;
- `strip_think(completion)`: the answer of a completion, without its think block.

Prompts are sorted by length (longest first) into batches and left-padded, so a batch holds
prompts of similar length. Greedy decoding on CUDA runs hive's own loop (`hive_eval.decode`): one
static KV cache for every batch and the decoding step replayed as a CUDA graph; sampling, and the
CPU by default, use transformers' `generate`. Outputs do not depend on batching or padding beyond
floating-point noise.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hive_core.errors import ConfigError, HiveError, RecordError

DEFAULT_SETTINGS = {"think": "empty", "loss": "assistant", "chat_template_sha256": None}
END_OF_TURN = "<|im_end|>"


@dataclass
class Expert:
    """What `load_expert` gives: the folded model, the run's tokenizer, the prompt settings the run's
    shards were packed with (`render_prompts`), the run's decoding settings
    (generation_config.json) and notes for the user (settings that had to be assumed)."""

    model: object
    tokenizer: object
    prompt_settings: dict
    decoding: dict
    run_dir: Path
    notes: list[str] = field(default_factory=list)


def load_expert(
    run_dir: str | os.PathLike, *, device: str = "auto", dtype: torch.dtype | None = None
) -> Expert:
    """Load a hive-train run for generation: base model as recorded in its config.yaml (hub id or
    local directory, through the trainer's loading code), adapter folded in (`fold_dora`), cast to
    `dtype` (default bf16 on CUDA, float32 on CPU), eval mode, SDPA attention with a KV cache.
    Raises `HiveError` subclasses (named file) for a run that cannot be loaded."""
    from transformers import GenerationConfig

    from hive_train.export import load_folded

    folded = load_folded(run_dir, device=device, dtype=dtype)
    run_dir = Path(run_dir)
    settings, notes = prompt_settings(run_dir)
    decoding = {}
    path = run_dir / "generation_config.json"
    if path.is_file():
        try:
            decoding = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read the run's decoding settings ({err})", file=str(path)) from None
    tok = folded.tokenizer
    # a neutral generation config: the base model's own sampling defaults must not leak in
    folded.model.generation_config = GenerationConfig(
        eos_token_id=sorted(stop_ids(tok, folded.model)), pad_token_id=pad_id(tok)
    )
    return Expert(
        model=folded.model,
        tokenizer=tok,
        prompt_settings=settings,
        decoding=decoding,
        run_dir=run_dir,
        notes=folded.notes + notes,
    )


# ------------------------------------------------------------------------------------ prompts


def prompt_settings(source: str | os.PathLike | Mapping) -> tuple[dict, list[str]]:
    """(settings, notes): the `think`, `loss`, `chat_template_sha256`, `record_format` and `mapping`
    a run's shards were packed with. `source` is a manifest (dict), a shard directory or its
    manifest.json, or a run directory (whose config.yaml names its shards; when they are gone or
    changed, pack's defaults are assumed and a note says so)."""
    if isinstance(source, Mapping):
        return _settings(source), []
    path = Path(source)
    if path.is_file() and path.name == "manifest.json":
        path = path.parent
    if (path / "manifest.json").is_file():
        from hive_data.shards import read_manifest

        return _settings(read_manifest(path)), []
    if (path / "config.yaml").is_file():
        import hashlib

        import yaml

        try:
            recorded = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            recorded = {}
        shards = recorded.get("shards") or {} if isinstance(recorded, dict) else {}
        for key in ("think", "loss", "chat_template_sha256"):  # a run that records them itself
            if key in shards:
                return _settings(shards), []
        manifest = Path(str(shards.get("path", ""))) / "manifest.json"
        if shards.get("path") and manifest.is_file():
            if hashlib.sha256(manifest.read_bytes()).hexdigest() == shards.get("manifest_sha256"):
                from hive_data.shards import read_manifest

                return _settings(read_manifest(manifest.parent)), []
        return dict(DEFAULT_SETTINGS), [
            f"the run's shards ({shards.get('path', '?')}) are gone or changed: prompts assume pack's "
            f"defaults (think {DEFAULT_SETTINGS['think']!r}, the run's tokenizer's chat template)"
        ]
    raise ConfigError("neither a shard directory nor a run directory", file=str(source))


def _settings(manifest: Mapping) -> dict:
    out = dict(DEFAULT_SETTINGS)
    for key in ("think", "loss", "chat_template_sha256", "record_format", "mapping"):
        if manifest.get(key) is not None:
            out[key] = manifest[key]
    return out


def row_messages(row, settings: Mapping | None = None) -> list[dict]:
    """The chat messages of one dataset row (any format `hive-data pack` reads, through
    `hive_data.records.row_to_messages`, with the pack's record format and mapping), or the row itself
    when it already is a list of messages."""
    from hive_data.records import detect_format, row_to_messages

    settings = settings or {}
    if isinstance(row, Sequence) and not isinstance(row, (str, bytes)):
        return [dict(m) for m in row]
    if not isinstance(row, Mapping):
        raise RecordError(f"a row is {type(row).__name__}, expected an object or a list of messages")
    mapping = settings.get("mapping") or None
    fmt = settings.get("record_format") or detect_format(row.keys(), mapping)
    return row_to_messages(row, fmt, mapping)


def split_gold(messages: Sequence[Mapping]) -> tuple[list[dict], str | None]:
    """(the conversation up to the last assistant turn, that turn's content), or (messages, None)
    when the conversation does not end with an assistant turn."""
    messages = [dict(m) for m in messages]
    if messages and messages[-1].get("role") == "assistant":
        content = messages[-1].get("content")
        return messages[:-1], content if isinstance(content, str) else ""
    return messages, None


def render_prompts(rows: Sequence, tokenizer, manifest_or_settings: Mapping | str | os.PathLike) -> list[str]:
    """The prompt text of each row: everything `hive-data pack` rendered before the row's (last)
    assistant answer, the generation prompt (`<|im_start|>assistant\\n`) included.

    Rows are dataset rows (text-to-SQL rows become `hive_data.prompt.sql_messages`) or message lists;
    a final assistant turn (the gold answer) is dropped. Rendering goes through pack's own
    `ChatRenderer` with the pack's think policy, so earlier assistant turns and the framing are
    byte-identical to the shards, and tokenizing the prompt gives the shard's tokens before the
    answer. `manifest_or_settings`: see `prompt_settings`. Raises `ConfigError` when the tokenizer's
    chat template differs from the one the shards were packed with, `RecordError` naming the
    (1-based) row that cannot be rendered."""
    from hive_data.chat import ChatRenderer, chat_template_sha256

    settings = (
        _settings(manifest_or_settings)
        if isinstance(manifest_or_settings, Mapping)
        else prompt_settings(manifest_or_settings)[0]
    )
    expected = settings.get("chat_template_sha256")
    if expected and chat_template_sha256(tokenizer) != expected:
        raise ConfigError(
            "the tokenizer's chat template differs from the one the shards were packed with "
            "(chat_template_sha256); use the run's tokenizer",
            file=str(getattr(tokenizer, "name_or_path", "tokenizer")),
        )
    # the text does not depend on the loss policy; "assistant" marks where the answer starts
    renderer = ChatRenderer(tokenizer, loss="assistant", think=settings.get("think") or "empty")
    prompts = []
    for index, row in enumerate(rows):
        try:
            messages, _ = split_gold(row_messages(row, settings))
            if not messages:
                raise RecordError("no messages before the answer")
            segments = renderer.segments([*messages, {"role": "assistant", "content": ""}])
        except HiveError as err:
            raise err.with_location(row=index + 1) from None
        last = max(i for i, s in enumerate(segments) if s.loss)
        prompts.append("".join(s.text for s in segments[:last]))
    return prompts


def strip_think(completion: str) -> str:
    """The answer of a completion: its leading think block (`<think>...</think>`) removed, and the
    whitespace around it."""
    from hive_data.chat import split_think

    return split_think(completion)[1].strip()


# ------------------------------------------------------------------------------------ generation


def stop_ids(tokenizer, model=None) -> set[int]:
    """Token ids that end an assistant turn: the tokenizer's eos, `<|im_end|>`, and the model's
    configured eos ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(end, int) and end != tokenizer.unk_token_id:
        ids.add(end)
    if model is not None:
        eos = getattr(model.generation_config, "eos_token_id", None)
        for value in eos if isinstance(eos, (list, tuple)) else [eos]:
            if value is not None:
                ids.add(int(value))
    return ids


def pad_id(tokenizer) -> int:
    return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)


@dataclass
class GenerationStats:
    rows: int = 0
    prompt_tokens: int = 0
    new_tokens: int = 0  # generated tokens, each row's end-of-turn token included
    seconds: float = 0.0
    batches: int = 0
    decoder: str = ""  # the decoder that produced the answers (see `DECODERS`)
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        return {
            "rows": self.rows,
            "prompt_tokens": self.prompt_tokens,
            "new_tokens": self.new_tokens,
            "seconds": round(self.seconds, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "rows_per_s": round(self.rows_per_s, 3),
            "batches": self.batches,
            "decoder": self.decoder,
            "notes": list(self.notes),
        }


# graphs: hive's greedy loop over a static cache, each step a CUDA graph replay (CUDA, greedy only);
# static: the same loop run eagerly; hf: transformers' `generate` with its dynamic cache (any decoding).
DECODERS = ("graphs", "static", "hf")


def pick_decoder(decoder: str | None, device: torch.device, temperature: float) -> str:
    """The decoder `generate` uses: the one asked for, else graphs for greedy decoding on CUDA and
    transformers' own loop otherwise. Sampling always takes transformers' loop."""
    if decoder is not None and decoder not in DECODERS:
        raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
    if temperature > 0:
        return "hf"
    if decoder is None:
        return "graphs" if device.type == "cuda" else "hf"
    return "static" if decoder == "graphs" and device.type != "cuda" else decoder


def generate(
    model,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
    decoder: str | None = None,
    stats: GenerationStats | None = None,
) -> list[str]:
    """The completion of every prompt (a text, or a list of token ids), in input order: the
    generated text up to (not including) the end of the assistant turn (`stop_ids`), special tokens
    such as `<think>` kept.

    Greedy when `temperature` is 0, else sampling with `temperature`, `top_p` (and `top_k` when
    given), seeded by `seed`. Prompts are tokenized without added special tokens, sorted by length
    (longest first), batched `batch_size` at a time (default 64 on CUDA, 8 elsewhere) and
    left-padded. `decoder` (`pick_decoder`): greedy decoding on CUDA replays CUDA graphs over one
    static cache (`hive_eval.decode`); if capturing fails the run goes on with transformers'
    `generate`, with a note in `stats.notes`. A progress bar on stderr shows rows/s and tokens/s.
    `stats`, when given, is filled in."""
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ConfigError(f"temperature must be >= 0 and top_p in (0, 1] (got {temperature}, {top_p})")
    from tqdm import tqdm

    stats = stats if stats is not None else GenerationStats()
    device = model.device
    stats.decoder = pick_decoder(decoder, device, temperature)
    if not prompts:
        return []
    batch_size = batch_size or (64 if device.type == "cuda" else 8)
    stops = sorted(stop_ids(tokenizer, model))
    pad = pad_id(tokenizer)
    if all(isinstance(p, str) for p in prompts):
        encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    else:  # token ids as the shards hold them (`hive_eval.val_split`)
        encoded = [list(map(int, p)) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    results: list[str | None] = [None] * len(encoded)
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    own = None
    if stats.decoder != "hf":  # one decoder (cache, buffers, graph) for every batch
        from hive_eval.decode import GreedyDecoder

        size = min(batch_size, len(encoded))
        longest = max(map(len, encoded)) + max_new_tokens
        own = GreedyDecoder(model, size, longest, graphs=stats.decoder == "graphs")
    options = _generation_options(max_new_tokens, temperature, top_p, top_k, stops, pad)
    started = time.perf_counter()
    bar = tqdm(total=len(encoded), unit="row", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            rows = [encoded[i] for i in chosen]
            # a short last batch is filled up with copies: the decoder's cache and graph keep the
            # batch size they were made with
            fill = own.batch - len(rows) if own is not None else 0
            input_ids, attention = _left_pad(rows + [rows[-1]] * fill, pad, device)
            new, own = _run(own, model, input_ids, attention, options, stats)
            for index, tokens in zip(chosen, new[: len(rows)].tolist()):
                cut = next((k for k, t in enumerate(tokens) if t in stops), None)
                kept = tokens if cut is None else tokens[:cut]
                stats.new_tokens += len(kept) + (cut is not None)
                results[index] = tokenizer.decode(kept, skip_special_tokens=False)
            stats.rows += len(rows)
            stats.prompt_tokens += sum(map(len, rows))
            stats.batches += 1
            bar.update(len(rows))
            elapsed = time.perf_counter() - started
            bar.set_postfix_str(f"{stats.new_tokens / elapsed:.0f} tok/s", refresh=False)
    finally:
        bar.close()
    stats.seconds = time.perf_counter() - started
    return results  # type: ignore[return-value]


def _generation_options(max_new_tokens, temperature, top_p, top_k, stops, pad) -> dict:
    sampling = temperature > 0
    options = {
        "max_new_tokens": max_new_tokens,
        "do_sample": sampling,
        "eos_token_id": stops,
        "pad_token_id": pad,
    }
    if sampling:
        options.update(temperature=float(temperature), top_p=float(top_p), top_k=top_k or 0)
    else:  # unset, or transformers warns that they are ignored
        options.update(temperature=None, top_p=None, top_k=None)
    return options


def _left_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[r, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _run(own, model, input_ids, attention, options: dict, stats: GenerationStats):
    """(new tokens of one batch, the decoder for the next): hive's decoder when there is one, else
    transformers' `generate`. The first failure of hive's decoder switches this and later batches
    to transformers' loop, with a note."""
    if own is not None:
        try:
            return own.decode(input_ids, attention, options["max_new_tokens"], options["eos_token_id"],
                              options["pad_token_id"]), own  # fmt: skip
        except torch.OutOfMemoryError:
            raise
        except Exception as err:  # noqa: BLE001 - a model or transformers the graph path cannot capture
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            stats.notes.append(f"{stats.decoder} decoder failed, generating with transformers ({first})")
            stats.decoder, own = "hf", None
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids, attention_mask=attention, **options)
    return out[:, input_ids.shape[1] :], None


def predict(
    run_dir: str | os.PathLike,
    data: str | os.PathLike | None,
    out_file: str | os.PathLike,
    *,
    limit: int | None = None,
    device: str = "auto",
    max_new_tokens: int = 256,
    batch_size: int | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    val_data: str | os.PathLike | None = None,
) -> GenerationStats:
    """Generate the run's answer to every row of `data` (a normalized dataset; the first `limit`
    rows) and write them to `out_file` as JSON Lines (`row`, `id` when the data has one,
    `prediction`: the completion without its think block), the format `hive-eval --predictions`
    reads. Greedy unless `temperature` > 0. Returns the generation's counters.

    `data` None: the run's own validation split (`hive_eval.val_split`), whose prompts are the
    shards' own tokens; its rows are written to `val_data` as a normalized dataset to score against."""
    from hive_core.atomic import atomic_file

    if data is not None:  # a bad row fails before the model loads
        records, keys = _read_rows(data, limit)
    expert = load_expert(run_dir, device=device)
    for note in expert.notes:
        print(f"note: {note}", file=sys.stderr)
    if data is None:
        from hive_eval.val_split import val_rows, write_val_data

        if val_data is None:
            raise ConfigError("predicting on the validation split needs val_data, where its rows go")
        rows = val_rows(run_dir, expert.tokenizer, limit)
        write_val_data(rows, val_data)
        keys = [{"row": n} for n in range(1, len(rows) + 1)]
        prompts = [r.prompt_ids for r in rows]
    else:
        try:
            prompts = render_prompts(records, expert.tokenizer, expert.prompt_settings)
        except HiveError as err:
            raise err.with_location(file=str(data)) from None
    stats = GenerationStats()
    completions = generate(
        expert.model, expert.tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
        top_p=top_p, seed=seed, batch_size=batch_size, progress=progress, stats=stats,
    )  # fmt: skip
    with atomic_file(out_file) as fh:
        for key, text in zip(keys, completions):
            fh.write(
                json.dumps({**key, "prediction": strip_think(text)}, ensure_ascii=False, default=str) + "\n"
            )
    return stats


def _read_rows(data: str | os.PathLike, limit: int | None) -> tuple[list, list[dict]]:
    """(rows, their keys for completions.jsonl) of a dataset; an unreadable row stops with its place."""
    from hive_data.records import iter_records

    rows, keys = [], []
    for n, rec in enumerate(iter_records(data), 1):
        if limit is not None and n > limit:
            break
        if rec.error is not None:
            raise rec.error.with_location(file=rec.source, row=rec.row, line=rec.line)
        rows.append(rec.data)
        keys.append({"row": n, **({"id": rec.data["id"]} if rec.data.get("id") is not None else {})})
    return rows, keys
