"""Evaluation during training: the adapter being trained answers a fixed subset of a dataset, and
the answers are scored as `hive-eval` scores them (execution accuracy for SQL).

`hive_train.loop.train` calls the hook on its evaluation cadence (`--eval-every`, the steps that
also get a validation loss); `hive_train` imports this module only when `eval_data` is set, so the
trainer keeps no load-time dependency on the evaluator. At each evaluation:

- the live peft model (no copy, no folding) decodes greedily, in eval mode and without gradients,
  with padding-aware attention (`live_generation`), and is handed back exactly as it was;
- under torchrun every rank answers its share of the rows (rank r takes rows r, r + world, ...)
  and rank 0 alone writes and scores them;
- rank 0 writes `RUN/eval/step-NNNNNNNN/completions.jsonl` and `hive_eval.evaluate.evaluate` writes
  `predictions.jsonl` and `summary.json` beside it, against `RUN/eval/rows.jsonl` (the subset,
  written once), so any evaluation can be re-scored with `hive-eval` later.

One embedded PostgreSQL serves every evaluation of the run: started at the first evaluation that
has SQL to run, stopped by `close()` (`train` closes the hooks it makes).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch

from hive_core.atomic import atomic_file
from hive_core.errors import ConfigError, HiveError
from hive_eval.evaluate import EvalConfig, evaluate, iter_rows, kind_of
from hive_eval.generate import generate, prompt_settings, render_prompts, stop_ids, strip_think
from hive_train import distributed

EVAL_DIR = "eval"  # in the run directory (hive-train's RUN_LAYOUT lists it)
ROWS_FILE = "rows.jsonl"  # the fixed subset every evaluation of the run answers and is scored on
METRICS = ("ex", "valid", "parses", "exact", "exact_text", "similarity")  # summary["overall"] keys kept


def step_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """Where the evaluation after optimizer step `step` is written."""
    return Path(run_dir) / EVAL_DIR / f"step-{step:08d}"


def read_subset(data: str | os.PathLike, rows: int) -> list[dict]:
    """The first `rows` rows of dataset `data` (any format `hive_data.records` reads). A missing
    file is a `ConfigError` naming it; an unreadable row a `RecordError` with its location."""
    from hive_data.records import iter_records

    if not Path(data).is_file():
        raise ConfigError("evaluation data (--eval-data) does not exist or is not a file", file=str(data))
    subset = []
    for rec in iter_records(data):
        if len(subset) == rows:
            break
        if rec.error is not None:
            raise rec.error.with_location(file=rec.source, row=rec.row, line=rec.line)
        subset.append(rec.data)
    return subset


@contextlib.contextmanager
def live_generation(model, tokenizer):
    """The training model, ready to decode left-padded batches; on exit exactly as it was.

    Inside: eval mode (no dropout), gradients off, the RNG streams forked (decoding seeds torch;
    training draws from the same streams), and transformers' padding-aware SDPA attention in
    place of hive's document attention: `hive_docs` ignores a 2D padding mask, so a left-padded
    row would attend to its padding. The base model's generation config is a neutral one for
    the duration (its own sampling defaults must not leak into greedy scoring). On exit the fast
    adapter path's per-step tensors are marked stale: they were recomputed inside inference mode,
    and the next training step recomputes them with autograd available.
    """
    from transformers import GenerationConfig

    from hive_eval.generate import pad_id

    base = model.get_base_model()
    config = base.config
    saved = (config._attn_implementation, base.generation_config, model.training)
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        eos = sorted(stop_ids(tokenizer, model))
        try:
            config._attn_implementation = "sdpa"
            base.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad_id(tokenizer))
            model.eval()
            yield model
        finally:
            config._attn_implementation, base.generation_config = saved[0], saved[1]
            model.train(saved[2])
            fast = getattr(model, "hive_fast", None)
            if fast is not None:
                fast.mark_stale()


class TrainingEval:
    """The hook `train` calls: `hook(model, tokenizer, step)` -> metrics on rank 0, None elsewhere.

    Made once per run (`make_eval_hook`): the subset is read at once (bad data stops the run before
    anything is written), prompts are rendered at the first call with the run's tokenizer and the
    prompt settings the shards were packed with (`shards_dir`). Every rank must call it at the same
    steps (it gathers the ranks' answers). Returned metrics: those of `METRICS` the scorer gives for
    this data (`ex`, `valid`, `parses`, `exact` for SQL; fractions of the rows), `rows`, and
    `seconds` (generation and scoring).
    """

    def __init__(
        self,
        data: str | os.PathLike,
        shards_dir: str | os.PathLike,
        run_dir: str | os.PathLike,
        *,
        rows: int = 200,
        max_new_tokens: int = 256,
        batch_size: int | None = None,
    ):
        self.data, self.run_dir = str(data), Path(run_dir)
        self.rows = read_subset(data, rows)
        if not self.rows:
            raise ConfigError("evaluation data (--eval-data) holds no rows", file=self.data)
        self.shards_dir = shards_dir
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._prompts: list[str] | None = None
        self._subset: Path | None = None  # RUN/eval/rows.jsonl once rank 0 wrote it
        self._needs_pg: bool | None = None
        self._pg_uri: str | None = None
        self._stack = contextlib.ExitStack()

    def __call__(self, model, tokenizer, step: int) -> dict | None:
        started = time.perf_counter()
        answers = self._answer(model, tokenizer)
        if answers is None:
            return None
        out = step_dir(self.run_dir, step)
        with atomic_file(out / "completions.jsonl") as fh:
            for n, (row, text) in enumerate(zip(self.rows, answers), 1):
                key = {"row": n, **({"id": row["id"]} if row.get("id") is not None else {})}
                fh.write(json.dumps({**key, "prediction": strip_think(text)}, ensure_ascii=False) + "\n")
        summary = evaluate(
            self._subset_file(), out / "completions.jsonl", out, EvalConfig(pg_uri=self._postgres()),
            progress=False, run_dir=str(self.run_dir),
        )  # fmt: skip
        overall = summary["overall"]
        metrics = {key: overall[key] for key in METRICS if key in overall}
        return {**metrics, "rows": overall["rows"], "seconds": round(time.perf_counter() - started, 3)}

    def close(self) -> None:
        """Stop the embedded PostgreSQL, when one was started."""
        self._stack.close()

    def _answer(self, model, tokenizer) -> list[str] | None:
        """Every row's completion, in row order, on rank 0 (None elsewhere): each rank decodes its
        share, rank 0 gathers them."""
        if self._prompts is None:
            settings, _ = prompt_settings(self.shards_dir)  # the run's: its shards were checked by now
            try:
                self._prompts = render_prompts(self.rows, tokenizer, settings)
            except HiveError as err:
                raise err.with_location(file=self.data) from None
        rank, world = distributed.rank(), distributed.world()
        mine = list(range(rank, len(self._prompts), world))
        with live_generation(model, tokenizer):
            # transformers' own loop: hive's CUDA-graph decoder expects a plain (folded) model, not a
            # peft model whose adapters are being trained
            texts = generate(
                model, tokenizer, [self._prompts[i] for i in mine], max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size, progress=False, decoder="hf",
            )  # fmt: skip
        shares = distributed.all_gather(list(zip(mine, texts)))
        if rank != 0:
            return None
        answers: list[str] = [""] * len(self._prompts)
        for share in shares:
            for index, text in share:
                answers[index] = text
        return answers

    def _subset_file(self) -> Path:
        """RUN/eval/rows.jsonl: the subset as read at the start (written once, by rank 0)."""
        if self._subset is None:
            path = self.run_dir / EVAL_DIR / ROWS_FILE
            with atomic_file(path) as fh:
                for row in self.rows:
                    fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            self._subset = path
        return self._subset

    def _postgres(self) -> str | None:
        """The URI of the run's embedded PostgreSQL, started at first need; None when no row of the
        subset is scored by running SQL."""
        if self._needs_pg is None:
            self._needs_pg = any(kind_of(row, "auto") == "sql" for row in iter_rows(self._subset_file()))
        if self._needs_pg and self._pg_uri is None:
            from hive_data.postgres import embedded_postgres

            self._pg_uri = self._stack.enter_context(embedded_postgres())
        return self._pg_uri


def make_eval_hook(cfg, shards_dir: str | os.PathLike, run_dir: str | os.PathLike) -> TrainingEval:
    """The evaluation hook of a run configured by `cfg` (a `hive_train.config.TrainConfig` with
    `eval_data` set): its first `eval_rows` rows, answers of at most `eval_max_new_tokens` tokens."""
    return TrainingEval(
        cfg.eval_data, shards_dir, run_dir, rows=cfg.eval_rows, max_new_tokens=cfg.eval_max_new_tokens
    )
