"""Scorers by expert kind: one function per kind, one registry line each.

Every kind gets the text verdicts (`exact_text`: equal after whitespace normalization; `similarity`:
difflib's ratio of the whitespace-normalized texts, 0..1). On top of them:

- ``sql``: `parses` (sqlglot reads the prediction as one statement of the row's dialect), `valid`
  (a read-only query that PostgreSQL plans with EXPLAIN against the row's schema, in the sandbox),
  `ex` (execution accuracy: equal results on every synthesized database, `hive_data.execute`) and
  `exact` (both sides parsed, identifiers normalized, printed by sqlglot, compared). With a real
  database in the context (`hive_eval.realdb`), `valid` and `ex` are judged on the row's database
  there instead, and a row without a dialect is in the database's;
- ``json``: `parses` (the prediction is JSON) and `exact` (its value equals gold's);
- ``text``: the text verdicts only.

A verdict is True, False, or None when it does not apply (no schema to execute against, a dialect
PostgreSQL cannot run). A scorer returns its verdicts and `error`, the first reason for a failure.

Adding a kind: write `score_<kind>(case, ctx) -> dict` and add it to `SCORERS`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from hive_core.errors import ConfigError, SQLError

VERDICTS = ("ex", "valid", "parses", "exact", "exact_text", "similarity")


@dataclass
class Case:
    """One row to score."""

    gold: str
    prediction: str | None
    schema: str | None = None
    dialect: str | None = None
    db_id: str | None = None  # the row's database among `Context.database`'s


@dataclass
class Context:
    """What scorers share across rows: the executor (created on first use), the compare rule, and a
    real database (`hive_eval.realdb.RealDatabase`) that replaces synthesized ones when given."""

    compare: str = "bag"
    executor_factory: Callable[[], object] | None = None
    _executor: object | None = None
    database: object | None = None

    @property
    def executor(self):
        if self._executor is None and self.executor_factory is not None:
            self._executor = self.executor_factory()
        return self._executor


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def similarity(gold: str, prediction: str) -> float:
    """difflib's ratio (2 * matches / total length) of the whitespace-normalized texts, in 0..1."""
    a, b = _squash(gold), _squash(prediction)
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def score_text(case: Case, ctx: Context) -> dict:
    if case.prediction is None:
        return {"exact_text": False, "similarity": 0.0}
    return {
        "exact_text": _squash(case.gold) == _squash(case.prediction),
        "similarity": round(similarity(case.gold, case.prediction), 6),
    }


def canonical_sql(sql: str, dialect: str) -> str:
    """One spelling per statement: parsed, identifiers normalized as the dialect resolves them,
    printed by sqlglot without comments. Raises SQLError when it does not parse."""
    from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

    from hive_data.verify import parse_statement

    stmt = parse_statement(sql, dialect, "does not parse")
    return normalize_identifiers(stmt, dialect=dialect).sql(dialect=dialect, comments=False)


def score_sql(case: Case, ctx: Context) -> dict:
    from hive_data.execute import check_query
    from hive_data.verify import parse_statement

    database = ctx.database
    dialect = case.dialect or (database.dialect if database is not None else "postgres")
    out: dict = {"parses": False, "valid": False, "ex": False, "exact": False, "error": None}
    if case.prediction is None:
        out["error"] = "no prediction"
        return out
    try:
        parse_statement(case.prediction, dialect, "does not parse")
        out["parses"] = True
    except SQLError as err:
        out["error"] = str(err.reason)
        return out
    try:
        out["exact"] = canonical_sql(case.prediction, dialect) == canonical_sql(case.gold, dialect)
    except SQLError:
        out["exact"] = False  # gold that does not parse matches nothing
    except RecursionError:
        out["exact"] = False
    if database is not None:
        return _score_on_database(case, database, ctx.compare, dialect, out)
    if dialect != "postgres" or not case.schema:  # nothing to plan or execute against
        out["valid"] = out["ex"] = None
        return out
    executor = ctx.executor
    try:
        check_query(case.prediction, dialect)
        executor.verifier.explain(case.prediction, case.schema, dialect=dialect)
        out["valid"] = True
    except SQLError as err:
        out["error"] = str(err.reason)
        if err.reason.startswith(("EXPLAIN", "not a", "schema does not execute")):
            # the server refused it (or must not see it): it cannot run either. Say so when gold
            # itself does not plan (a dataset not verified with --verify explain).
            try:
                executor.verifier.explain(case.gold, case.schema, dialect=dialect)
            except SQLError as gold_err:
                out["error"] = f"gold query fails: {gold_err.reason}"
            return out
    try:
        ok, why = executor.execution_match(
            case.gold, case.prediction, case.schema, compare=ctx.compare, dialect=dialect
        )
    except SQLError as err:  # the schema does not load
        ok, why = False, err.reason
    out["ex"] = ok
    out["error"] = out["error"] or why
    return out


def _score_on_database(case: Case, database, compare: str, dialect: str, out: dict) -> dict:
    """`valid` and `ex` on the row's real database: `valid` when the database plans the prediction
    (None when the row's database is missing; `ex` is then wrong), `ex` as `execution_match` says."""
    why = database.unavailable(case.db_id)
    if why is not None:
        out["valid"], out["error"] = None, why
        return out
    try:
        database.explain(case.prediction, case.db_id, dialect=dialect)
        out["valid"] = True
    except SQLError as err:
        out["error"] = err.reason
        try:  # say so when gold itself does not plan: the data and the database disagree
            database.explain(case.gold, case.db_id, dialect=dialect, query=False)
        except SQLError as gold_err:
            out["error"] = f"gold query fails: {gold_err.reason}"
        return out
    out["ex"], why = database.execution_match(
        case.gold, case.prediction, case.db_id, compare=compare, dialect=dialect
    )
    out["error"] = out["error"] or why
    return out


def score_json(case: Case, ctx: Context) -> dict:
    out: dict = {"parses": False, "exact": False, "error": None}
    if case.prediction is None:
        out["error"] = "no prediction"
        return out
    try:
        value = json.loads(case.prediction)
        out["parses"] = True
    except ValueError as err:
        out["error"] = f"not JSON: {err}"
        return out
    try:
        out["exact"] = value == json.loads(case.gold)
    except ValueError as err:
        out["error"] = f"gold is not JSON: {err}"
    return out


def score_plain(case: Case, ctx: Context) -> dict:
    """Free text: nothing beyond the text verdicts every kind gets."""
    return {}


SCORERS: dict[str, Callable[[Case, Context], dict]] = {
    "sql": score_sql,
    "json": score_json,
    "text": score_plain,
}


def score(kind: str, case: Case, ctx: Context) -> dict:
    """All verdicts of one row: the kind's own, then the text verdicts every kind has."""
    try:
        scorer = SCORERS[kind]
    except KeyError:
        raise ConfigError(f"unknown kind {kind!r}; choose one of {', '.join(SCORERS)}") from None
    try:
        out = {"error": None, **scorer(case, ctx)}
    except RecursionError:  # thousands of nested parentheses: no parser can read it, so it is wrong
        out = {v: False for v in ("parses", "valid", "ex", "exact")} | {"error": "nested too deeply to parse"}
    out.update(score_text(case, ctx))
    return out
