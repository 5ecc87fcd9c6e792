"""A run's own validation split as evaluation data: what `hive-eval RUN_DIR` scores without DATA.

The run's shards hold the validation documents as tokens with a loss mask (`hive-data pack`). For
each document: the prompt is every token before its first loss token (so it ends with the opening
of the assistant's turn, exactly as trained), the gold answer is its loss tokens decoded, cut at the
end of the assistant turn and without a think block. The system and user turns are read back from
the prompt's chat framing (ChatML, `<|im_start|>role ... <|im_end|>`); a system prompt written by
`hive_data.prompt.system_prompt` gives back the row's dialect and canonical schema, so SQL rows are
executed as usual. Any other row is scored as text (prompt/completion).

`val_rows(run_dir)` reads them; `write_val_data(rows, path)` writes them as a normalized dataset
(`prompt_completion` rows, with `schema` and `dialect` on SQL rows) that `evaluate` reads like any
DATA.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hive_core.errors import ConfigError

TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.DOTALL)


@dataclass
class ValRow:
    prompt_ids: list[int]
    question: str
    gold: str
    schema: str | None = None
    dialect: str | None = None

    def record(self) -> dict:
        """The row as normalized data, one shape for every row (a dataset is read in one format):
        `prompt` (the question), `completion` (gold), and for SQL rows `schema` and `dialect`, so
        `--kind auto` scores those as SQL and the others as JSON or text."""
        record = {"prompt": self.question, "completion": self.gold}
        if self.dialect is not None:
            record |= {"schema": self.schema or "", "dialect": self.dialect}
        return record


def run_shards(run_dir: str | os.PathLike):
    """The run's shard directory, opened and checked against the manifest hash its config.yaml
    recorded. ConfigError when they are gone or changed (then DATA must be given)."""
    import yaml

    from hive_data.shards import open_shards

    config = Path(run_dir) / "config.yaml"
    try:
        recorded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the run's config ({err})", file=str(config)) from None
    shards = recorded.get("shards") if isinstance(recorded, dict) else None
    path = Path(str((shards or {}).get("path", "")))
    if not shards or not (path / "manifest.json").is_file():
        raise ConfigError(f"the run's shards ({path}) are gone: pass DATA to evaluate on", file=str(config))
    opened = open_shards(path)
    if opened.manifest_sha256 != shards.get("manifest_sha256"):
        raise ConfigError(
            f"the run's shards ({path}) changed since it trained: pass DATA to evaluate on", file=str(config)
        )
    return opened


def val_rows(run_dir: str | os.PathLike, tokenizer, limit: int | None = None) -> list[ValRow]:
    """The run's validation documents, in shard order (the first `limit`). ConfigError when the run
    has no validation split."""
    from hive_eval.generate import END_OF_TURN, strip_think

    table = run_shards(run_dir).split("val")
    if table is None or table.num_rows == 0:
        raise ConfigError(
            "the run's shards have no validation split (packed with --val 0): pass DATA to evaluate on",
            file=str(run_dir),
        )
    rows: list[ValRow] = []
    for batch in table.to_batches():
        ids_col, lengths_col, mask_col = (
            batch.column(k) for k in ("input_ids", "seq_lengths", "completion_mask")
        )
        for r in range(batch.num_rows):
            ids = np.asarray(ids_col[r].values)
            mask = np.asarray(mask_col[r].values)
            start = 0
            for length in lengths_col[r].values.to_numpy():
                doc, loss = ids[start : start + length], mask[start : start + length]
                start += int(length)
                hits = np.flatnonzero(loss)
                if len(hits) == 0:  # nothing to answer (a document without loss tokens)
                    continue
                prompt = doc[: hits[0]].tolist()
                gold = tokenizer.decode(doc[loss.astype(bool)].tolist(), skip_special_tokens=False)
                gold = strip_think(gold.split(END_OF_TURN, 1)[0])
                rows.append(_row(prompt, tokenizer.decode(prompt, skip_special_tokens=False), gold))
                if limit is not None and len(rows) >= limit:
                    return rows
    return rows


def _row(prompt_ids: list[int], prompt: str, gold: str) -> ValRow:
    from hive_data.prompt import parse_system_prompt

    turns = TURN.findall(prompt)
    users = [content for role, content in turns if role == "user"]
    question = users[-1] if users else prompt
    system = next((content for role, content in turns if role == "system"), None)
    parsed = parse_system_prompt(system) if system is not None else None
    if parsed is None:
        return ValRow(prompt_ids, question, gold)
    dialect, schema = parsed
    return ValRow(prompt_ids, question, gold, schema, dialect)


def write_val_data(rows: list[ValRow], path: str | os.PathLike) -> Path:
    """Write `rows` as a normalized jsonl dataset (see the module docstring); returns the path."""
    from hive_core.atomic import atomic_file

    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row.record(), ensure_ascii=False) + "\n")
    return Path(path)
