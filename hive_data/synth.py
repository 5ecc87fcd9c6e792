"""Small synthetic databases for a canonical PostgreSQL schema, to execute gold and predicted queries on.

The idea is Spider's test-suite databases: a handful of rows per table, respecting every declared
constraint, with part of the values taken from the literals of the gold query so that its filters
select something. A wrong query rarely returns the gold result on several such databases.

- `parse_schema(text)` reads hive's canonical schema text (`-- Dialect: postgres`, CREATE TABLE,
  cycle-closing `ALTER TABLE ... ADD FOREIGN KEY`) into `Table`s.
- `gold_literals(sql, tables)` finds the literals the gold query compares columns with, by column.
- `synthesize(text, gold, k=3, seed=0)` returns K databases, each a list of SQL statements (one
  INSERT per row, parents first, then UPDATEs that close foreign-key cycles) to run after the schema.

Rows respect types, NOT NULL, PRIMARY KEY and UNIQUE (single and composite), foreign keys (parents are
generated first; a self reference points at an earlier row or the row itself; columns of a foreign key
that closes a cycle are inserted NULL and set by UPDATE once every table has rows) and CHECK
constraints: candidates are evaluated by `check_passes`, a small evaluator of the common CHECK forms;
a form it cannot evaluate is left to PostgreSQL (`hive_data.execute.load_database` keeps the rows the
server accepts). Everything is deterministic for a (schema, gold query, seed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from hive_core.errors import SQLError

ROWS = (3, 8)  # rows per table, inclusive
NULL_SHARE = 0.12  # of the values of nullable, non-key columns
ATTEMPTS = 30  # candidate rows tried before a row is given up (unique or CHECK constraints)

_KINDS = {
    exp.DataType.Type.INT: "int",
    exp.DataType.Type.SMALLINT: "int",
    exp.DataType.Type.BIGINT: "int",
    exp.DataType.Type.SERIAL: "int",
    exp.DataType.Type.SMALLSERIAL: "int",
    exp.DataType.Type.BIGSERIAL: "int",
    exp.DataType.Type.FLOAT: "float",
    exp.DataType.Type.DOUBLE: "float",
    exp.DataType.Type.DECIMAL: "decimal",
    exp.DataType.Type.BOOLEAN: "bool",
    exp.DataType.Type.TEXT: "text",
    exp.DataType.Type.VARCHAR: "text",
    exp.DataType.Type.CHAR: "text",
    exp.DataType.Type.DATE: "date",
    exp.DataType.Type.TIME: "time",
    exp.DataType.Type.TIMETZ: "timetz",
    exp.DataType.Type.TIMESTAMP: "timestamp",
    exp.DataType.Type.TIMESTAMPTZ: "timestamptz",
    exp.DataType.Type.INTERVAL: "interval",
    exp.DataType.Type.VARBINARY: "bytea",
    exp.DataType.Type.JSON: "json",
    exp.DataType.Type.JSONB: "json",
    exp.DataType.Type.UUID: "uuid",
    exp.DataType.Type.XML: "xml",
}
_INT_RANGE = {
    exp.DataType.Type.SMALLINT: 32767,
    exp.DataType.Type.SMALLSERIAL: 32767,
    exp.DataType.Type.INT: 2**31 - 1,
    exp.DataType.Type.SERIAL: 2**31 - 1,
}
_WORDS = (
    "alpha", "bravo", "delta", "echo", "gold", "green", "red", "blue", "London", "Paris", "Tokyo",
    "Anna", "Bob", "Chen", "Dana", "Ravi", "Sara", "north", "south", "main", "open", "closed", "yes",
    "no", "A", "B", "Math", "Art", "Rock", "Jazz",
)  # fmt: skip


def fold(identifier: exp.Identifier | str) -> str:
    """PostgreSQL's name for an identifier: unquoted names fold to lower case."""
    if isinstance(identifier, exp.Identifier):
        return identifier.name if identifier.quoted else identifier.name.lower()
    return identifier.lower()


@dataclass
class Column:
    name: str  # as written in SQL (quoted when the schema quotes it)
    key: str  # PostgreSQL's folded name
    kind: str  # a category of _KINDS, or "tsvector"
    type_sql: str  # the declared type, printed for casts
    array: bool = False
    int_max: int = 2**63 - 1
    precision: int | None = None
    scale: int | None = None
    not_null: bool = False
    generated: bool = False
    checks: list[exp.Expr] = field(default_factory=list)


@dataclass
class ForeignKey:
    columns: tuple[str, ...]  # keys in the referencing table
    table: str  # key of the referenced table
    ref_columns: tuple[str, ...]
    closing: bool = False  # added by ALTER TABLE after all tables: closes a cycle


@dataclass
class Table:
    name: str
    key: str
    columns: dict[str, Column]
    primary: tuple[str, ...] = ()
    uniques: list[tuple[str, ...]] = field(default_factory=list)
    fks: list[ForeignKey] = field(default_factory=list)
    checks: list[exp.Expr] = field(default_factory=list)

    def unique_keys(self) -> list[tuple[str, ...]]:
        return ([self.primary] if self.primary else []) + self.uniques


