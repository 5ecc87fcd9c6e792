"""Score a file of predictions against a normalized dataset (no model is loaded).

`evaluate(data, predictions, out_dir, config)` reads the dataset with `hive_data.records.iter_records`
(its rows carry the question, the gold answer and, for SQL, the canonical schema and `dialect`),
matches each row to its prediction (by the data's `id` field when the prediction names one, else by
the 1-based row number), scores it with `hive_eval.scoring`, and writes:

- `OUT/predictions.jsonl`: one line per scored row: row, id, question, gold, prediction, kind, every
  verdict and the error text;
- `OUT/summary.json`: the configuration, counts, each verdict's mean, and the same broken down by a
  `difficulty`, `source`, `db_id` or `database` field when the data has one.

With `db_dir` (Spider/BIRD SQLite files) or `db_uri` (a PostgreSQL database) SQL executes on the
row's real database (`hive_eval.realdb`) instead of synthesized ones.

`summary_table(summary)` is the one-screen text the CLI prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from hive_core.errors import ConfigError, RecordError
from hive_data.compare import COMPARE_MODES
from hive_eval.scoring import SCORERS, VERDICTS, Case, Context, score

KINDS = ("auto", *SCORERS)
GROUP_FIELDS = ("difficulty", "source", "db_id", "database")


@dataclass
class EvalConfig:
    """Defaults in one place; CLI flags fill them."""

    compare: str = "bag"  # set (BIRD) or bag (Spider test-suite)
    databases: int = 3  # synthesized databases per gold query
    seed: int = 0
    limit: int | None = None  # score only the first N rows of the data
    timeout_ms: int = 5000  # per query
    kind: str = "auto"  # auto: sql for rows with a schema or dialect, json when gold is JSON, else text
    pg_uri: str | None = None  # a running PostgreSQL; None: start an embedded one when SQL needs it
    db_dir: str | None = None  # real databases: DIR/<db_id>/<db_id>.sqlite, picked by the row's db_id
    db_uri: str | None = None  # a real PostgreSQL database to execute in (read-only transactions)

    def check(self) -> None:
        if self.compare not in COMPARE_MODES:
            raise ConfigError(f"--compare must be one of {', '.join(COMPARE_MODES)}, not {self.compare!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"--kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.databases < 1:
            raise ConfigError("--databases must be at least 1")
        if self.timeout_ms < 1:
            raise ConfigError("--timeout-ms must be positive")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("--limit must be at least 1")
        if self.db_dir is not None and self.db_uri is not None:
            raise ConfigError("--db-dir and --db-uri exclude each other: pick one real database")
        if self.db_dir is not None and not Path(self.db_dir).is_dir():
            raise ConfigError("no such directory (--db-dir)", file=self.db_dir)


# --------------------------------------------------------------------------- reading


def read_predictions(path: str | os.PathLike) -> dict[tuple[str, object], tuple[str | None, int]]:
    """`{("id", str) or ("row", int): (prediction, line)}` from a jsonl file whose lines hold `row`
    (1-based row of the data) or `id`, and `prediction` (a string; null means no prediction).
    Raises RecordError with file and line for anything else."""
    out: dict = {}
    name = str(path)
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as err:
                raise RecordError(f"not JSON: {err}", file=name, line=line_no) from None
            if not isinstance(entry, dict):
                raise RecordError("expected a JSON object per line", file=name, line=line_no)
            if "id" in entry and entry["id"] is not None:
                key = ("id", str(entry["id"]))
            elif (
                isinstance(entry.get("row"), int) and not isinstance(entry["row"], bool) and entry["row"] >= 1
            ):
                key = ("row", entry["row"])
            else:
                raise RecordError(
                    "each prediction needs `row` (the 1-based row number of the data) or `id`",
                    file=name,
                    line=line_no,
                )
            if "prediction" not in entry:
                raise RecordError("missing field 'prediction'", file=name, line=line_no)
            pred = entry["prediction"]
            if pred is not None and not isinstance(pred, str):
                raise RecordError(
                    f"field 'prediction' is {type(pred).__name__}, expected a string", file=name, line=line_no
                )
            if key in out:
                raise RecordError(
                    f"{key[0]} {key[1]} predicted twice (first on line {out[key][1]})",
                    file=name,
                    line=line_no,
                )
            out[key] = (pred, line_no)
    if not out:
        raise RecordError("no predictions", file=name)
    return out


@dataclass
class Row:
    row: int
    id: object
    question: str
    gold: str
    schema: str | None
    dialect: str | None
    groups: dict
    db_id: str | None = None  # the row's `db_id` (or `database`) field: its real database


def data_fields(data: dict, fmt: str) -> tuple[str, str, str | None]:
    """(question, gold answer, schema or None) of a normalized row of any record format; rows of
    the generic formats may carry the schema in a `schema` field."""
    from hive_data.records import SQL_FORMATS, get_fields

    fields = get_fields(data, fmt)
    if fmt in SQL_FORMATS:
        schema = fields.get("schema") or data.get("schema")
        return str(fields["question"]), str(fields["answer"]), schema if isinstance(schema, str) else None
    schema = data.get("schema")  # any row may carry its schema (`hive_eval.val_split` writes one)
    schema = schema if isinstance(schema, str) and schema.strip() else None
    if fmt == "prompt_completion":
        return str(fields["prompt"]), str(fields["completion"]), schema
    if fmt == "alpaca":
        question = "\n".join(str(fields[k]) for k in ("instruction", "input") if fields.get(k))
        return question, str(fields["output"]), schema
    if fmt == "messages":
        turns = [m for m in fields["messages"] if isinstance(m, dict)]
        role = lambda m: m.get("role") or m.get("from")  # noqa: E731
        users = [m for m in turns if role(m) in ("user", "human")]
        answers = [m for m in turns if role(m) in ("assistant", "gpt")]
        if not answers:
            raise RecordError("no assistant message to score against")
        content = lambda m: str(m.get("content") or m.get("value") or "")  # noqa: E731
        return (content(users[-1]) if users else ""), content(answers[-1]), schema
    raise RecordError(f"rows of format {fmt!r} hold no question/answer pair to score")


def iter_rows(data: str | os.PathLike, limit: int | None = None) -> Iterator[Row]:
    """The data's rows to score; an unreadable row stops with its location (normalized data is clean)."""
    from hive_data.records import iter_records

    for n, rec in enumerate(iter_records(data), 1):
        if limit is not None and n > limit:
            return
        if rec.error is not None:
            raise rec.error.with_location(file=rec.source, row=rec.row, line=rec.line)
        try:
            question, gold, schema = data_fields(rec.data, rec.fmt)
        except RecordError as err:
            raise err.with_location(file=rec.source, row=rec.row, line=rec.line) from None
        dialect = rec.data.get("dialect")
        groups = {f: str(rec.data[f]) for f in GROUP_FIELDS if rec.data.get(f) not in (None, "")}
        db_id = groups.get("db_id", groups.get("database"))
        yield Row(
            n,
            rec.data.get("id"),
            question,
            gold,
            schema,
            dialect if isinstance(dialect, str) else None,
            groups,
            db_id,
        )


