"""SQL answers: transpile to the target dialect and verify them (parse, or EXPLAIN in PostgreSQL).

Levels:

- ``parse``: the answer parses in its source dialect as exactly one statement (not sqlglot's opaque
  ``Command`` fallback), transpiles to the target with the schema's identifier policy, and the result
  parses again in the target dialect.
- ``explain``: additionally, PostgreSQL plans ``EXPLAIN <answer>`` against the row's canonical schema,
  which catches unknown tables and columns, type errors and syntax from another dialect.

EXPLAIN never runs the statement. On top of that, each answer runs in a ``READ ONLY`` transaction that
is always rolled back, under a deadline, with ``search_path`` set to a scratch schema that holds only
the row's tables (one per distinct schema text), as a login role that cannot reach the host
(`hive_data.sandbox`). Statements EXPLAIN cannot take (DDL, COPY, SET, ...) are rejected before they
reach the server.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ErrorLevel, ParseError, SqlglotError, TokenError

from hive_core.errors import SQLError
from hive_data.ddl.identifiers import apply_identifier_policy
from hive_data.sandbox import pg_message

EXPLAINABLE = (exp.Select, exp.SetOperation, exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Values)
VERIFY_LEVELS = ("parse", "explain", "execute")
_BARE = (
    exp.Condition,
    exp.Alias,
    exp.Identifier,
    exp.Tuple,
    exp.Paren,
    exp.Star,
)  # expressions, not statements

# sqlglot logs a warning for every statement it falls back to `Command` on; we report those ourselves.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


@functools.cache
def _dialect(name: str) -> Dialect:
    """One Dialect instance per name (sqlglot otherwise looks the name up several times per call)."""
    try:
        return Dialect.get_or_raise(name)
    except ValueError as err:
        raise SQLError(f"unknown dialect {name!r}") from err


def guess_read(sql: str) -> str:
    """A source dialect for an answer with no schema to detect it from: backticks mean MySQL,
    bracketed names T-SQL, anything else is read as PostgreSQL."""
    if "`" in sql:
        return "mysql"
    if re.search(r"\[[A-Za-z_][^\]\n]*\]", sql) and not re.search(r"\bARRAY\s*\[", sql, re.I):
        return "tsql"
    return "postgres"


def _parse_error(err: SqlglotError, sql: str, what: str) -> SQLError:
    if isinstance(err, ParseError) and err.errors:
        first = err.errors[0]
        desc = first.get("description") or str(err)
        near = (first.get("highlight") or "").strip()
        reason = f"{what}: {desc}" + (f" near {near!r}" if near else "")
        return SQLError(reason, line=first.get("line"), col=first.get("col"))
    return SQLError(f"{what}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")


def parse_statement(sql: str, dialect: str, what: str = "does not parse") -> exp.Expr:
    """Exactly one real statement of `dialect`; SQLError (with line/col where known) otherwise."""
    if not isinstance(sql, str) or not sql.strip():
        raise SQLError("empty answer")
    try:
        statements = [s for s in sqlglot.parse(sql, read=_dialect(dialect)) if s is not None]
    except (ParseError, TokenError) as err:
        raise _parse_error(err, sql, f"{what} as {dialect}") from None
    except SqlglotError as err:
        raise SQLError(f"{what} as {dialect}: {err}") from None
    if not statements:
        raise SQLError("empty answer")
    if len(statements) > 1:
        raise SQLError(f"answer holds {len(statements)} statements, expected one")
    stmt = statements[0]
    if isinstance(stmt, _BARE):  # sqlglot reads `SELEC a` as the column SELEC aliased a
        first = sql.split(None, 1)[0]
        raise SQLError(f"{what} as {dialect}: not a statement (starts with {first!r}; a misspelled keyword?)")
    if isinstance(stmt, exp.Command):
        head = stmt.name or str(stmt.this)
        raise SQLError(f"{what} as {dialect}: unsupported {head} syntax (sqlglot cannot read it)")
    return stmt


def _foreign_leftovers(stmt: exp.Expr, dialect: str) -> str | None:
    """Source-dialect syntax that sqlglot carries into `dialect` verbatim and its lenient parser reads
    back, although the target database rejects it. Known cases for PostgreSQL only."""
    if dialect != "postgres":
        return None
    for node in stmt.walk():
        if isinstance(node, exp.OnConflict) and node.args.get("duplicate"):
            return "ON DUPLICATE KEY UPDATE"
        if isinstance(node, exp.Group) and any(
            isinstance(r, exp.Rollup) and not r.expressions for r in node.args.get("rollup") or ()
        ):
            return "GROUP BY ... WITH ROLLUP"
        if isinstance(node, exp.Select) and node.args.get("operation_modifiers"):
            return " ".join(m.sql() for m in node.args["operation_modifiers"])
        if isinstance(node, (exp.Update, exp.Delete)) and (node.args.get("order") or node.args.get("limit")):
            return f"{node.key.upper()} with ORDER BY or LIMIT"
    return None


def cross_join_bare_joins(stmt: exp.Expr) -> exp.Expr:
    """`a JOIN b JOIN c ON <a and c>`: MySQL and SQLite read a JOIN without a condition as a cross join
    that binds left to right; sqlglot prints it as a comma, which binds looser than JOIN in PostgreSQL
    and the standard, so `a` would fall out of scope of the ON. Spell such joins `CROSS JOIN`."""
    for select in stmt.find_all(exp.Select):
        joins = select.args.get("joins") or []
        for i, join in enumerate(joins):
            bare = not any(join.args.get(k) for k in ("on", "using", "kind", "side", "method"))
            if bare and any(later.args.get("on") or later.args.get("using") for later in joins[i + 1 :]):
                join.set("kind", "CROSS")
    return stmt


def drop_qualifiers(stmt: exp.Expr) -> exp.Expr:
    """Remove database/schema qualifiers (`world_1.city`, `db.t.c`), as the canonical schema does when
    all its tables share one schema."""
    for table in stmt.find_all(exp.Table):
        table.set("db", None)
        table.set("catalog", None)
    for column in stmt.find_all(exp.Column):
        if column.args.get("db") is not None:
            column.set("db", None)
            column.set("catalog", None)
    return stmt


def transpile_answer(sql: str, read: str, dialect: str, *, unqualify: bool = False) -> str:
    """The answer in the `dialect`, with the canonical schema's identifier policy, one line per
    statement as sqlglot prints it; `unqualify` drops schema qualifiers (for schemas printed without
    them). Raises SQLError when it cannot be read, transpiled or re-read."""
    return transpile_coerced(sql, read, dialect, None, unqualify=unqualify)[0]


def transpile_coerced(
    sql: str, read: str, dialect: str, schema: str | None, *, unqualify: bool = False
) -> tuple[str, list[str]]:
    """`transpile_answer`, and with `schema` (the row's canonical DDL text) the answer made explicit
    where `read` converted types implicitly (`hive_data.coerce`). Returns the text and the labels of
    the coercion rules that changed it; with none, the text is exactly `transpile_answer`'s. Raises
    SQLError as `transpile_answer` does, and `hive_data.coerce.Unfaithful` (step "coerce") for an
    answer that has no faithful form in `dialect`."""
    stmt = parse_statement(sql, read, "does not parse")
    stmt = apply_identifier_policy(stmt, dialect, copy=False)  # our own fresh parse: no copy needed
    stmt = cross_join_bare_joins(stmt)
    if unqualify:
        stmt = drop_qualifiers(stmt)
    fired: list[str] = []
    if schema is not None:
        from hive_data.coerce import coerce

        stmt, fired = coerce(stmt, schema, read, dialect)
    try:
        out = stmt.sql(dialect=_dialect(dialect), copy=False, unsupported_level=ErrorLevel.RAISE)
    except SqlglotError as err:
        raise SQLError(f"cannot transpile {read} to {dialect}: {str(err).splitlines()[0]}") from None
    try:
        check = parse_statement(out, dialect, "transpiled answer does not parse")
        foreign = _foreign_leftovers(check, dialect)
        if foreign:
            raise SQLError(f"transpiled answer does not parse as {dialect}: {foreign} has no {dialect} form")
        if type(check) is not type(stmt):
            raise SQLError(
                f"transpiled answer reads back as {type(check).__name__}, not {type(stmt).__name__}"
            )
    except SQLError as err:
        err.step = "parse"  # the source was fine; the target dialect cannot take the result
        raise
    return out, fired


def schema_key(schema: str, data: tuple[str, ...] = ()) -> str:
    digest = hashlib.blake2b(schema.encode(), digest_size=8)
    for stmt in data:
        digest.update(b"\0" + stmt.encode())
    return digest.hexdigest()


class ExplainVerifier:
    """EXPLAINs answers in PostgreSQL, one scratch schema per distinct schema text, all of it inside a
    `hive_data.sandbox.Sandbox` (a login role of its own that cannot reach the host, with deadlines).

    Scratch schemas are named `<prefix>_<hash>`, and `prefix` names the sandbox role: give each
    process its own. `close()` drops the schemas and the role.
    """

    def __init__(
        self, uri: str, *, timeout_ms: int = 5000, prefix: str = "hive_verify", max_schemas: int = 1000
    ):
        from hive_data.sandbox import Sandbox

        self.timeout_ms = int(timeout_ms)
        self.prefix = re.sub(r"\W", "_", prefix).lower()
        self.sandbox = Sandbox(uri, name=self.prefix, timeout_ms=self.timeout_ms)
        self.schemas: dict[str, str | SQLError] = {}  # insertion order = age, for eviction
        self.max_schemas = max_schemas

    @property
    def conn(self):
        """The connection that runs dataset SQL (as the sandbox role)."""
        return self.sandbox.conn

    def close(self) -> None:
        self.sandbox.close()  # drops the role and everything it owns, the scratch schemas too

    def __enter__(self) -> ExplainVerifier:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def schema(self, schema: str, data: tuple[str, ...] = ()) -> str:
        """Create (once) the scratch schema for this schema text; its name, or SQLError if the DDL
        does not execute. The text (canonical DDL, and kept INSERTs) runs as the sandbox role."""
        import psycopg

        from hive_data.sandbox import refuse_nul

        key = schema_key(schema, data)
        got = self.schemas.get(key)
        if got is None:
            name = f"{self.prefix}_{key}"
            body = ";\n".join(s.rstrip().rstrip(";") for s in (schema, *data) if s.strip())
            try:
                refuse_nul(body, "schema")
                self.sandbox.create_schema(name)
                self.sandbox.run(
                    body, search_path=name, read_only=False, commit=True, single=False,
                    timeout_ms=self.timeout_ms * 4,
                )  # fmt: skip
                got = name
            except SQLError as err:  # a NUL byte, or the deadline (SandboxTimeout)
                got = SQLError(f"schema does not execute in PostgreSQL: {err.reason}")
            except psycopg.Error as err:
                got = SQLError(f"schema does not execute in PostgreSQL: {pg_message(err)}")
            if isinstance(got, SQLError):
                self.sandbox.drop_schema(name)
            self.schemas[key] = got
            if len(self.schemas) > self.max_schemas:  # datasets with a schema per row: bound the catalog
                old = self.schemas.pop(next(iter(self.schemas)))
                if isinstance(old, str):
                    self.sandbox.drop_schema(old)
        if isinstance(got, SQLError):
            raise SQLError(got.reason)
        return got

    def explain(
        self, answer: str, schema: str, data: tuple[str, ...] = (), *, dialect: str = "postgres"
    ) -> None:
        """Raise SQLError unless PostgreSQL plans `EXPLAIN answer` against `schema`.

        The answer is sent only if sqlglot reads back what it prints from it (the same tree), so the
        server plans the statement hive checked, not a text the two parsers read differently."""
        import psycopg

        from hive_data.sandbox import SandboxTimeout, refuse_nul

        refuse_nul(answer, "answer")
        stmt = parse_statement(answer, dialect, "does not parse")
        if not isinstance(stmt, EXPLAINABLE):
            kind = stmt.key.upper()
            raise SQLError(
                f"EXPLAIN cannot verify a {kind} statement (only SELECT, INSERT, UPDATE, DELETE, MERGE)"
            )
        printed = stmt.sql(dialect=_dialect(dialect), copy=False)  # our own parse: no copy needed
        if parse_statement(printed, dialect, "does not parse") != stmt:
            raise SQLError("answer does not survive a parse/print round trip; not sent to PostgreSQL")
        name = self.schema(schema, data)
        prefix = "EXPLAIN "
        try:
            # one batch, one round trip: the text is one statement as sqlglot reads it (checked
            # above), and whatever it holds runs as the sandbox role under the deadline
            self.sandbox.run(prefix + answer, search_path=name, read_only=True, single=False)
        except SandboxTimeout:
            raise SQLError(f"EXPLAIN timed out after {self.timeout_ms} ms") from None
        except psycopg.Error as err:
            line = col = None
            pos = err.diag.statement_position if hasattr(err, "diag") else None
            start = self.sandbox.batch_offset + len(prefix)
            if pos and int(pos) > start:
                offset = int(pos) - start - 1
                before = answer[:offset]
                line, col = before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1
            raise SQLError(f"EXPLAIN: {pg_message(err)}", line=line, col=col) from None