# --------------------------------------------------------------------------- reading the schema


def parse_schema(text: str) -> dict[str, Table]:
    """Tables of a canonical PostgreSQL schema text, by folded name, in creation order. Raises
    SQLError (with the statement's line) for text sqlglot cannot read as CREATE/ALTER TABLE."""
    try:
        statements = [s for s in sqlglot.parse(text, read="postgres") if s is not None]
    except SqlglotError as err:
        raise SQLError(f"schema does not parse: {str(err).splitlines()[0]}") from None
    tables: dict[str, Table] = {}
    for stmt in statements:
        if isinstance(stmt, exp.Create) and stmt.kind == "TABLE" and isinstance(stmt.this, exp.Schema):
            table = _table(stmt.this)
            tables[table.key] = table
        elif isinstance(stmt, exp.Alter) and fold(stmt.this.this) in tables:
            owner = tables[fold(stmt.this.this)]
            for action in stmt.args.get("actions") or []:
                for fk in action.find_all(exp.ForeignKey):
                    owner.fks.append(_foreign_key(fk, owner, closing=True))
    for table in tables.values():  # a key to a table we do not have cannot be satisfied: ignore it
        table.fks = [fk for fk in table.fks if fk.table in tables]
        for key in table.primary:  # PRIMARY KEY (a, b) makes a and b NOT NULL
            if key in table.columns:
                table.columns[key].not_null = True
    return tables


def _table(schema: exp.Schema) -> Table:
    ident = schema.this.this
    table = Table(name=ident.sql(dialect="postgres"), key=fold(ident), columns={})
    for item in schema.expressions:
        if isinstance(item, exp.ColumnDef):
            col = _column(item)
            table.columns[col.key] = col
            for cons in item.constraints:
                kind = cons.kind
                if isinstance(kind, exp.PrimaryKeyColumnConstraint):
                    table.primary = (col.key,)
                elif isinstance(kind, exp.UniqueColumnConstraint):
                    table.uniques.append((col.key,))
                elif isinstance(kind, exp.Reference):
                    ref = kind.this
                    refs = tuple(fold(i) for i in ref.expressions) if isinstance(ref, exp.Schema) else ()
                    target = ref.this if isinstance(ref, exp.Schema) else ref
                    table.fks.append(ForeignKey((col.key,), fold(target.this), refs))
        elif isinstance(item, exp.PrimaryKey):
            table.primary = tuple(fold(i) for i in item.expressions)
        elif isinstance(item, exp.UniqueColumnConstraint) and isinstance(item.this, exp.Schema):
            table.uniques.append(tuple(fold(i) for i in item.this.expressions))
        elif isinstance(item, exp.ForeignKey):
            table.fks.append(_foreign_key(item, table))
        elif isinstance(item, exp.CheckColumnConstraint):
            table.checks.append(item.this)
    return table  # `REFERENCES t` without columns means t's primary key: resolved when generating


def _foreign_key(fk: exp.ForeignKey, owner: Table, *, closing: bool = False) -> ForeignKey:
    ref = fk.args["reference"].this
    target = ref.this if isinstance(ref, exp.Schema) else ref
    refs = tuple(fold(i) for i in ref.expressions) if isinstance(ref, exp.Schema) else ()
    return ForeignKey(tuple(fold(i) for i in fk.expressions), fold(target.this), refs, closing)


def _column(item: exp.ColumnDef) -> Column:
    dtype = item.args.get("kind")
    array = False
    if dtype is not None and dtype.this == exp.DataType.Type.ARRAY and dtype.expressions:
        array, dtype = True, dtype.expressions[0]
    if dtype is None:
        kind, type_sql = "text", "TEXT"
    else:
        type_sql = dtype.sql(dialect="postgres")
        kind = _KINDS.get(dtype.this)
        if kind is None:
            kind = "tsvector" if type_sql.upper() == "TSVECTOR" else "text"
    col = Column(
        name=item.this.sql(dialect="postgres"),
        key=fold(item.this),
        kind=kind,
        type_sql=type_sql + ("[]" if array else ""),
        array=array,
    )
    if dtype is not None:
        col.int_max = _INT_RANGE.get(dtype.this, 2**63 - 1)
        if kind == "decimal" and dtype.expressions:
            nums = [int(p.this.name) for p in dtype.expressions if isinstance(p.this, exp.Literal)]
            col.precision = nums[0] if nums else None
            col.scale = nums[1] if len(nums) > 1 else 0
    for cons in item.constraints:
        kind_ = cons.kind
        if isinstance(kind_, (exp.NotNullColumnConstraint, exp.PrimaryKeyColumnConstraint)):
            col.not_null = col.not_null or not getattr(kind_, "args", {}).get("allow_null")
        elif isinstance(kind_, (exp.ComputedColumnConstraint, exp.GeneratedAsIdentityColumnConstraint)):
            col.generated = isinstance(kind_, exp.ComputedColumnConstraint) or bool(kind_.args.get("this"))
        elif isinstance(kind_, exp.CheckColumnConstraint):
            col.checks.append(kind_.this)
    return col


# --------------------------------------------------------------------------- literals of the gold query

_COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.Like, exp.ILike)
_WRAPPERS = (
    exp.Cast,
    exp.TryCast,
    exp.Lower,
    exp.Upper,
    exp.Trim,
    exp.Paren,
    exp.Avg,
    exp.Sum,
    exp.Max,
    exp.Min,
)


def _as_column(node: exp.Expr) -> exp.Column | None:
    while isinstance(node, _WRAPPERS):
        node = node.this
    return node if isinstance(node, exp.Column) else None


def _as_literal(node: exp.Expr) -> object:
    """The Python value of a literal operand (a number, a string, a typed date string), else None."""
    while isinstance(node, (exp.Cast, exp.Paren)):
        node = node.this
    if isinstance(node, exp.Neg):
        inner = _as_literal(node.this)
        return -inner if isinstance(inner, (int, float, Decimal)) else None
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        try:
            return int(node.this)
        except ValueError:
            try:
                return Decimal(node.this)
            except InvalidOperation:
                return None
    return None


def _near(value: object, op: type | None = None) -> list[object]:
    """A bound and its neighbours, the one that satisfies `op` (column op value) first, so that `>`,
    `<`, `>=` and `<=` each select some rows and miss others."""
    if isinstance(value, bool):
        return [value]
    if isinstance(value, (int, Decimal)):
        below, above = value - 1, value + 1
    elif isinstance(value, str):
        try:  # dates and timestamps: a day either side
            day = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            below, above = value[:-1], value + "z"
        else:
            shift = dt.timedelta(days=1)
            fmt = (
                (lambda d: d.date().isoformat())
                if len(value.strip()) <= 10
                else (lambda d: d.isoformat(sep=" "))
            )
            below, above = fmt(day - shift), fmt(day + shift)
    else:
        return [value]
    if op in (exp.GT,):
        return [above, value, below]
    if op in (exp.LT,):
        return [below, value, above]
    return [value, below, above]


def _like_example(pattern: str) -> str:
    """A string that a LIKE pattern matches (`%` -> nothing, `_` -> one letter)."""
    out, escaped = [], False
    for ch in pattern:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            continue
        elif ch == "_":
            out.append("x")
        else:
            out.append(ch)
    return "".join(out)


def _parse(sql: str | exp.Expr | None, dialect: str) -> exp.Expr | None:
    if sql is None or isinstance(sql, exp.Expr):
        return sql
    try:
        return sqlglot.parse_one(sql, read=dialect)
    except SqlglotError:
        return None


def _resolver(tree: exp.Expr, tables: dict[str, Table]):
    """col -> [(table_key, column_key)]: a column through the query's table aliases; a column named
    without a table goes to every table of the query that has it (else of the schema)."""
    aliases: dict[str, str] = {}
    in_query: list[str] = []
    for tab in tree.find_all(exp.Table):
        key = fold(tab.this) if isinstance(tab.this, exp.Identifier) else None
        if key in tables:
            in_query.append(key)
            aliases[fold(tab.args["alias"].this) if tab.args.get("alias") else key] = key
    in_query = list(dict.fromkeys(in_query))

    def owners(col: exp.Column | None) -> list[tuple[str, str]]:
        if col is None or not isinstance(col.this, exp.Identifier):
            return []
        name = fold(col.this)
        qualifier = col.args.get("table")
        if qualifier is not None:
            found = [aliases.get(fold(qualifier))] if isinstance(qualifier, exp.Identifier) else []
        else:
            found = [t for t in in_query if name in tables[t].columns]
            found = found or [t for t in tables if name in tables[t].columns]
        return [(t, name) for t in found if t is not None and name in tables[t].columns]

    return owners


def gold_literals(sql: str | exp.Expr, tables: dict[str, Table], dialect: str = "postgres") -> dict:
    """`{(table_key, column_key): [values]}`: the literals the query compares each column with (in
    WHERE, HAVING, ON, IN lists, BETWEEN and LIKE), resolved through the query's table aliases. For
    an inequality the value that satisfies it comes first, then its neighbours. Empty when the query
    does not parse."""
    tree = _parse(sql, dialect)
    if tree is None:
        return {}
    owners = _resolver(tree, tables)
    found: dict[tuple[str, str], list] = {}

    def add(col: exp.Column | None, values: list) -> None:
        for owner in owners(col):
            bucket = found.setdefault(owner, [])
            bucket.extend(v for v in values if v is not None and v not in bucket)

    for node in tree.walk():
        if isinstance(node, _COMPARISONS):
            for a, b, flip in ((node.this, node.expression, False), (node.expression, node.this, True)):
                col, value = _as_column(a), _as_literal(b)
                if col is None or value is None:
                    continue
                if isinstance(node, (exp.Like, exp.ILike)):
                    if isinstance(value, str) and not flip:
                        add(col, [_like_example(value)])
                elif isinstance(node, (exp.EQ, exp.NEQ)):
                    add(col, [value])
                else:
                    op = _FLIP.get(type(node), type(node)) if flip else type(node)
                    add(col, _near(value, op))
        elif isinstance(node, exp.In):
            add(_as_column(node.this), [_as_literal(e) for e in node.expressions])
        elif isinstance(node, exp.Between):
            low, high = _as_literal(node.args["low"]), _as_literal(node.args["high"])
            add(_as_column(node.this), [low, high])
    return found