def kind_of(row: Row, kind: str, real_db: bool = False) -> str:
    """The scorer of a row: `kind`, or for auto: sql for rows with a schema or dialect (or a db_id
    when a real database is given), json when gold is JSON, else text."""
    if kind != "auto":
        return kind
    if row.schema or row.dialect or (real_db and row.db_id):
        return "sql"
    with contextlib.suppress(ValueError):
        if isinstance(json.loads(row.gold), (dict, list)):
            return "json"
    return "text"


# --------------------------------------------------------------------------- summary


def _means(entries: list[dict]) -> dict:
    out: dict = {"rows": len(entries)}
    for v in VERDICTS:
        values = [e[v] for e in entries if e.get(v) is not None]
        if values:
            out[v] = round(sum(float(x) for x in values) / len(values), 6)
            out[f"{v}_rows"] = len(values)
    return out


def summarize(entries: list[dict]) -> dict:
    overall = _means(entries)
    by: dict = {}
    for field in GROUP_FIELDS:
        buckets: dict[str, list] = defaultdict(list)
        for e in entries:
            if field in e:
                buckets[e[field]].append(e)
        if buckets:
            by[field] = {k: _means(v) for k, v in sorted(buckets.items())}
    return {"overall": overall, "by": by}


def summary_table(summary: dict) -> str:
    """The one-screen text table of a summary (overall, then each breakdown)."""
    cols = [("EX", "ex"), ("valid", "valid"), ("parses", "parses"), ("exact", "exact"), ("sim", "similarity")]
    head = f"{'':24} {'rows':>6} " + " ".join(f"{c:>7}" for c, _ in cols)

    def cell(m: dict, key: str) -> str:
        if key == "exact" and key not in m:
            key = "exact_text"  # kinds without a semantic exact match: the textual one
        if key not in m:
            return f"{'-':>7}"
        return f"{m[key]:7.3f}" if key == "similarity" else f"{100 * m[key]:6.1f}%"

    def line(label: str, m: dict) -> str:
        return f"{label[:24]:24} {m['rows']:>6} " + " ".join(cell(m, k) for _, k in cols)

    out = [head, line("all", summary["overall"])]
    for field, groups in summary["by"].items():
        out.append(f"by {field}:")
        shown = list(groups.items())
        for label, m in shown[:12]:
            out.append(line("  " + label, m))
        if len(shown) > 12:
            out.append(f"  ... {len(shown) - 12} more in summary.json")
    notes = []
    counts = summary.get("counts", {})
    for key, text in (
        ("missing", "rows without a prediction (scored wrong)"),
        ("gold_errors", "rows whose gold query fails on its database (scored wrong)"),
        ("unmatched", "predictions that match no scored row (ignored)"),
    ):
        if counts.get(key):
            notes.append(f"{counts[key]} {text}")
    return "\n".join(out + notes)


