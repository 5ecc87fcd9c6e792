"""Execute gold and predicted queries on synthesized databases, inside `hive_data.sandbox`.

`Executor` owns one `hive_data.verify.ExplainVerifier` (and through it one `Sandbox`: a login role
that cannot reach the host, with a client-side deadline on every statement). For each (schema, gold
query) it loads K synthesized databases into K scratch schemas, `<prefix>_d<hash>_<i>`, made once per
schema text (`create_tables`) and refilled for each new set of rows (`refill`: the tables emptied and
filled in one transaction; creating tables for every gold query slowed PostgreSQL down over a long
run), and runs queries there:

- gold and prediction each run in a READ ONLY transaction that is always rolled back, as one
  statement by the extended protocol, under the per-query timeout; a timeout or an error is a wrong
  answer, never a hang;
- a prediction must be a query (`check_query`): a statement that changes data or the schema, COPY,
  SET or anything but SELECT / set operations / VALUES is wrong by definition and is never sent;
- after every query the session is reset (`DISCARD ALL`: advisory locks outlive a rollback).

`execution_match` says whether the prediction's result equals gold's on every database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

from hive_core.errors import SQLError
from hive_data.compare import orders_rows, results_equal
from hive_data.sandbox import pg_message
from hive_data.synth import synthesize_databases

QUERIES = (exp.Select, exp.SetOperation, exp.Values)
# Results are tiny on synthesized databases; a query that streams millions of rows within its
# deadline (generate_series, a cross join of itself) would fill the client's memory instead.
MAX_ROWS = 100_000
# Anything in a query tree that writes, locks or leaves the read path: refused before the server.
_WRITES = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Copy, exp.Into, exp.Lock, exp.Create, exp.Drop)


@dataclass
class LoadReport:
    statements: int
    failed: int = 0  # statements PostgreSQL refused (rows whose CHECK the evaluator could not judge)
    first_error: str | None = None


def check_query(sql: str, dialect: str = "postgres") -> exp.Expr:
    """The parsed prediction when it is exactly one read-only query; SQLError otherwise."""
    from hive_data.verify import parse_statement

    stmt = parse_statement(sql, dialect, "does not parse")
    if not isinstance(stmt, QUERIES):
        raise SQLError(f"not a query: a {stmt.key.upper()} statement (only SELECT is a prediction)")
    bad = next(stmt.find_all(*_WRITES), None)
    if bad is not None:
        raise SQLError(f"not a read-only query: contains {bad.key.upper()}")
    return stmt


def bounded(sql: str, dialect: str = "postgres", max_rows: int = MAX_ROWS) -> str:
    """The query wrapped so that the server sends at most `max_rows + 1` rows. Trailing semicolons
    (and what follows them) are cut so the text fits in parentheses; the wrapper is on lines of its
    own, so a trailing `--` comment cannot swallow it. PostgreSQL keeps the inner ORDER BY for a plain
    `SELECT * ... LIMIT` over a subquery."""
    from sqlglot.dialects.dialect import Dialect

    tokens = Dialect.get_or_raise(dialect).tokenize(sql)
    end = len(sql)
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        end = tokens.pop().start
    return f"SELECT * FROM (\n{sql[:end]}\n) AS hive_eval_q LIMIT {max_rows + 1}"


def _pg_message(err: Exception) -> str:
    return err.reason if isinstance(err, SQLError) else pg_message(err)


def split_cycle_keys(schema: str) -> tuple[str, list[str]]:
    """(the schema text without its cycle-closing foreign keys, those `ALTER TABLE ... ADD FOREIGN KEY`
    statements). The canonical format prints each on one line of its own, after every table."""
    kept, alters = [], []
    for line in schema.splitlines():
        if line.startswith("ALTER TABLE ") and " ADD FOREIGN KEY " in line:
            alters.append(line.rstrip().rstrip(";"))
        else:
            kept.append(line)
    return "\n".join(kept), alters


def load_database(
    sandbox, name: str, schema: str, statements: list[str], *, timeout_ms: int = 20_000
) -> LoadReport:
    """Create scratch schema `name` in the sandbox and run the schema text, then the statements, there.

    The foreign keys that close a cycle are added after the rows, so that a row can name a parent
    inserted after it (NOT NULL columns of a cycle get their values in the INSERT). Schema, rows and
    keys go as one batch (one transaction); if the server refuses it (a CHECK the synthesizer could
    not evaluate), the schema is rebuilt and the statements run one by one, keeping those it accepts.
    Raises SQLError when the schema text itself does not execute."""
    import psycopg

    def run(sql: str, single: bool = False) -> None:
        sandbox.run(sql, search_path=name, read_only=False, commit=True, single=single, timeout_ms=timeout_ms)

    report = LoadReport(len(statements))
    tables, cycle_keys = split_cycle_keys(schema)
    sandbox.create_schema(name)
    try:
        run(";\n".join([tables.rstrip().rstrip(";"), *statements, *cycle_keys]))
        return report
    except (psycopg.Error, SQLError) as err:
        report.first_error = _pg_message(err)
    sandbox.create_schema(name)  # empty again: the batch was rolled back, but be sure
    try:
        run(tables)
    except (psycopg.Error, SQLError) as err:
        sandbox.drop_schema(name)
        raise SQLError(f"schema does not execute in PostgreSQL: {_pg_message(err)}") from None
    refused = _run_each(run, statements)
    # a key the kept rows break is left out: queries read the same rows
    refused += _run_each(run, cycle_keys)
    report.failed = len(refused)
    report.first_error = refused[0] if refused else None  # else: the batch's failure did not repeat
    return report


def _run_each(run, statements: list[str]) -> list[str]:
    """Run each statement on its own (`run(stmt, single=True)`); the server's messages for those
    it refused, in order."""
    import psycopg

    refused = []
    for stmt in statements:
        try:
            run(stmt, single=True)
        except (psycopg.Error, SQLError) as err:
            refused.append(_pg_message(err))
    return refused


def create_tables(sandbox, name: str, schema: str, *, timeout_ms: int = 20_000) -> None:
    """Scratch schema `name` with the schema's tables and no rows, cycle-closing foreign keys
    DEFERRABLE INITIALLY DEFERRED (so that `refill` can insert a row that names a parent inserted
    after it). Raises SQLError when the schema text does not execute."""
    import psycopg

    tables, cycle_keys = split_cycle_keys(schema)
    deferred = [f"{stmt} DEFERRABLE INITIALLY DEFERRED" for stmt in cycle_keys]
    sandbox.create_schema(name)
    try:
        sandbox.run(
            ";\n".join([tables.rstrip().rstrip(";"), *deferred]), search_path=name, read_only=False,
            commit=True, single=False, timeout_ms=timeout_ms,
        )  # fmt: skip
    except (psycopg.Error, SQLError) as err:
        sandbox.drop_schema(name)
        raise SQLError(f"schema does not execute in PostgreSQL: {_pg_message(err)}") from None


def refill(
    sandbox, name: str, tables: list[str], statements: list[str], *, timeout_ms: int = 20_000
) -> LoadReport:
    """Replace the rows of scratch schema `name` (made by `create_tables`; `tables`: its table names,
    parents first) with `statements`: one transaction that empties the tables, children first, and
    runs them. Emptying and filling a few dozen rows costs far less than creating tables, whose
    catalog churn slows PostgreSQL down over a long run. If the server refuses the batch (a CHECK the
    synthesizer could not evaluate), the statements run one by one, keeping those it accepts."""
    import psycopg

    def run(sql: str, single: bool = False) -> None:
        sandbox.run(sql, search_path=name, read_only=False, commit=True, single=single, timeout_ms=timeout_ms)

    empty = [f"DELETE FROM {t}" for t in reversed(tables)]
    report = LoadReport(len(statements))
    try:
        run(";\n".join([*empty, *statements]))
        return report
    except (psycopg.Error, SQLError) as err:
        report.first_error = _pg_message(err)
    run(";\n".join(empty))
    refused = _run_each(run, statements)
    report.failed = len(refused)
    report.first_error = refused[0] if refused else None
    return report


def match_inputs(gold: str, prediction: str, dialect: str) -> tuple[exp.Expr | None, str | None]:
    """(gold's parse, None), or (None, why the pair cannot be executed): gold must parse and the
    prediction must be one read-only query (`check_query`), checked before any database is touched."""
    try:
        gold_tree = sqlglot.parse_one(gold, read=dialect)
    except SqlglotError as err:
        return None, f"gold query does not parse: {str(err).splitlines()[0]}"
    try:
        check_query(prediction, dialect)
    except SQLError as err:
        return None, err.reason
    return gold_tree, None


@dataclass
class Outcome:
    """A query's result on one database, or why there is none."""

    rows: list[tuple] | None
    error: str | None = None


class Executor:
    """Scratch databases and query execution for one evaluation run (see the module docstring).

    `prefix` names the sandbox role and the scratch schemas: give each process its own.
    """

    def __init__(
        self,
        uri: str,
        *,
        databases: int = 3,
        seed: int = 0,
        timeout_ms: int = 5000,
        prefix: str = "hive_eval",
        max_cached: int = 64,
    ):
        from hive_data.verify import ExplainVerifier

        self.k, self.seed, self.timeout_ms = int(databases), int(seed), int(timeout_ms)
        self.verifier = ExplainVerifier(uri, timeout_ms=self.timeout_ms, prefix=prefix)
        self.sandbox = self.verifier.sandbox
        self.prefix = self.verifier.prefix
        self.max_cached = max_cached
        self._scratch: dict[str, list[str] | SQLError] = {}  # schema text -> K schema names; insertion = age
        self._content: dict[str, str] = {}  # scratch schema -> key of the rows it holds
        self._failed: dict[str, SQLError] = {}  # keys whose rows could not be synthesized
        self._gold: dict[tuple[str, str, str], Outcome] = {}  # (rows key, schema, sql) -> result
        self._tables: dict[str, dict | SQLError] = {}  # parsed schema texts
        self.loads: list[LoadReport] = []
        self.last_key: str | None = None  # the key of the set `databases` returned last

    def close(self) -> None:
        self.verifier.close()  # drops the role and every scratch schema it owns

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def databases(self, schema: str, gold: str | None, *, built=None) -> list[str]:
        """Names of the K loaded scratch schemas for this schema and gold query. Gold queries that
        give the synthesizer the same hints (most often: none) share them; each set is built once.
        `self.last_key` names the set; `built(key, databases)`, when given, sees each set synthesized
        (`hive_data.synth.Database`s), so that a caller can load the same rows elsewhere."""
        from hive_data.synth import GoldHints, parse_schema

        tables = self._tables.get(schema)
        if tables is None:
            if len(self._tables) >= self.max_cached:
                self._tables.pop(next(iter(self._tables)))
            try:
                tables = self._tables[schema] = parse_schema(schema)
            except SQLError as err:
                tables = self._tables[schema] = err
        if isinstance(tables, SQLError):
            raise SQLError(tables.reason)
        hints = GoldHints.of(gold, tables)
        key = self.last_key = hashlib.blake2b(
            f"{self.seed}\0{self.k}\0{schema}\0{hints.signature()}".encode(), digest_size=6
        ).hexdigest()
        if key in self._failed:
            raise SQLError(self._failed[key].reason)
        names = self._scratch_for(schema)
        if all(self._content.get(n) == key for n in names):
            return names
        try:
            dbs = synthesize_databases(schema, hints, k=self.k, seed=self.seed, tables=tables)
        except SQLError as err:
            if len(self._failed) >= self.max_cached:
                self._failed.pop(next(iter(self._failed)))
            self._failed[key] = err
            raise SQLError(err.reason) from None
        if built is not None:
            built(key, dbs)
        order = [t.name for t in tables.values()]
        for name, db in zip(names, dbs):
            self._content.pop(name, None)  # until the new rows are in
            self.loads.append(refill(self.sandbox, name, order, db.statements()))
            self._content[name] = key
        if len(self._gold) > 50_000:  # results of rows no longer loaded: bound the memo
            self._gold.clear()
        return names

    def _scratch_for(self, schema: str) -> list[str]:
        """The K scratch schemas holding this schema's tables, made once (the oldest schema's are
        dropped past `max_cached`). Raises SQLError when the schema does not execute."""
        got = self._scratch.pop(schema, None)
        if got is None:
            tag = hashlib.blake2b(schema.encode(), digest_size=6).hexdigest()
            try:
                got = []
                for i in range(self.k):
                    name = f"{self.prefix}_d{tag}_{i}"
                    create_tables(self.sandbox, name, schema)
                    got.append(name)
            except SQLError as err:
                for name in got:
                    self.sandbox.drop_schema(name)
                got = err
            if len(self._scratch) >= self.max_cached:  # bound the catalog
                old = self._scratch.pop(next(iter(self._scratch)))
                for name in old if isinstance(old, list) else []:
                    self.sandbox.drop_schema(name)
                    self._content.pop(name, None)
        self._scratch[schema] = got  # most recently used last
        if isinstance(got, SQLError):
            raise SQLError(got.reason)
        return got

    def run(self, sql: str, db: str, *, bound: bool = False) -> Outcome:
        """Rows of `sql` on scratch schema `db` (read only, rolled back, under the timeout); `bound`
        caps the result at MAX_ROWS (more is an error)."""
        import psycopg

        from hive_data.sandbox import SandboxTimeout

        try:
            text = bounded(sql) if bound else sql
            # executed, not only planned: reset the session after it (advisory locks outlive a rollback)
            rows = self.sandbox.run(
                text, search_path=db, read_only=True, timeout_ms=self.timeout_ms, reset=True
            )
            if bound and len(rows) > MAX_ROWS:
                return Outcome(None, f"more than {MAX_ROWS} rows")
            return Outcome(rows=rows)
        except SandboxTimeout:
            return Outcome(None, f"timed out after {self.timeout_ms} ms")
        except SqlglotError as err:  # bounded() could not tokenize it
            return Outcome(None, f"does not tokenize: {str(err).splitlines()[0]}")
        except SQLError as err:
            return Outcome(None, err.reason)
        except psycopg.Error as err:
            return Outcome(None, _pg_message(err))

    def gold(self, sql: str, db: str) -> Outcome:
        key = (self._content.get(db, ""), db, sql)
        if key not in self._gold:
            self._gold[key] = self.run(sql, db, bound=True)
        return self._gold[key]

    def execution_match(
        self, gold: str, prediction: str, schema: str, *, compare: str = "bag", dialect: str = "postgres"
    ) -> tuple[bool, str | None]:
        """(correct, reason when not): the prediction's result equals gold's on all K databases."""
        gold_tree, why = match_inputs(gold, prediction, dialect)
        if gold_tree is None:
            return False, why
        ordered = orders_rows(gold_tree)
        for i, db in enumerate(self.databases(schema, gold)):
            want = self.gold(gold, db)
            if want.error is not None:
                return False, f"gold query fails on database {i + 1}: {want.error}"
            got = self.run(prediction, db, bound=True)
            if got.error is not None:
                return False, got.error
            if not results_equal(want.rows, got.rows, compare, ordered=ordered):
                return False, f"result differs from gold on database {i + 1}"
        return True, None