_FLIP = {exp.GT: exp.LT, exp.LT: exp.GT, exp.GTE: exp.LTE, exp.LTE: exp.GTE}


def gold_joins(sql: str | exp.Expr, tables: dict[str, Table], dialect: str = "postgres") -> list[set]:
    """Groups of columns the query equates (`a.x = b.y`, in ON or WHERE): their values are drawn
    from one shared pool, so that joins on undeclared keys meet."""
    tree = _parse(sql, dialect)
    groups: list[set] = []
    if tree is None:
        return groups
    owners = _resolver(tree, tables)
    for node in tree.find_all(exp.EQ):
        a, b = _as_column(node.this), _as_column(node.expression)
        if a is None or b is None:
            continue
        members = set(owners(a)) | set(owners(b))
        if len(members) < 2:
            continue
        touching = [g for g in groups if g & members]
        for g in touching:
            members |= g
            groups.remove(g)
        groups.append(members)
    return groups


def gold_groups(sql: str | exp.Expr, tables: dict[str, Table], dialect: str = "postgres") -> set:
    """Columns the query groups by or takes distinct values of: a small pool of values makes groups of
    several rows (HAVING COUNT(*) > n needs them) and duplicates (which DISTINCT removes)."""
    tree = _parse(sql, dialect)
    if tree is None:
        return set()
    owners = _resolver(tree, tables)
    out: set = set()
    for group in tree.find_all(exp.Group):
        for expr in group.expressions:
            out.update(owners(_as_column(expr)))
    for select in tree.find_all(exp.Select):  # SELECT DISTINCT a, b: duplicates make it matter
        if select.args.get("distinct") is not None:
            for expr in select.expressions:
                out.update(owners(_as_column(expr.unalias())))
    for distinct in tree.find_all(exp.Distinct):  # COUNT(DISTINCT a)
        if not isinstance(distinct.parent, exp.Select):
            for expr in distinct.expressions:
                out.update(owners(_as_column(expr)))
    return out


# --------------------------------------------------------------------------- CHECK evaluation


class _Unknown(Exception):
    """A CHECK form the evaluator does not cover: PostgreSQL decides."""


def check_passes(check: exp.Expr, row: dict[str, object]) -> bool:
    """Whether a row (column key -> Python value) satisfies a CHECK: true or NULL passes, as in SQL.
    Forms the evaluator does not know count as passing (the server has the last word)."""
    try:
        return _eval(check, row) is not False
    except _Unknown:
        return True
    except (TypeError, ValueError, ArithmeticError):
        return False


def _cmp(op: type, a, b) -> bool | None:
    if a is None or b is None:
        return None
    if isinstance(a, (int, float, Decimal)) and isinstance(b, str):
        b = _to_number(b)
    elif isinstance(b, (int, float, Decimal)) and isinstance(a, str):
        a = _to_number(a)
    if isinstance(a, float) or isinstance(b, float):
        a, b = float(a), float(b)
    if type(a) is not type(b) and not (isinstance(a, (int, Decimal)) and isinstance(b, (int, Decimal))):
        raise _Unknown
    return {
        exp.EQ: lambda: a == b,
        exp.NEQ: lambda: a != b,
        exp.GT: lambda: a > b,
        exp.GTE: lambda: a >= b,
        exp.LT: lambda: a < b,
        exp.LTE: lambda: a <= b,
    }[op]()


def _to_number(text: str):
    try:
        return Decimal(text)
    except InvalidOperation:
        raise _Unknown from None


