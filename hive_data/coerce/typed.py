"""What the rules know about an answer: its tables' columns and keys, and the type of each expression.

The canonical schema text (``-- Dialect: postgres`` and CREATE TABLEs in the target dialect) becomes a
`TypedSchema`: a `sqlglot.schema.MappingSchema` of column types plus each table's primary key. `Types`
learns the type of every node of an answer by running sqlglot's `qualify` and `annotate_types` on a
copy of it, so the answer itself is never qualified or re-printed: rules look a node's type up through
its twin in the copy and rewrite the original node, and an answer no rule touches prints byte for byte
as before.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.schema import MappingSchema

TEXT = "text"
INTEGER = "integer"
NUMBER = "number"  # a non-integer number: decimal, real, double
BOOLEAN = "boolean"
TEMPORAL = "temporal"
NUMERIC = (INTEGER, NUMBER)
ANY = frozenset({TEXT, INTEGER, NUMBER, BOOLEAN, TEMPORAL})

_KINDS = (
    (exp.DataType.TEXT_TYPES, TEXT),
    (exp.DataType.INTEGER_TYPES, INTEGER),
    (exp.DataType.REAL_TYPES, NUMBER),
    ({exp.DataType.Type.BOOLEAN}, BOOLEAN),
    (exp.DataType.TEMPORAL_TYPES, TEMPORAL),
)


@dataclass(frozen=True)
class TypedSchema:
    """Column types (`mapping`) and primary keys (`keys`: normalized table path -> key columns)."""

    mapping: MappingSchema
    keys: dict[tuple[str, ...], frozenset[str]]
    dialect: str
    names: dict[str, frozenset[str]]  # column name -> the kinds of the columns so named, in any table


def _normalized(ident: exp.Expr, dialect: Dialect) -> str:
    """An identifier's name as the target resolves it (PostgreSQL folds unquoted names to lower case)."""
    if not isinstance(ident, exp.Identifier):
        return ident.name
    return _normalized_name(ident.name, bool(ident.args.get("quoted")), dialect)


@functools.lru_cache(maxsize=65536)
def _normalized_name(name: str, quoted: bool, dialect: Dialect) -> str:
    return dialect.normalize_identifier(exp.Identifier(this=name, quoted=quoted)).name


def _table_path(table: exp.Table, dialect: Dialect) -> tuple[str, ...]:
    parts = [table.args.get("db"), table.this]
    return tuple(_normalized(p, dialect) for p in parts if p is not None)


def _primary_key(create: exp.Create, dialect: Dialect) -> frozenset[str]:
    """The columns of the table's PRIMARY KEY, inline (`id INTEGER PRIMARY KEY`) or table-level."""
    cols: list[str] = []
    for item in create.this.expressions:
        if isinstance(item, exp.ColumnDef):
            if any(isinstance(c.args.get("kind"), exp.PrimaryKeyColumnConstraint) for c in item.constraints):
                cols.append(_normalized(item.this, dialect))
        else:
            key = item if isinstance(item, exp.PrimaryKey) else item.find(exp.PrimaryKey)
            if key is not None:
                cols.extend(
                    _normalized(e.this if isinstance(e, exp.Ordered) else e, dialect) for e in key.expressions
                )
    return frozenset(cols)


@functools.lru_cache(maxsize=512)
def typed_schema(text: str, dialect: str = "postgres") -> TypedSchema | None:
    """The schema of canonical DDL `text` (CREATE TABLEs in `dialect`); None when it holds no table, a
    table without typed columns, or tables at different qualification depths (sqlglot's mapping
    schema needs one depth). Memoized: datasets repeat a few schema texts many times."""
    d = Dialect.get_or_raise(dialect)
    try:
        statements = sqlglot.parse(text, read=d)
    except SqlglotError:
        return None
    tables: dict[tuple[str, ...], dict[str, exp.DataType]] = {}
    keys: dict[tuple[str, ...], frozenset[str]] = {}
    for stmt in statements:
        if not isinstance(stmt, exp.Create) or stmt.args.get("kind") != "TABLE":
            continue
        if not isinstance(stmt.this, exp.Schema) or not isinstance(stmt.this.this, exp.Table):
            continue
        path = _table_path(stmt.this.this, d)
        columns = {
            _normalized(col.this, d): col.args["kind"]
            for col in stmt.this.expressions
            if isinstance(col, exp.ColumnDef) and isinstance(col.args.get("kind"), exp.DataType)
        }
        if columns:
            tables[path] = columns
            keys[path] = _primary_key(stmt, d)
    if not tables or len({len(p) for p in tables}) != 1:
        return None
    nested: dict = {}
    for path, columns in tables.items():
        level = nested
        for part in path[:-1]:
            level = level.setdefault(part, {})
        level[path[-1]] = columns
    try:
        mapping = MappingSchema(nested, dialect=d, normalize=False)  # names are normalized above
    except SqlglotError:
        return None
    names: dict[str, set[str]] = {}
    for columns in tables.values():
        for name, datatype in columns.items():
            names.setdefault(name, set()).add(kind(datatype) or "other")
    return TypedSchema(mapping, keys, dialect, {n: frozenset(k) for n, k in names.items()})