# --------------------------------------------------------------------------- the run


def _executor_factory(config: EvalConfig, stack: contextlib.ExitStack):
    """A function that starts (on first use) PostgreSQL and the executor, closed with `stack`."""

    def executor():
        from hive_data.execute import Executor

        uri = config.pg_uri
        if uri is None:
            from hive_data.postgres import embedded_postgres

            uri = stack.enter_context(embedded_postgres())
        executor = Executor(
            uri, databases=config.databases, seed=config.seed, timeout_ms=config.timeout_ms,
            prefix=f"hive_eval{os.getpid()}",
        )  # fmt: skip
        return stack.enter_context(executor)

    return executor


def _real_database(config: EvalConfig, stack: contextlib.ExitStack):
    """The real database of --db-dir or --db-uri (closed with `stack`), or None."""
    from hive_eval.realdb import PostgresDatabase, SqliteDatabases

    if config.db_dir is not None:
        return stack.enter_context(SqliteDatabases(config.db_dir, timeout_ms=config.timeout_ms))
    if config.db_uri is not None:
        return stack.enter_context(PostgresDatabase(config.db_uri, timeout_ms=config.timeout_ms))
    return None


def _score_row(row, preds: dict, config: EvalConfig, ctx: Context) -> tuple[dict, tuple]:
    """One row's entry for predictions.jsonl, and the key its prediction was looked up by."""
    by_id = ("id", str(row.id))
    key = by_id if row.id is not None and by_id in preds else ("row", row.row)
    pred = preds.get(key, (None, None))[0]
    missing = key not in preds
    kind = kind_of(row, config.kind, real_db=ctx.database is not None)
    verdicts = score(kind, Case(row.gold, pred, row.schema, row.dialect, row.db_id), ctx)
    if missing:
        verdicts["error"] = "no prediction"
    entry = {"row": row.row, **({"id": row.id} if row.id is not None else {})}
    entry.update(question=row.question, gold=row.gold, prediction=pred, kind=kind, **verdicts)
    entry.update(row.groups)
    entry["missing"] = missing
    return entry, key