def _eval(node: exp.Expr, row: dict[str, object]):
    if isinstance(node, exp.Paren):
        return _eval(node.this, row)
    if isinstance(node, exp.Column):
        key = fold(node.this) if isinstance(node.this, exp.Identifier) else None
        if key not in row:
            raise _Unknown
        return row[key]
    if isinstance(node, (exp.Literal, exp.Boolean, exp.Neg)):
        value = _as_literal(node)
        if value is None:
            raise _Unknown
        return value
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.And):
        a, b = _eval(node.this, row), _eval(node.expression, row)
        return False if a is False or b is False else (None if a is None or b is None else True)
    if isinstance(node, exp.Or):
        a, b = _eval(node.this, row), _eval(node.expression, row)
        return True if a is True or b is True else (None if a is None or b is None else False)
    if isinstance(node, exp.Not):
        a = _eval(node.this, row)
        return None if a is None else not a
    if isinstance(node, (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE)):
        return _cmp(type(node), _eval(node.this, row), _eval(node.expression, row))
    if isinstance(node, exp.Is):
        a = _eval(node.this, row)
        if isinstance(node.expression, exp.Null):
            return a is None
        raise _Unknown
    if isinstance(node, exp.In):
        if node.args.get("query") is not None:
            raise _Unknown
        a = _eval(node.this, row)
        if a is None:
            return None
        values = [_eval(e, row) for e in node.expressions]
        hits = [_cmp(exp.EQ, a, v) for v in values]
        return True if True in hits else (None if None in hits else False)
    if isinstance(node, exp.Between):
        a = _eval(node.this, row)
        low, high = _eval(node.args["low"], row), _eval(node.args["high"], row)
        lo, hi = _cmp(exp.GTE, a, low), _cmp(exp.LTE, a, high)
        return False if lo is False or hi is False else (None if lo is None or hi is None else True)
    if isinstance(node, (exp.Like, exp.ILike)):
        a, pattern = _eval(node.this, row), _eval(node.expression, row)
        if a is None or pattern is None:
            return None
        if not isinstance(a, str) or not isinstance(pattern, str):
            raise _Unknown
        regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
        flags = re.S | (re.I if isinstance(node, exp.ILike) else 0)
        return re.fullmatch(regex, a, flags) is not None
    if isinstance(node, (exp.Length, exp.Lower, exp.Upper)):
        a = _eval(node.this, row)
        if a is None:
            return None
        if not isinstance(a, str):
            raise _Unknown
        return (
            len(a)
            if isinstance(node, exp.Length)
            else a.lower()
            if isinstance(node, exp.Lower)
            else a.upper()
        )
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul)):
        a, b = _eval(node.this, row), _eval(node.expression, row)
        if a is None or b is None:
            return None
        if not all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) for v in (a, b)):
            raise _Unknown
        if isinstance(a, float) or isinstance(b, float):
            a, b = float(a), float(b)
        return a + b if isinstance(node, exp.Add) else a - b if isinstance(node, exp.Sub) else a * b
    raise _Unknown


def _check_values(checks: list[exp.Expr], key: str) -> list[object]:
    """Literals a column's CHECKs compare it with: IN members and the bounds of comparisons (with
    their neighbours), the candidates most likely to pass."""
    values: list[object] = []
    for check in checks:
        for node in check.walk():
            if isinstance(node, exp.In) and _as_column(node.this) is not None:
                if fold(_as_column(node.this).this) == key:
                    values.extend(_as_literal(e) for e in node.expressions)
            elif isinstance(node, (exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ, exp.Between)):
                col = _as_column(node.this)
                if col is not None and fold(col.this) == key:
                    bounds = (
                        [node.args["low"], node.args["high"]]
                        if isinstance(node, exp.Between)
                        else [node.expression]
                    )
                    for b in bounds:
                        values.extend(_near(_as_literal(b)))
    return [v for v in dict.fromkeys(values) if v is not None]


# --------------------------------------------------------------------------- values


def coerce(value: object, col: Column) -> object:
    """A gold or CHECK literal as a value of the column's kind; None when it cannot be one."""
    if value is None:
        return None
    kind = col.kind
    try:
        if kind == "int":
            if isinstance(value, bool):
                return None
            number = Decimal(str(value))
            if number != number.to_integral_value() or abs(number) > col.int_max:
                return None
            return int(number)
        if kind in ("float", "decimal"):
            if isinstance(value, bool):
                return None
            number = Decimal(str(value))
            if not number.is_finite():
                return None
            if kind == "decimal" and col.precision is not None:
                number = round(number, col.scale or 0)
                if abs(number) >= Decimal(10) ** (col.precision - (col.scale or 0)):
                    return None
            return float(number) if kind == "float" else number
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            return {"t": True, "true": True, "1": True, "f": False, "false": False, "0": False}.get(text)
        if kind == "date":
            return dt.date.fromisoformat(str(value).strip()[:10]).isoformat()
        if kind == "timestamp":
            return dt.datetime.fromisoformat(str(value).strip()).isoformat(sep=" ")
        if kind == "time":
            return dt.time.fromisoformat(str(value).strip()).isoformat()
        if kind == "uuid":
            return str(uuid.UUID(str(value)))
        if kind == "text":
            return str(value)
    except (ValueError, InvalidOperation, ArithmeticError):
        return None
    return None  # other kinds: only generated values, whose spelling we control


def random_value(col: Column, rng: random.Random, pool: list) -> object:
    """One value for the column: from the per-database `pool` (small, so values repeat and GROUP BY
    and DISTINCT matter) or fresh."""
    if pool and rng.random() < 0.7:
        return rng.choice(pool)
    return _fresh(col, rng)


