"""SQL DDL in any common dialect -> one canonical schema text (issue 2).

```python
res = normalize_ddl(text, read="auto", dialect="postgres", source="file.sql", keep_data=False)
res.text, res.read, res.tables, res.dropped, res.applied, res.clauses, res.warnings, res.data
```
The pipeline: split statements (`split`), detect the dialect (`detect`), parse structure into the
table model (`build`), apply the rewrite steps (`transforms.RULES`), print (`printer`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hive_core.errors import DDLError
from hive_data.ddl.build import build_schema
from hive_data.ddl.detect import detect_dialect
from hive_data.ddl.identifiers import apply_identifier_policy
from hive_data.ddl.printer import print_schema
from hive_data.ddl.split import split_statements
from hive_data.ddl.transforms import RULES, Context
from hive_data.ddl.types import TARGETS

__all__ = ["DDLResult", "normalize_ddl", "apply_identifier_policy", "TARGETS"]


@dataclass
class DDLResult:
    text: str
    read: str
    tables: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)  # statements that are not structure, by kind
    applied: Counter = field(default_factory=Counter)  # ALTER TABLE actions replayed, by kind
    clauses: Counter = field(default_factory=Counter)  # CREATE TABLE clauses the fallback dropped
    warnings: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)


_READ_ALIASES = {"postgresql": "postgres", "sqlserver": "tsql", "mssql": "tsql", "sqlite3": "sqlite"}


def normalize_ddl(
    text: str,
    read: str = "auto",
    dialect: str = "postgres",
    source: str | None = None,
    keep_data: bool = False,
) -> DDLResult:
    """Normalize a DDL script to the canonical format for `dialect`.

    `read` is the source dialect (a sqlglot dialect name) or "auto" to detect it. Statements that are
    not table structure are counted in `dropped`; `keep_data` also returns INSERTs transpiled to the
    target. Raises `DDLError` (with file=`source`, line, col) for input that cannot be normalized
    faithfully; output is deterministic and normalizing it again (read as `dialect`) gives the same
    text.
    """
    target = _READ_ALIASES.get(dialect.lower(), dialect.lower())
    if target not in TARGETS:
        raise DDLError(
            f"unsupported target dialect {dialect!r} (choose from {', '.join(TARGETS)})", file=source
        )
    read = _READ_ALIASES.get(read.lower(), read.lower())
    if read == "auto":
        read = detect_dialect(text)
    else:
        from sqlglot.dialects.dialect import Dialect

        try:
            Dialect.get_or_raise(read)
        except ValueError:
            raise DDLError(f"unknown source dialect {read!r}", file=source) from None
    statements = split_statements(text, read)
    built = build_schema(statements, read, source=source, keep_data=keep_data)
    schema = built.schema
    if not schema.tables:
        raise DDLError("no CREATE TABLE statement found", file=source)
    ctx = Context(read=read, target=target, source=source)
    try:  # the rules and the printer walk expression trees recursively
        for rule in RULES:
            schema = rule(schema, ctx)
        data = [_data_sql(tree, schema, target) for tree in built.data]
        printed = print_schema(schema, target)
    except RecursionError:
        raise DDLError(
            "an expression is nested too deeply to rewrite (thousands of levels)", file=source
        ) from None
    return DDLResult(
        text=printed,
        read=read,
        tables=[str(t.name) for t in schema.tables],
        dropped=built.dropped,
        applied=built.applied,
        clauses=built.clauses,
        warnings=list(schema.warnings),
        data=data,
    )


def _data_sql(tree, schema, target: str) -> str:
    """A kept INSERT printed as the schema prints names: same qualifiers, same quoting policy."""
    from sqlglot import exp

    if all(t.name.schema is None for t in schema.tables):
        tree = tree.copy()
        for table in tree.find_all(exp.Table):
            table.set("db", None)
            table.set("catalog", None)
    return apply_identifier_policy(tree, target).sql(dialect=target)