def _counts(entries: list[dict], unmatched: int, loads: list) -> dict:
    return {
        "rows": len(entries),
        "missing": sum(e["missing"] for e in entries),
        "gold_errors": sum(bool(e.get("error") and "gold query fails" in e["error"]) for e in entries),
        "unmatched": unmatched,
        "databases_loaded": len(loads),
        "insert_statements_refused": sum(r.failed for r in loads),
    }


def evaluate(
    data: str | os.PathLike,
    predictions: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: EvalConfig | None = None,
    *,
    progress: bool = True,
    run_dir: str | None = None,
) -> dict:
    """Score `predictions` against `data`, write OUT/predictions.jsonl and OUT/summary.json, and
    return the summary (see the module docstring)."""
    from tqdm import tqdm

    from hive_core.atomic import atomic_file

    config = config or EvalConfig()
    config.check()
    started = time.perf_counter()
    entries: list[dict] = []
    used: set = set()
    with contextlib.ExitStack() as stack:
        database = _real_database(config, stack)  # before any output: a bad DIR or URI stops here
        preds = read_predictions(predictions)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ctx = Context(
            compare=config.compare, executor_factory=_executor_factory(config, stack), database=database
        )
        rows = iter_rows(data, config.limit)
        bar = tqdm(
            rows, total=config.limit, desc="scoring", unit="row", file=sys.stderr, disable=not progress
        )
        with atomic_file(out_dir / "predictions.jsonl") as fh:
            for row in bar:
                entry, key = _score_row(row, preds, config, ctx)
                used.add(key)
                entries.append(entry)
                fh.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        loads = list(getattr(ctx._executor, "loads", []) or [])
    elapsed = time.perf_counter() - started
    summary = summarize(entries)
    summary["counts"] = _counts(entries, len(set(preds) - used) if config.limit is None else 0, loads)
    summary["config"] = {
        **asdict(config),
        **{k: "(given)" for k in ("pg_uri", "db_uri") if getattr(config, k) is not None},
    }  # URIs may hold a password
    summary["inputs"] = {"data": str(data), "predictions": str(predictions), "run_dir": run_dir}
    summary["seconds"] = round(elapsed, 3)
    summary["rows_per_s"] = round(len(entries) / elapsed, 2) if elapsed > 0 else None
    with atomic_file(out_dir / "summary.json") as fh:
        json.dump(summary, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    if run_dir is not None:
        add_to_report(run_dir, summary, out_dir)
    return summary


REPORT_START, REPORT_END = "<!-- hive-eval -->", "<!-- /hive-eval -->"


def report_section(summary: dict, out_dir: str | os.PathLike) -> str:
    """The evaluation's section of a run's report.md (between markers, so a later evaluation
    replaces it): the summary table and where the rows are."""
    inputs, config = summary.get("inputs", {}), summary["config"]
    if config.get("db_dir") or config.get("db_uri"):
        where = "executed on the rows' real databases"
    else:
        where = f"{config['databases']} synthesized databases per gold query"
    return "\n".join(
        [
            REPORT_START,
            "## Evaluation (hive-eval)",
            "",
            f"Data: `{inputs.get('data')}`; predictions: `{inputs.get('predictions')}`; per row: "
            f"`{Path(out_dir) / 'predictions.jsonl'}`. Comparison: {config['compare']}, {where}.",
            "",
            "```",
            summary_table(summary),
            "```",
            REPORT_END,
        ]
    )


def add_to_report(run_dir: str | os.PathLike, summary: dict, out_dir: str | os.PathLike) -> bool:
    """Put the evaluation's section into RUN_DIR/report.md (replacing an earlier one) when the run
    directory is hive's (its ownership marker) and has a report. Returns whether it did."""
    from hive_core.atomic import atomic_file, read_marker

    report = Path(run_dir) / "report.md"
    if read_marker(run_dir) is None or not report.is_file():
        return False
    text = report.read_text(encoding="utf-8")
    section = report_section(summary, out_dir)
    start, end = text.find(REPORT_START), text.find(REPORT_END)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(REPORT_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with atomic_file(report) as fh:
        fh.write(text)
    return True
