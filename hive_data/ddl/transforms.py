"""Rewrite steps over the table model, applied in order by `normalize_ddl` (see `RULES`).

Each step takes a `Schema` (and the normalization context), rewrites it in place and returns it,
so each can be tested alone and adding a rule means adding a function and a line in `RULES`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

import hive_data.ddl.types as ddl_types
from hive_core.errors import DDLError
from hive_data.ddl.model import Column, ForeignKey, QualifiedName, Schema, Table


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


def infer_key_types(schema: Schema, ctx: Context) -> Schema:
    """A SQLite column without a type, or with a type name hive does not know (`my_key_type`), takes
    the type of the nearest column it is linked with by foreign keys: what it references first (down a
    chain), else what references it. It holds the same values, and PostgreSQL and MySQL refuse a key
    between unlike types. Unlinked, a typeless column stays TEXT and an unknown name keeps SQLite's
    affinity (`types.sqlite_affinity`). Decided on the input as read, so the order of tables does not
    matter."""
    links = _links(schema)
    found: list[tuple[Table, Column, Table, Column]] = []
    for table in schema.tables:
        for column in table.columns:
            if column.dtype is None or ddl_types.is_affinity_type(column.dtype, ctx.read):
                source = _nearest_typed(table, column, links, ctx)
                if source is not None:
                    found.append((table, column, *source))
                elif column.dtype is not None:
                    affinity = _AFFINITY[ddl_types.category(column.dtype, ctx.read)]
                    schema.warnings.append(
                        f"{table.name}.{column.name}: type {column.dtype.sql(dialect='sqlite')} is no SQL "
                        f"type; read as SQLite reads it ({affinity} affinity)"
                    )
    for table, column, src_table, src in found:
        if column.dtype is not None:  # a typeless column taking its key's type is the documented reading
            schema.warnings.append(
                f"{table.name}.{column.name}: type {column.dtype.sql(dialect='sqlite')} is no SQL type; "
                f"it takes the type of {src_table.name}.{src.name}, which it is linked with by a foreign key"
            )
        column.dtype = _plain(src.dtype)
    return schema


_AFFINITY = {"integer": "INTEGER", "text": "TEXT", "binary": "BLOB", "double": "REAL", "decimal": "NUMERIC"}


def _links(schema: Schema) -> dict[int, list[tuple[Table, Column]]]:
    """The columns each column is tied to by foreign keys, keyed by `id(column)`: the columns it
    references first, then those referencing it. Keys to tables outside the input tie nothing."""
    out: dict[int, list[tuple[Table, Column]]] = {}
    back: dict[int, list[tuple[Table, Column]]] = {}
    for table, column, ref_table, ref in _fk_pairs(schema):
        out.setdefault(id(column), []).append((ref_table, ref))
        back.setdefault(id(ref), []).append((table, column))
    for key, tied in back.items():
        out.setdefault(key, []).extend(tied)
    return out


def _fk_pairs(schema: Schema):
    """Every (table, column, referenced table, referenced column) of the foreign keys between tables
    of the input, in table and key order."""
    for table in schema.tables:
        for fk in table.foreign_keys:
            ref_table = schema.find(fk.ref_table)
            if ref_table is None:
                continue
            for name, ref_name in zip(fk.columns, fk.ref_columns):
                column, ref = table.column(name), ref_table.column(ref_name)
                if column is not None and ref is not None:
                    yield table, column, ref_table, ref


def _nearest_typed(table: Table, column: Column, links, ctx: Context) -> tuple[Table, Column] | None:
    """Breadth-first over foreign-key ties: the first column with a type hive knows, else (for a
    typeless column) the first with a type name SQLite reads by affinity."""
    seen, queue, guess = {id(column)}, [(table, column)], None
    while queue:
        nxt = []
        for _, col in queue:
            for tied_table, tied in links.get(id(col), ()):
                if id(tied) in seen:
                    continue
                seen.add(id(tied))
                nxt.append((tied_table, tied))
                if tied.dtype is None:
                    continue
                if not ddl_types.is_affinity_type(tied.dtype, ctx.read):
                    return tied_table, tied
                guess = guess or (tied_table, tied)
        queue = nxt
    return guess if column.dtype is None else None


def _plain(dtype: exp.DataType) -> exp.DataType:
    """A copy of a type without its auto-increment (a key column holds the values, it does not count)."""
    if dtype.this in ddl_types.SERIALS:
        return exp.DataType.build(ddl_types.SERIALS[dtype.this])
    return dtype.copy()


def sequence_defaults(schema: Schema, ctx: Context) -> Schema:
    """A default drawn from a sequence (`nextval('s')`, read by `build` already, and T-SQL
    `NEXT VALUE FOR s`) makes the column auto-increment, since sequences are not part of the output; a
    sequence inside a larger default expression cannot be kept, so that default is dropped and said so."""
    for table in schema.tables:
        for column in table.columns:
            value = column.default
            if value is None:
                continue
            if isinstance(value, exp.NextValueFor):
                column.identity, column.default = True, None
            elif any(_is_sequence_call(node) for node in value.walk()):
                schema.warnings.append(
                    f"{table.name}.{column.name}: default {value.sql(dialect=ctx.read)} draws from a "
                    "sequence, which the output does not hold; dropped"
                )
                column.default = None
    return schema


def _is_sequence_call(node: exp.Expr) -> bool:
    return isinstance(node, exp.NextValueFor) or (
        isinstance(node, exp.Anonymous) and node.name.lower() == "nextval"
    )


def limit_auto_increment(schema: Schema, ctx: Context) -> Schema:
    """Keep auto-increment only where the target can have it, else drop it and say so: SQLite counts
    only in its INTEGER PRIMARY KEY (the primary key's one column); MySQL counts in one column per
    table, which must lead a key (the primary key or a UNIQUE). PostgreSQL's SERIAL goes anywhere."""
    for table in schema.tables:
        counting = [c for c in table.columns if c.identity]
        if not counting or ctx.target == "postgres":
            continue
        if ctx.target == "sqlite":
            allowed = table.primary_key[:1] if len(table.primary_key) == 1 else []
            why = "SQLite auto-increments only a single-column INTEGER PRIMARY KEY"
        else:
            leading = [table.primary_key[:1], *(u[:1] for u in table.uniques)]
            keys = {c.name for c in table.columns if c.unique} | {n for cols in leading for n in cols}
            allowed = [c.name for c in counting if c.name in keys][:1]
            why = "MySQL auto-increments one column per table, and only one that leads a key"
        for column in counting:
            if column.name not in allowed:
                column.identity = False
                schema.warnings.append(f"{table.name}.{column.name}: auto-increment dropped ({why})")
    return schema


def map_types(schema: Schema, ctx: Context) -> Schema:
    """Give every column a type from the target's closed vocabulary (`types.py`); ENUMs become TEXT
    with a CHECK listing their values where the target has no ENUM."""
    for table in schema.tables:
        keyed = {c for cols in _keys(table) for c in cols}
        for column in table.columns:
            cat = ddl_types.category(column.dtype, ctx.read)
            if cat is None:
                raise DDLError(
                    f"column {column.name!r} of {table.name}: type "
                    f"{column.dtype.sql(dialect=ctx.read) if column.dtype else '?'} has no mapping",
                    file=ctx.source,
                    line=column.line,
                    col=column.col,
                )
            if cat == "enum" and ctx.target != "mysql":
                check = exp.In(
                    this=exp.column(column.name, quoted=column.quoted),
                    expressions=[exp.Literal.string(v) for v in ddl_types.enum_values(column.dtype)],
                )
                if not any(c == check for c in column.checks):
                    column.checks.insert(0, check)
            if cat in ("date", "timestamp", "timestamptz") and isinstance(column.default, exp.Literal):
                if column.default.is_string and column.default.name.startswith("0000-00-00"):
                    # MySQL's zero date is no date anywhere else; the default is dropped, and said so
                    schema.warnings.append(f"{table.name}.{column.name}: zero-date default dropped")
                    column.default = None
            _spell_column(column, cat, column.name in keyed, ctx)
    return schema


def _spell_column(column: Column, cat: str, keyed: bool, ctx: Context) -> None:
    """Set `column.type_sql` to the target's spelling of `cat`; auto-increment survives only on
    integer-like categories (SERIAL / AUTO_INCREMENT / AUTOINCREMENT need a number)."""
    if cat == "enum":
        column.identity = False
        if ctx.target == "mysql":
            values = ddl_types.enum_values(column.dtype)
            column.type_sql = "ENUM(" + ", ".join(exp.Literal.string(v).sql() for v in values) + ")"
        else:
            column.type_sql = ddl_types.spell(column.dtype, cat, ctx.target)
        return
    column.identity = column.identity and cat in _COUNTING
    column.type_sql = ddl_types.spell(column.dtype, cat, ctx.target, identity=column.identity)
    if cat in ("text", "uuid") and keyed and "text:key" in ddl_types.VOCABULARY[ctx.target]:
        column.type_sql = ddl_types.VOCABULARY[ctx.target]["text:key"]


_COUNTING = ("integer", "smallint", "bigint", "decimal")  # categories an auto-increment can count in


def unify_key_types(schema: Schema, ctx: Context) -> Schema:
    """Give the two columns of a foreign key types the target accepts together (`types.fk_accepts`).
    Where one key is refused, every column tied to it by foreign keys (down chains, around cycles)
    takes one type: the type of their root (the first referenced column that references none of
    them; in a pure cycle the first referenced one), widened to the widest integer or decimal among
    them when the root is one. A key's values are the referenced column's values, so nothing is lost.
    Each changed column is reported; one that changes family (say text to integer) also loses its
    default and CHECKs, written for the old type. Accepted keys are left as they are."""
    pairs = list(_fk_pairs(schema))
    group = _union(pairs)
    refused = {
        group[id(c)] for _, c, _, r in pairs if not ddl_types.fk_accepts(c.type_sql, r.type_sql, ctx.target)
    }
    referencing = {id(c) for _, c, _, _ in pairs}
    referenced = {id(r) for _, _, _, r in pairs}
    members: dict[int, list[tuple[Table, Column, bool]]] = {}
    for table in schema.tables:
        keyed = {c for cols in _keys(table) for c in cols}
        for column in table.columns:
            if group.get(id(column)) in refused:
                members.setdefault(group[id(column)], []).append((table, column, column.name in keyed))
    for tied in members.values():
        heads = [m for m in tied if id(m[1]) in referenced]
        root_table, root, _ = next((m for m in heads if id(m[1]) not in referencing), heads[0])
        dtype, cat = ddl_types.widest(
            [(root.dtype, _cat(root, ctx))] + [(c.dtype, _cat(c, ctx)) for _, c, _ in tied]
        )
        for table, column, keyed in tied:
            target_sql = _spelled(dtype, cat, keyed, column.identity, ctx)
            if ddl_types.fk_base(column.type_sql, ctx.target) == ddl_types.fk_base(target_sql, ctx.target):
                continue
            before, old_cat = column.type_sql, _cat(column, ctx)
            column.dtype = _plain(dtype) if dtype is not None else None
            _spell_column(column, cat, keyed, ctx)
            note = (
                f"{table.name}.{column.name}: type {before} changed to {column.type_sql} to match the "
                f"foreign keys it shares with {root_table.name}.{root.name}"
            )
            if ddl_types.family(old_cat) != ddl_types.family(cat):
                note += _drop_typed_constraints(column, ctx)
            schema.warnings.append(note)
    return schema


def _drop_typed_constraints(column: Column, ctx: Context) -> str:
    """Drop a column's default and CHECKs, written for the values of its old type (an ENUM's value
    list, `length(c) > 2`): under another family they would not compile. Says what was dropped."""
    dropped = []
    if column.default is not None:
        dropped.append(f"its default {column.default.sql(dialect=ctx.target)}")
        column.default = None
    if column.checks:
        dropped.append(f"its CHECK ({') CHECK ('.join(c.sql(dialect=ctx.target) for c in column.checks)})")
        column.checks = []
    return "; " + " and ".join(dropped) + " dropped" if dropped else ""


def _union(pairs) -> dict[int, int]:
    """Union-find over the columns of foreign-key pairs: `id(column)` -> its group's representative."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for _, column, _, ref in pairs:
        parent[find(id(column))] = find(id(ref))
    return {x: find(x) for x in list(parent)}


def _cat(column: Column, ctx: Context) -> str:
    return ddl_types.category(column.dtype, ctx.read) or "text"


def _spelled(dtype: exp.DataType | None, cat: str, keyed: bool, identity: bool, ctx: Context) -> str:
    """How a column of this type would be printed (without changing any column)."""
    probe = Column("", dtype, identity=identity)
    _spell_column(probe, cat, keyed, ctx)
    return probe.type_sql


def bit_literal_defaults(schema: Schema, ctx: Context) -> Schema:
    """Defaults of BOOLEAN columns given as bits (`b'0'`, `0x01`, `'1'::bit`, T-SQL's `0`/`1`) become
    FALSE/TRUE (any non-zero bit is true), and bit or hex literals on integer columns their number:
    PostgreSQL reads `b'1'` and `x'01'` as BIT strings, which no BOOLEAN or INTEGER takes, and SQLite
    reads `x'01'` as a BLOB."""
    for table in schema.tables:
        for column in table.columns:
            value = _bit_value(column.default)
            if value is None:
                continue
            cat = _cat(column, ctx)
            if cat in ("boolean", "bit"):
                column.default = exp.true() if value else exp.false()
            elif cat in _COUNTING and not isinstance(column.default, exp.Literal):
                column.default = exp.Literal.number(value)
    return schema


def _bit_value(node: exp.Expr | None) -> int | None:
    """The number a bit-like default stands for: a bit or hex string, a 0/1 number (not a string), or
    a string cast to BIT or BOOLEAN; None for anything else."""
    if isinstance(node, exp.BitString):
        return int(node.name or "0", 2)
    if isinstance(node, exp.HexString):
        return int(node.name or "0", 16)
    if isinstance(node, exp.Literal) and not node.is_string and node.name in ("0", "1"):
        return int(node.name)
    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Literal) and node.this.name in ("0", "1"):
        to = node.args.get("to")
        if isinstance(to, exp.DataType) and to.this in (exp.DataType.Type.BIT, exp.DataType.Type.BOOLEAN):
            return int(node.this.name)
    return None


# UUID generators sqlglot leaves as plain calls (it reads UUID(), NEWID() and gen_random_uuid() as
# exp.Uuid already): the uuid-ossp extension's, which a bare PostgreSQL lacks, and T-SQL's.
_UUID_CALLS = {"uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "newsequentialid"}
# SQLite has no UUID function: 16 random bytes as 32 hex digits are its usual stand-in.
_SQLITE_UUID = "LOWER(HEX(RANDOMBLOB(16)))"


def uuid_defaults(schema: Schema, ctx: Context) -> Schema:
    """UUID generators in defaults (`UUID()`, `NEWID()`, `NEWSEQUENTIALID()`, `uuid_generate_v4()`,
    `gen_random_uuid()`, schema-qualified or not) become the target's own: `gen_random_uuid()` in
    PostgreSQL (built in since 13), `UUID()` in MySQL, and in SQLite `lower(hex(randomblob(16)))`
    (random, but 32 hex digits rather than the dashed form; reported)."""
    for table in schema.tables:
        for column in table.columns:
            if column.default is None:
                continue
            calls = [n for n in column.default.walk() if _is_uuid_call(n)]
            if not calls:
                continue
            for node in calls:
                if isinstance(node.parent, exp.Dot) and node.parent.expression is node:
                    node = node.parent  # public.uuid_generate_v4(): the qualifier goes with the call
                new = exp.Uuid() if ctx.target != "sqlite" else _sqlite_uuid()
                if node is column.default:
                    column.default = new
                else:
                    node.replace(new)
            if ctx.target == "sqlite":
                schema.warnings.append(
                    f"{table.name}.{column.name}: UUID default written as {_SQLITE_UUID} (SQLite has no "
                    "UUID function)"
                )
    return schema


def _is_uuid_call(node: exp.Expr) -> bool:
    return isinstance(node, exp.Uuid) or (
        isinstance(node, exp.Anonymous) and node.name.lower() in _UUID_CALLS
    )


def _sqlite_uuid() -> exp.Expr:
    return sqlglot.parse_one(_SQLITE_UUID, read="sqlite")


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
    after all tables, so the output still executes) and the cycle is reported. SQLite has no ALTER
    TABLE ... ADD FOREIGN KEY but checks references only when rows are written: there the keys stay
    on their columns (reported all the same).
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
                    if ctx.target == "sqlite":  # it resolves references when rows are written
                        schema.warnings.append(
                            f"foreign-key cycle: {table.name}({', '.join(fk.columns)}) -> {target.name} "
                            "stays on its column (SQLite has no ALTER TABLE ADD FOREIGN KEY, and needs none)"
                        )
                        continue
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
    infer_key_types,
    sequence_defaults,
    limit_auto_increment,
    map_types,
    unify_key_types,
    bit_literal_defaults,
    uuid_defaults,
    strip_schema_qualifiers,
    order_by_dependencies,
    check_target_names,
)
