"""Rewrite steps over the table model, applied in order by `normalize_ddl` (see `RULES`).

Each step takes a `Schema` (and the normalization context), rewrites it in place and returns it,
so each can be tested alone and adding a rule means adding a function and a line in `RULES`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from sqlglot import exp

import hive_data.ddl.types as ddl_types
from hive_core.errors import DDLError
from hive_data.ddl.model import ForeignKey, QualifiedName, Schema, Table


@dataclass
class Context:
    read: str
    target: str
    source: str | None = None


def expand_inheritance(schema: Schema, ctx: Context) -> Schema:
    """Give tables created with INHERITS (parent) the parent's columns first (with their NOT NULL,
    defaults and checks, as PostgreSQL does), and partitions (PARTITION OF parent) the parent's
    columns and keys."""
    done: set[int] = set()

    def expand(table: Table, trail: tuple[int, ...]) -> None:
        if table.parent is None or id(table) in done:
            return
        if id(table) in trail:
            raise DDLError(
                f"{table.name} inherits from itself", file=ctx.source, line=table.line, col=table.col
            )
        parent = schema.find(table.parent)
        if parent is None:
            raise DDLError(
                f"{table.name} inherits from {table.parent}, which this input does not create",
                file=ctx.source,
                line=table.line,
                col=table.col,
            )
        expand(parent, (*trail, id(table)))
        own = {c.name for c in table.columns}
        inherited = [copy.copy(c) for c in parent.columns if c.name not in own]
        for c in inherited:
            c.checks = list(c.checks)
            c.identity = False  # the child shares the parent's sequence: a plain default, not its own
        table.columns = inherited + table.columns
        if table.partition:
            table.primary_key = table.primary_key or list(parent.primary_key)
            table.uniques = [*parent.uniques, *table.uniques]
            table.foreign_keys = [copy.copy(fk) for fk in parent.foreign_keys] + table.foreign_keys
        for cols in [table.primary_key, *table.uniques, *(fk.columns for fk in table.foreign_keys)]:
            for i, name in enumerate(cols):
                col = table.column(name)
                if col is None:
                    raise DDLError(
                        f"table {table.name} has a key on unknown column {name!r}",
                        file=ctx.source,
                        line=table.line,
                        col=table.col,
                    )
                cols[i] = col.name
        done.add(id(table))

    for table in schema.tables:
        expand(table, ())
    return schema


def resolve_references(schema: Schema, ctx: Context) -> Schema:
    """Point every foreign key at a table of the input by its spelling there; a reference without
    columns resolves to the target's primary key. References to tables not in the input are kept
    and reported."""
    for table in schema.tables:
        for fk in table.foreign_keys:
            target = schema.find(fk.ref_table)
            if target is None:
                schema.warnings.append(
                    f"{table.name}: foreign key ({', '.join(fk.columns)}) references {fk.ref_table}, "
                    "which is not in the input"
                )
                if not fk.ref_columns:
                    raise DDLError(
                        f"{table.name}: REFERENCES {fk.ref_table} without columns, and that table is not "
                        "in the input",
                        file=ctx.source,
                        line=table.line,
                        col=table.col,
                    )
                continue
            fk.ref_table = target.name
            if not fk.ref_columns:
                if len(target.primary_key) != len(fk.columns):
                    raise DDLError(
                        f"{table.name}: REFERENCES {target.name} without columns, but its primary key "
                        f"has {len(target.primary_key)} column(s)",
                        file=ctx.source,
                        line=table.line,
                        col=table.col,
                    )
                fk.ref_columns = list(target.primary_key)
            else:
                resolved = []
                for name in fk.ref_columns:
                    col = target.column(name)
                    if col is None:
                        raise DDLError(
                            f"{table.name}: foreign key references unknown column {target.name}.{name}",
                            file=ctx.source,
                            line=table.line,
                            col=table.col,
                        )
                    resolved.append(col.name)
                fk.ref_columns = resolved
    return schema


def dedupe_constraints(schema: Schema, ctx: Context) -> Schema:
    """One copy of each key: an inline REFERENCES repeated as a table-level FOREIGN KEY is emitted
    once, likewise UNIQUE sets that repeat each other or the primary key."""
    for table in schema.tables:
        seen: dict[tuple, ForeignKey] = {}
        kept = []
        for fk in table.foreign_keys:
            key = (tuple(fk.columns), fk.ref_table, tuple(fk.ref_columns))
            if key in seen:
                first = seen[key]
                first.options = first.options or fk.options
                continue
            seen[key] = fk
            kept.append(fk)
        table.foreign_keys = kept
        uniques, seen_sets = [], {tuple(table.primary_key)}
        for cols in table.uniques:
            if len(cols) == 1:
                table.column(cols[0]).unique = True
            elif tuple(cols) not in seen_sets:
                seen_sets.add(tuple(cols))
                uniques.append(cols)
        table.uniques = uniques
        if len(table.primary_key) == 1:
            table.column(table.primary_key[0]).unique = False
    return schema


def map_types(schema: Schema, ctx: Context) -> Schema:
    """Give every column a type from the target's closed vocabulary (`types.py`); ENUMs become TEXT
    with a CHECK listing their values where the target has no ENUM."""
    for table in schema.tables:
        keyed = {c for cols in _keys(table) for c in cols}
        for column in table.columns:
            if column.dtype is None:
                column.dtype = _referenced_type(schema, table, column.name)
            cat = ddl_types.category(column.dtype, ctx.read)
            if cat is None:
                raise DDLError(
                    f"column {column.name!r} of {table.name}: type "
                    f"{column.dtype.sql(dialect=ctx.read) if column.dtype else '?'} has no mapping",
                    file=ctx.source,
                    line=column.line,
                    col=column.col,
                )
            if cat == "enum":
                values = ddl_types.enum_values(column.dtype)
                if ctx.target == "mysql":
                    column.type_sql = "ENUM(" + ", ".join(exp.Literal.string(v).sql() for v in values) + ")"
                else:
                    column.type_sql = ddl_types.spell(column.dtype, cat, ctx.target)
                    check = exp.In(
                        this=exp.column(column.name, quoted=column.quoted),
                        expressions=[exp.Literal.string(v) for v in values],
                    )
                    if not any(c == check for c in column.checks):
                        column.checks.insert(0, check)
                continue
            if cat in ("date", "timestamp", "timestamptz") and isinstance(column.default, exp.Literal):
                if column.default.is_string and column.default.name.startswith("0000-00-00"):
                    # MySQL's zero date is no date anywhere else; the default is dropped, and said so
                    schema.warnings.append(f"{table.name}.{column.name}: zero-date default dropped")
                    column.default = None
            if cat in ("boolean", "bit") and isinstance(column.default, exp.Literal):
                if not column.default.is_string and column.default.name in ("0", "1"):
                    column.default = exp.true() if column.default.name == "1" else exp.false()
            identity = column.identity and cat in ("integer", "smallint", "bigint", "decimal")
            if ctx.target == "sqlite" and identity and table.primary_key != [column.name]:
                identity = False  # SQLite auto-increments only its INTEGER PRIMARY KEY
            column.identity = identity
            column.type_sql = ddl_types.spell(column.dtype, cat, ctx.target, identity=identity)
            if cat in ("text", "uuid") and "text:key" in ddl_types.VOCABULARY[ctx.target]:
                if column.name in keyed:
                    column.type_sql = ddl_types.VOCABULARY[ctx.target]["text:key"]
    return schema


def _keys(table: Table) -> list[list[str]]:
    """Column sets an index backs: primary key, unique sets, foreign keys (both ends are indexed)."""
    unique = [[c.name] for c in table.columns if c.unique]
    return [table.primary_key, *table.uniques, *unique, *(fk.columns for fk in table.foreign_keys)]


def check_target_names(schema: Schema, ctx: Context) -> Schema:
    """MySQL and SQLite compare column names without case, even quoted ones: two names of one table
    that differ only in case cannot be kept apart there."""
    if ctx.target == "postgres":
        return schema
    for table in schema.tables:
        seen: dict[str, str] = {}
        for column in table.columns:
            other = seen.setdefault(column.name.lower(), column.name)
            if other != column.name:
                raise DDLError(
                    f"columns {other!r} and {column.name!r} of {table.name} differ only in case, which "
                    f"{ctx.target} cannot keep apart",
                    file=ctx.source,
                    line=column.line,
                    col=column.col,
                )
    return schema


def _referenced_type(schema: Schema, table: Table, name: str):
    """A typeless (SQLite) column that references another column holds that column's values: take
    its type, so the key compares like with like (PostgreSQL requires it)."""
    for fk in table.foreign_keys:
        if name in fk.columns:
            target = schema.find(fk.ref_table)
            ref = target.column(fk.ref_columns[fk.columns.index(name)]) if target else None
            if ref is not None and ref.dtype is not None:
                dtype = ref.dtype.copy()
                if dtype.this in ddl_types.SERIALS:
                    dtype = exp.DataType.build(ddl_types.SERIALS[dtype.this])
                return dtype
    return None


def strip_schema_qualifiers(schema: Schema, ctx: Context) -> Schema:
    """Drop `schema.` from table names when all tables come from (at most) one schema."""
    schemas = {t.name.schema for t in schema.tables if t.name.schema is not None}
    if len(schemas) > 1:
        return schema
    only = next(iter(schemas), None)
    for table in schema.tables:
        table.name = QualifiedName(table.name.name, None, table.name.quoted)
        for fk in table.foreign_keys:
            if fk.ref_table.schema in (None, only):
                fk.ref_table = QualifiedName(fk.ref_table.name, None, fk.ref_table.quoted)
    seen: dict[str, object] = {}
    for table in schema.tables:
        if table.name.name in seen:
            raise DDLError(
                f"table {table.name.name} is created twice", file=ctx.source, line=table.line, col=table.col
            )
        seen[table.name.name] = table
    return schema


def order_by_dependencies(schema: Schema, ctx: Context) -> Schema:
    """Order tables so that referenced tables come first, keeping the original order otherwise
    (the ready table created earliest goes next).

    A foreign-key cycle cannot be created in any order: the earliest table of the cycle keeps its
    place, its foreign keys to tables not yet created are marked `deferred` (printed as ALTER TABLE
    after all tables, so the output still executes) and the cycle is reported.
    """
    tables = schema.tables
    index = {id(t): i for i, t in enumerate(tables)}
    deps: dict[int, set[int]] = {}
    for i, table in enumerate(tables):
        deps[i] = set()
        for fk in table.foreign_keys:
            target = schema.find(fk.ref_table)
            if target is not None and target is not table:
                deps[i].add(index[id(target)])
    placed: list[int] = []
    done: set[int] = set()
    pending = list(range(len(tables)))
    while pending:
        ready = [i for i in pending if deps[i] <= done]
        if ready:
            nxt = ready[0]
        else:
            nxt = _cycle_entry(pending, deps, done)
            table = tables[nxt]
            for fk in table.foreign_keys:
                target = schema.find(fk.ref_table)
                if target is not None and index[id(target)] not in done and target is not table:
                    fk.deferred = True
                    schema.warnings.append(
                        f"foreign-key cycle: {table.name}({', '.join(fk.columns)}) -> {target.name} is "
                        "added by ALTER TABLE after the tables"
                    )
        placed.append(nxt)
        done.add(nxt)
        pending.remove(nxt)
    schema.tables = [tables[i] for i in placed]
    return schema


def _cycle_entry(pending: list[int], deps: dict[int, set[int]], done: set[int]) -> int:
    """The earliest table of a cycle whose members wait only on each other."""
    pend = set(pending)

    def reach(start: int) -> set[int]:
        seen, stack = set(), [start]
        while stack:
            for d in deps[stack.pop()] & pend:
                if d not in seen:
                    seen.add(d)
                    stack.append(d)
        return seen

    reachable = {i: reach(i) for i in pending}
    for i in pending:  # in original order
        # i is on a cycle, and everything it waits for waits (transitively) for i again
        if i in reachable[i] and all(i in reachable[j] for j in reachable[i]):
            return i
    return pending[0]


RULES = (
    expand_inheritance,
    resolve_references,
    dedupe_constraints,
    map_types,
    strip_schema_qualifiers,
    order_by_dependencies,
    check_target_names,
)
