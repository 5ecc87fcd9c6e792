"""Print the table model in the canonical format.

```
-- Dialect: postgres
-- Table: users
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL, -- shown to other users
  ...
);
```
Lines are assembled here; sqlglot prints only the fragments (a DEFAULT value, a CHECK condition), one
`node.sql(dialect=...)` call each, after the identifier policy has been applied to them.
"""

from __future__ import annotations

from sqlglot import exp

from hive_data.ddl.identifiers import apply_identifier_policy, colliding, quote
from hive_data.ddl.model import ForeignKey, QualifiedName, Schema, Table


def print_schema(schema: Schema, target: str) -> str:
    """The canonical text of a schema (ending with a newline)."""
    table_names = colliding([t.name.name for t in schema.tables])
    blocks = [print_table(t, target, table_names) for t in schema.tables]
    deferred = []
    for table in schema.tables:
        forced = colliding([c.name for c in table.columns])
        for fk in table.foreign_keys:
            if fk.deferred:
                cols = ", ".join(quote(c, target, force=c in forced) for c in fk.columns)
                ref = _references(fk, target, None, lambda n: _table_name(n, target, table_names))
                name = _table_name(table.name, target, table_names)
                deferred.append(f"ALTER TABLE {name} ADD FOREIGN KEY ({cols}) {ref};")
    if deferred:
        blocks.append("-- Foreign keys closing a cycle\n" + "\n".join(deferred) + "\n")
    return f"-- Dialect: {target}\n" + "\n".join(blocks)


def _table_name(name: QualifiedName, target: str, colliding_tables) -> str:
    out = quote(name.name, target, force=name.name in colliding_tables)
    return f"{quote(name.schema, target)}.{out}" if name.schema else out


def print_table(table: Table, target: str, colliding_tables: set[str] = frozenset()) -> str:
    forced = colliding([c.name for c in table.columns])

    def q(name: str) -> str:
        return quote(name, target, force=name in forced)

    def tq(name: QualifiedName) -> str:
        return _table_name(name, target, colliding_tables)

    inline_fk: dict[str, ForeignKey] = {}
    table_fks: list[ForeignKey] = []
    for fk in table.foreign_keys:
        if fk.deferred:
            continue
        if len(fk.columns) == 1 and fk.columns[0] not in inline_fk:
            inline_fk[fk.columns[0]] = fk
        else:
            table_fks.append(fk)
    single_pk = table.primary_key[0] if len(table.primary_key) == 1 else None

    lines: list[tuple[str, str | None]] = []
    for column in table.columns:
        parts = [q(column.name), column.type_sql]
        if column.name == single_pk:
            parts.append("PRIMARY KEY")
            if target == "sqlite" and column.identity:
                parts.append("AUTOINCREMENT")
        if column.not_null and column.name not in table.primary_key:
            parts.append("NOT NULL")
        if column.unique and column.name != single_pk:
            parts.append("UNIQUE")
        if column.default is not None:
            parts.append("DEFAULT " + _expr(column.default, target))
        if column.computed is not None:
            parts.append(f"GENERATED ALWAYS AS ({_expr(column.computed, target)}) STORED")
        for check in column.checks:
            parts.append(f"CHECK ({_expr(check, target)})")
        fk = inline_fk.get(column.name)
        if fk is not None:
            parts.append(_references(fk, target, q if fk.ref_table == table.name else None, tq))
        lines.append((" ".join(parts), column.comment))
    if len(table.primary_key) > 1:
        lines.append((f"PRIMARY KEY ({', '.join(q(c) for c in table.primary_key)})", None))
    for cols in table.uniques:
        lines.append((f"UNIQUE ({', '.join(q(c) for c in cols)})", None))
    for fk in table_fks:
        head = f"FOREIGN KEY ({', '.join(q(c) for c in fk.columns)}) "
        lines.append((head + _references(fk, target, q if fk.ref_table == table.name else None, tq), None))
    for check in table.checks:
        lines.append((f"CHECK ({_expr(check, target)})", None))

    out = [f"-- Table: {table.name}", f"CREATE TABLE {tq(table.name)} ("]
    for i, (text, comment) in enumerate(lines):
        comma = "," if i < len(lines) - 1 else ""
        out.append(f"  {text}{comma}" + (f" -- {comment}" if comment else ""))
    out.append(");")
    return "\n".join(out) + "\n"


def _references(fk: ForeignKey, target: str, own_quote, tq) -> str:
    from hive_data.ddl.identifiers import quote as plain

    qc = own_quote or (lambda n: plain(n, target))
    text = f"REFERENCES {tq(fk.ref_table)}({', '.join(qc(c) for c in fk.ref_columns)})"
    for option in fk.options:
        text += " " + option
    return text


def _expr(node: exp.Expr, target: str) -> str:
    return apply_identifier_policy(node, target).sql(dialect=target, comments=False)