def _fresh(col: Column, rng: random.Random, kind: str | None = None) -> object:
    kind = kind or col.kind
    if col.array and kind == col.kind:
        return [_fresh(col, rng, kind=col.kind + "!") for _ in range(rng.randint(0, 3))]
    kind = kind.rstrip("!")
    if kind == "int":
        return rng.randint(1, min(100, col.int_max))
    if kind == "float":
        return round(rng.uniform(0, 100), 2)
    if kind == "decimal":
        scale = col.scale or 0
        top = min(Decimal(10) ** ((col.precision or 10) - scale) - 1, Decimal(1000))
        return round(Decimal(str(rng.uniform(0, float(top)))), scale)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "text":
        return rng.choice(_WORDS) + ("" if rng.random() < 0.6 else f" {rng.randint(1, 9)}")
    if kind in ("date", "timestamp", "timestamptz"):
        day = dt.date(2000, 1, 1) + dt.timedelta(days=rng.randint(0, 9000))
        if kind == "date":
            return day.isoformat()
        stamp = f"{day.isoformat()} {rng.randint(0, 23):02d}:{rng.choice((0, 15, 30, 45)):02d}:00"
        return stamp + ("+00" if kind == "timestamptz" else "")
    if kind in ("time", "timetz"):
        return f"{rng.randint(0, 23):02d}:{rng.choice((0, 30)):02d}:00" + ("+00" if kind == "timetz" else "")
    if kind == "interval":
        return f"{rng.randint(1, 30)} days"
    if kind == "bytea":
        return bytes(rng.randrange(256) for _ in range(3))
    if kind == "json":
        return {"k": rng.randint(1, 9)}
    if kind == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if kind == "xml":
        return f"<v>{rng.randint(1, 9)}</v>"
    if kind == "tsvector":
        return f"{rng.choice(_WORDS).lower()} {rng.choice(_WORDS).lower()}"
    return rng.choice(_WORDS)


def sql_literal(value: object, col: Column) -> str:
    """The SQL text of a value of the column (typed, so that it needs no context to cast)."""
    if value is None:
        return "NULL"
    if col.array:
        if not value:
            return f"'{{}}'::{col.type_sql}"
        elem = Column(col.name, col.key, col.kind, col.type_sql[:-2])
        return "ARRAY[" + ", ".join(sql_literal(v, elem) for v in value) + f"]::{col.type_sql}"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, Decimal)):
        return str(value) if col.kind in ("int", "decimal", "float") else _quote(str(value), col)
    if isinstance(value, float):
        return repr(value) if col.kind in ("float", "decimal") else _quote(repr(value), col)
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::BYTEA"
    if isinstance(value, dict):
        return _quote(json.dumps(value, sort_keys=True), col)
    return _quote(str(value), col)


def _quote(text: str, col: Column) -> str:
    quoted = "'" + text.replace("'", "''") + "'"
    return quoted if col.kind == "text" else f"{quoted}::{col.type_sql}"


# --------------------------------------------------------------------------- databases


