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
from hive_data.ddl.model import Column, ForeignKey, QualifiedName, Schema, Table


def print_schema(schema: Schema, target: str) -> str:
    """The canonical text of a schema (ending with a newline)."""
    names = _Names(schema, target)
    blocks = [print_table(t, target, names) for t in schema.tables]
    deferred = []
    for table in schema.tables:
        for fk in table.foreign_keys:
            if fk.deferred:
                cols = ", ".join(names.column(table.name, c) for c in fk.columns)
                ref = _references(fk, names)
                deferred.append(f"ALTER TABLE {names.table(table.name)} ADD FOREIGN KEY ({cols}) {ref};")
    if deferred:
        blocks.append("-- Foreign keys closing a cycle\n" + "\n".join(deferred) + "\n")
    return f"-- Dialect: {target}\n" + "\n".join(blocks)


class _Names:
    """Quoting for one schema: the policy, plus forced quotes for names that differ only in case
    (tables among tables, columns within their table) so the target keeps them apart."""

    def __init__(self, schema: Schema, target: str):
        self.target = target
        self.tables = colliding([t.name.name for t in schema.tables])
        self.columns = {t.name: colliding([c.name for c in t.columns]) for t in schema.tables}

    def table(self, name: QualifiedName) -> str:
        out = quote(name.name, self.target, force=name.name in self.tables)
        return f"{quote(name.schema, self.target)}.{out}" if name.schema else out

    def column(self, table: QualifiedName, name: str) -> str:
        return quote(name, self.target, force=name in self.columns.get(table, ()))

    def expr(self, node: exp.Expr, table: QualifiedName) -> str:
        node = apply_identifier_policy(node, self.target)
        forced = self.columns.get(table, ())
        for ident in node.find_all(exp.Identifier):
            if ident.this in forced:
                ident.set("quoted", True)
        return node.sql(dialect=self.target, comments=False)


def print_table(table: Table, target: str, names: _Names | None = None) -> str:
    """One table's `-- Table:` block."""
    names = names or _Names(Schema([table]), target)

    def q(name: str) -> str:
        return names.column(table.name, name)

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
            parts.append("DEFAULT " + _default(column, names, table.name, target))
        if column.computed is not None:
            parts.append(f"GENERATED ALWAYS AS ({names.expr(column.computed, table.name)}) STORED")
        for check in column.checks:
            parts.append(f"CHECK ({names.expr(check, table.name)})")
        fk = inline_fk.get(column.name)
        if fk is not None:
            parts.append(_references(fk, names))
        lines.append((" ".join(parts), column.comment))
    if len(table.primary_key) > 1:
        lines.append((f"PRIMARY KEY ({', '.join(q(c) for c in table.primary_key)})", None))
    for cols in table.uniques:
        lines.append((f"UNIQUE ({', '.join(q(c) for c in cols)})", None))
    for fk in table_fks:
        head = f"FOREIGN KEY ({', '.join(q(c) for c in fk.columns)}) "
        lines.append((head + _references(fk, names), None))
    for check in table.checks:
        lines.append((f"CHECK ({names.expr(check, table.name)})", None))

    out = [f"-- Table: {table.name}", f"CREATE TABLE {names.table(table.name)} ("]
    for i, (text, comment) in enumerate(lines):
        comma = "," if i < len(lines) - 1 else ""
        out.append(f"  {text}{comma}" + (f" -- {comment}" if comment else ""))
    out.append(");")
    return "\n".join(out) + "\n"


def _default(column: Column, names: _Names, table: QualifiedName, target: str) -> str:
    """A column's DEFAULT value. SQLite takes a bare literal, signed number, NULL, TRUE/FALSE or
    CURRENT_* but any other expression only in parentheses; so does MySQL 8 (CURRENT_TIMESTAMP on a
    DATETIME excepted), which also takes TEXT, BLOB and JSON defaults only as parenthesized
    expressions. (Reading the parentheses back drops them: the output stays a fixed point.)"""
    node = column.default
    text = names.expr(node, table)
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        node = node.this  # a signed number is a literal to both
    if target == "sqlite" and not isinstance(node, (*_LITERALS, *_CLOCKS)):
        return f"({text})"
    if target == "mysql":
        blob = column.type_sql.startswith(("TEXT", "BLOB", "JSON"))
        clock = isinstance(node, exp.CurrentTimestamp) and column.type_sql == "DATETIME"
        if blob or not (isinstance(node, _LITERALS) or clock):
            return f"({text})"
    return text


_LITERALS = (exp.Literal, exp.Boolean, exp.Null, exp.HexString, exp.BitString)
_CLOCKS = (exp.CurrentDate, exp.CurrentTime, exp.CurrentTimestamp)


def _references(fk: ForeignKey, names: _Names) -> str:
    cols = ", ".join(names.column(fk.ref_table, c) for c in fk.ref_columns)
    text = f"REFERENCES {names.table(fk.ref_table)}({cols})"
    for option in fk.options:
        text += " " + option
    return text