def kind(datatype: exp.DataType | None) -> str | None:
    """The coercion category of a type (TEXT, INTEGER, NUMBER, BOOLEAN, TEMPORAL), None if another or
    unknown (NULL, UNKNOWN, JSON, arrays...): rules never act on what they cannot classify."""
    if datatype is None:
        return None
    for types, name in _KINDS:
        if datatype.this in types:
            return name
    return None


def is_literal(node: exp.Expr) -> bool:
    """A constant the target types from context: a string or number literal, possibly negated."""
    if isinstance(node, exp.Paren):
        return is_literal(node.this)
    if isinstance(node, exp.Neg):
        return is_literal(node.this)
    return isinstance(node, exp.Literal)


def string_literal(node: exp.Expr) -> exp.Literal | None:
    """`node` when it is a string literal ('abc'), else None."""
    return node if isinstance(node, exp.Literal) and node.is_string else None


_COUNTS = (exp.Count,)
_FOLDS = (exp.Sum, exp.Avg, exp.Min, exp.Max)


class Screen:
    """What kinds a node of the answer could have, from the names alone: a cheap over-estimate of
    `Types.of` that lets a rule skip typing (qualify and annotate, most of coercion's cost) when no
    operand could be of the kinds it acts on. A column could be any kind a column of that name has in
    some table (any kind at all for a name the schema lacks or the answer defines as an alias: give
    the answer's `exp.Alias` nodes)."""

    def __init__(self, aliases: list[exp.Expr], schema: TypedSchema):
        d = Dialect.get_or_raise(schema.dialect)
        self._names = schema.names
        self._dialect = d
        self._aliases = {_normalized(a.args["alias"], d) for a in aliases if a.args.get("alias")}

    def kinds(self, node: exp.Expr) -> frozenset[str]:
        if isinstance(node, (exp.Paren, exp.Neg)):
            return self.kinds(node.this)
        if isinstance(node, exp.Literal):
            return frozenset({TEXT}) if node.is_string else frozenset(NUMERIC)
        if isinstance(node, exp.Boolean):
            return frozenset({BOOLEAN})
        if isinstance(node, exp.Column):
            name = _normalized(node.this, self._dialect)
            if name in self._aliases:
                return ANY
            return self._names.get(name, ANY)
        if isinstance(node, exp.Subquery):
            select = node.unnest()
            if isinstance(select, exp.Select) and len(select.selects) == 1:
                return self.kinds(select.selects[0].unalias())
            return ANY
        if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod)):
            return self.kinds(node.left) | self.kinds(node.right) | set(NUMERIC)
        if isinstance(node, _COUNTS):
            return frozenset({INTEGER})
        if isinstance(node, _FOLDS) and node.this is not None:
            arg = node.this
            if isinstance(arg, exp.Distinct):
                arg = arg.expressions[0] if len(arg.expressions) == 1 else None
            inner = self.kinds(arg) if arg is not None else ANY
            if isinstance(node, (exp.Min, exp.Max)) or not inner <= set(NUMERIC):
                return inner  # MIN/MAX keep the kind; SUM(text) is typed as text until converted
            return frozenset(NUMERIC)
        return ANY

    def could_be(self, node: exp.Expr, *kinds: str) -> bool:
        return not self.kinds(node).isdisjoint(kinds)


class Types:
    """The type of each node of `tree`, learned on a qualified, annotated copy.

    `of(node)` is the category of an original node (see `kind`); `twin(node)` its counterpart in the
    copy (qualified columns, expanded stars), or None for a node the qualifier replaced. Holds the
    original nodes it maps, so their ids are not reused while it lives. Raises `SqlglotError` (or
    what the optimizer raises) when the answer cannot be qualified against the schema."""

    def __init__(self, tree: exp.Expr, schema: TypedSchema):
        from sqlglot.optimizer.annotate_types import annotate_types
        from sqlglot.optimizer.qualify import qualify

        copy = tree.copy()
        self._pairs = {id(a): (a, b) for a, b in zip(tree.walk(), copy.walk())}
        copy = qualify(
            copy,
            dialect=schema.dialect,
            schema=schema.mapping,
            validate_qualify_columns=False,
            quote_identifiers=False,
            identify=False,
        )
        self.copy = annotate_types(copy, schema=schema.mapping, dialect=schema.dialect)
        self._point_order_keys_at_projections(tree)

    def _point_order_keys_at_projections(self, tree: exp.Expr) -> None:
        """With GROUP BY, the qualifier replaces an ORDER BY key equal to a projection by a reference
        to it, which leaves the key's twins outside the typed copy: take the projection's twins."""
        for ordered in tree.find_all(exp.Ordered):
            key, select = ordered.this, ordered.parent and ordered.parent.parent
            twin = self.twin(key)
            if not isinstance(select, exp.Select) or twin is None or twin.root() is self.copy:
                continue
            for projection in select.selects:
                if projection.unalias() == key:
                    for a, b in zip(key.walk(), projection.unalias().walk()):
                        if self.twin(b) is not None:
                            self._pairs[id(a)] = (a, self.twin(b))
                    break

    def twin(self, node: exp.Expr) -> exp.Expr | None:
        pair = self._pairs.get(id(node))
        return pair[1] if pair is not None and pair[0] is node else None

    def type(self, node: exp.Expr) -> exp.DataType | None:
        twin = self.twin(node)
        return twin.type if twin is not None else None

    def of(self, node: exp.Expr) -> str | None:
        return kind(self.type(node))