def _seed(*parts: object) -> int:
    digest = hashlib.blake2b("\x00".join(map(str, parts)).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


@dataclass
class Database:
    """One synthesized database: rows by table key (creation order), and the cycle-closing values set
    after all inserts."""

    tables: dict[str, Table]
    rows: dict[str, list[dict[str, object]]]
    closing: list[tuple[str, int, dict[str, object]]] = field(default_factory=list)

    def _closing_split(self) -> tuple[dict, list]:
        """Cycle-closing values: those of NOT NULL columns (by (table, row index)), which cannot wait
        for an UPDATE and go into the INSERT, and the rest, set by UPDATE after every row."""
        early: dict[tuple[str, int], dict[str, object]] = {}
        late = []
        for key, index, values in self.closing:
            cols = self.tables[key].columns
            now = {c: v for c, v in values.items() if cols[c].not_null}
            if now:
                early.setdefault((key, index), {}).update(now)
            if len(now) < len(values):
                late.append((key, index, {c: v for c, v in values.items() if c not in now}))
        return early, late

    def inserts(self) -> Iterator[tuple[Table, list[Column], list[object]]]:
        """(table, columns, values) of each row to insert, parents first."""
        early, _ = self._closing_split()
        for key, rows in self.rows.items():
            table = self.tables[key]
            for index, row in enumerate(rows):
                row = {**row, **early.get((key, index), {})}
                cols = [c for c in table.columns.values() if not c.generated and c.key in row]
                yield table, cols, [row[c.key] for c in cols]

    def updates(self) -> Iterator[tuple[Table, dict[str, object], dict[str, object]]]:
        """(table, the row, {column key: value}) of each cycle-closing value set after the inserts."""
        _, late = self._closing_split()
        for key, index, values in late:
            yield self.tables[key], self.rows[key][index], values

    def statements(self) -> list[str]:
        """One INSERT per row (parents first), then one UPDATE per cycle-closing foreign key value.
        A NOT NULL column of a cycle-closing key cannot wait for its UPDATE: it gets its value in the
        INSERT, and the loader adds cycle-closing keys after the rows (`hive_data.execute`)."""
        out = []
        for table, cols, values in self.inserts():
            names = ", ".join(c.name for c in cols)
            literals = ", ".join(sql_literal(v, c) for v, c in zip(values, cols))
            out.append(f"INSERT INTO {table.name} ({names}) VALUES ({literals})")
        for table, row, values in self.updates():
            sets = ", ".join(
                f"{table.columns[c].name} = {sql_literal(v, table.columns[c])}" for c, v in values.items()
            )
            where = " AND ".join(_match(table, c, row[c]) for c in row_identity(table, row))
            out.append(f"UPDATE {table.name} SET {sets} WHERE {where}")
        return out


def row_identity(table: Table, row: dict) -> list[str]:
    """The columns that pick `row` out of its table: a unique key it fills, else every column."""
    for key in table.unique_keys():
        if all(row.get(c) is not None for c in key):
            return list(key)
    return [c for c in table.columns if not table.columns[c].generated]


def _match(table: Table, key: str, value: object) -> str:
    col = table.columns[key]
    if value is None:
        return f"{col.name} IS NULL"
    if col.kind in ("json", "xml") or col.array:  # no equality operator for json and xml
        return f"{col.name}::TEXT = {sql_literal(value, col)}::TEXT"
    return f"{col.name} = {sql_literal(value, col)}"


@dataclass
class GoldHints:
    """What the gold query tells the generator (see `gold_literals`, `gold_joins`, `gold_groups`)."""

    literals: dict = field(default_factory=dict)
    joins: list[set] = field(default_factory=list)
    groups: set = field(default_factory=set)

    def signature(self) -> str:
        """Equal for gold queries that give the generator the same hints: they share databases."""
        return json.dumps(
            [
                sorted((list(k), [repr(v) for v in vs]) for k, vs in self.literals.items()),
                sorted(sorted(map(list, g)) for g in self.joins),
                sorted(map(list, self.groups)),
            ]
        )

    @classmethod
    def of(cls, sql: str | None, tables: dict[str, Table], dialect: str = "postgres") -> GoldHints:
        tree = _parse(sql, dialect) if sql else None
        if tree is None:
            return cls()
        hints = cls(gold_literals(tree, tables), gold_joins(tree, tables), gold_groups(tree, tables))
        # A literal compared with a foreign-key column must exist in the referenced column too: the
        # child can only hold values its parent has.
        for _ in range(len(tables)):  # along chains of keys, to a fixed point
            grew = False
            for table in tables.values():
                for fk in table.fks:
                    refs = fk.ref_columns or tables[fk.table].primary
                    for c, r in zip(fk.columns, refs):
                        values = hints.literals.get((table.key, c))
                        if values:
                            bucket = hints.literals.setdefault((fk.table, r), [])
                            new = [v for v in values if v not in bucket]
                            bucket.extend(new)
                            grew = grew or bool(new)
            if not grew:
                break
        return hints


class _Generator:
    def __init__(self, tables: dict[str, Table], hints: GoldHints, rng: random.Random):
        self.tables, self.hints, self.rng = tables, hints, rng
        self.rows: dict[str, list[dict]] = {}
        self.shared: dict[int, list] = {}  # join group -> pool its columns share

    def database(self) -> Database:
        for key, table in self.tables.items():
            self.rows[key] = self._table_rows(table)
        db = Database(self.tables, self.rows)
        self._close_cycles(db)
        return db

    def _pools(self, table: Table) -> dict[str, tuple[list, list, float]]:
        """Per column: (gold literals, a small pool of values to repeat, how often to use the pool)."""
        pools = {}
        for key, col in table.columns.items():
            where = (table.key, key)
            gold = [coerce(x, col) for x in self.hints.literals.get(where, [])]
            checks = col.checks + [c for c in table.checks if key in _column_keys(c)]
            from_checks = [v for v in (coerce(x, col) for x in _check_values(checks, key)) if v is not None]
            # Repeated text values make DISTINCT and GROUP BY matter; numbers and dates mostly differ,
            # so that ORDER BY ... LIMIT 1 rarely meets a tie that equivalent queries break apart.
            share = 0.7 if col.kind in ("text", "bool") else 0.25
            pool = [_fresh(col, self.rng) for _ in range(3)] + from_checks
            if where in self.hints.groups:  # groups of several rows, for HAVING COUNT(*) > n
                pool, share = pool[:2], 0.9
            for index, group in enumerate(self.hints.joins):
                if where in group:
                    shared = self.shared.setdefault(index, [_fresh(col, self.rng) for _ in range(3)])
                    pool = [v for v in (coerce(x, col) for x in shared) if v is not None] or pool
                    share = 0.9
            pools[key] = (list(dict.fromkeys(_hashable(v) for v in gold if v is not None)), pool, share)
        return pools

    def _table_rows(self, table: Table) -> list[dict]:
        rng = self.rng
        n = rng.randint(*ROWS)
        pools = self._pools(table)
        rows: list[dict] = []
        seen = [set() for _ in table.unique_keys()]
        checks = [c for col in table.columns.values() for c in col.checks] + table.checks
        for i in range(n):
            for attempt in range(ATTEMPTS):
                row = self._row(table, i, attempt, pools, rows)
                if row is None:
                    continue
                keys = [tuple(_hashable(row.get(c)) for c in key) for key in table.unique_keys()]
                if any(None not in k and k in s for k, s in zip(keys, seen)):
                    continue
                if not all(check_passes(c, row) for c in checks):
                    continue
                for k, s in zip(keys, seen):
                    s.add(k)
                rows.append(row)
                break
        return rows

    def _row(self, table: Table, i: int, attempt: int, pools: dict, done: list[dict]) -> dict | None:
        rng = self.rng
        row: dict[str, object] = {}
        unique = table.unique_keys()
        in_key = {c for key in unique for c in key}
        fk_cols = {c for fk in table.fks for c in fk.columns}
        literal_rows = attempt < ATTEMPTS // 2
        for key, col in table.columns.items():
            if col.generated or key in fk_cols:
                continue
            gold, pool, share = pools[key]
            # The first rows carry the gold literals, one per row, the same rows for every column, so
            # that a conjunction of filters (a = 1 AND b = 'x') holds on one row; later rows vary.
            if gold and i < min(len(gold), 3) and literal_rows:
                row[key] = gold[i]
            elif gold and literal_rows and rng.random() < 0.3:
                row[key] = rng.choice(gold)
            elif not col.not_null and key not in in_key and (rng.random() < NULL_SHARE or col.kind == "xml"):
                # XML stays NULL where it may: servers built without libxml refuse every XML value
                row[key] = None
            elif col.kind == "int" and (key,) in unique and attempt == 0:
                row[key] = i + 1  # ids 1..n, as real tables number their rows
            elif key in in_key and attempt >= 3:
                row[key] = _fresh(col, rng)
            else:
                row[key] = rng.choice(pool) if pool and rng.random() < share else _fresh(col, rng)
            if col.checks and not _column_ok(col, row[key]):
                # A CHECK on this column alone: draw until a value passes, the CHECK's own literals
                # (IN members, bounds) first, rather than failing the whole row.
                tries = [v for v in pool if _column_ok(col, v)] or [
                    v for v in (_fresh(col, rng) for _ in range(20)) if _column_ok(col, v)
                ]
                row[key] = rng.choice(tries) if tries else row[key]
        for fk in table.fks:
            if fk.closing:
                for c in fk.columns:  # set by UPDATE once the referenced table has rows
                    row[c] = None
                continue
            parents = self._parents(fk, table, done, row)
            if not parents:
                if any(table.columns[c].not_null for c in fk.columns if c in table.columns):
                    return None
                for c in fk.columns:
                    row[c] = None
                continue
            # Child row i of the first few points at parent row i: a join of the rows that carry the
            # gold literals (row 0 of each table) meets them.
            parent = parents[i % len(parents)] if attempt == 0 and i < 3 else rng.choice(parents)
            if i < 3 and literal_rows:  # a gold literal on the key column: a parent that holds it
                for c, r in zip(fk.columns, self._ref_columns(fk)):
                    gold = pools[c][0]
                    if gold:
                        want = gold[i % len(gold)]
                        parent = next((p for p in parents if _hashable(p.get(r)) == want), parent)
            for c, r in zip(fk.columns, self._ref_columns(fk)):
                row[c] = parent.get(r)
        return row

    def _ref_columns(self, fk: ForeignKey) -> tuple[str, ...]:
        return fk.ref_columns or self.tables[fk.table].primary

    def _parents(self, fk: ForeignKey, table: Table, done: list[dict], row: dict) -> list[dict]:
        refs = self._ref_columns(fk)
        if fk.table == table.key:  # a self reference: an earlier row, or this one once its key is set
            candidates = list(done) + ([row] if all(row.get(r) is not None for r in refs) else [])
        else:
            candidates = self.rows.get(fk.table, [])
        return [p for p in candidates if all(p.get(r) is not None for r in refs)]

    def _close_cycles(self, db: Database) -> None:
        for key, table in self.tables.items():
            for fk in table.fks:
                if not fk.closing:
                    continue
                refs = self._ref_columns(fk)
                parents = [p for p in self.rows.get(fk.table, []) if all(p.get(r) is not None for r in refs)]
                for index, _row in enumerate(self.rows[key] if parents else []):
                    if self.rng.random() < NULL_SHARE and not any(
                        table.columns[c].not_null for c in fk.columns
                    ):
                        continue
                    parent = parents[index % len(parents)]
                    db.closing.append((key, index, {c: parent.get(r) for c, r in zip(fk.columns, refs)}))


def _column_ok(col: Column, value: object) -> bool:
    return all(check_passes(c, {col.key: value}) for c in col.checks)


def _column_keys(check: exp.Expr) -> set[str]:
    return {fold(c.this) for c in check.find_all(exp.Column) if isinstance(c.this, exp.Identifier)}


def _hashable(value: object) -> object:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def synthesize_databases(
    schema: str,
    gold: str | GoldHints | None = None,
    *,
    k: int = 3,
    seed: int = 0,
    dialect: str = "postgres",
    tables: dict[str, Table] | None = None,
) -> list[Database]:
    """K databases for a canonical schema text (`tables`: its parse, when the caller has it), seeded
    by the gold query or the hints already taken from it. Deterministic for (schema, hints, seed)."""
    tables = parse_schema(schema) if tables is None else tables
    hints = gold if isinstance(gold, GoldHints) else GoldHints.of(gold, tables, dialect)
    sig = hints.signature()
    return [
        _Generator(tables, hints, random.Random(_seed(seed, i, schema, sig))).database() for i in range(k)
    ]


def synthesize(
    schema: str, gold: str | None = None, *, k: int = 3, seed: int = 0, dialect: str = "postgres"
) -> list[list[str]]:
    """K databases as statement lists (INSERTs, parents first, then cycle-closing UPDATEs) to run
    after the schema text. Deterministic for (schema, gold, seed)."""
    return [db.statements() for db in synthesize_databases(schema, gold, k=k, seed=seed, dialect=dialect)]
