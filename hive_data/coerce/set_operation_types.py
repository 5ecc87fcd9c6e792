"""set-op types: UNION, INTERSECT and EXCEPT over columns whose types differ."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, Unfaithful, replace_all, rule
from hive_data.coerce.convert import cast
from hive_data.coerce.typed import BOOLEAN, NUMERIC, TEMPORAL, TEXT, Types


def _selects(query: exp.Expr) -> list[exp.Select] | None:
    """The SELECTs whose rows a set operation combines (through nested set operations and
    parentheses), or None for a shape it does not know."""
    if isinstance(query, exp.Subquery):
        return _selects(query.this)
    if isinstance(query, exp.SetOperation):
        left, right = _selects(query.left), _selects(query.right)
        return None if left is None or right is None else left + right
    if isinstance(query, exp.Select):
        return [query]
    return None


def _column(selects: list[exp.Select], i: int) -> list[exp.Expr]:
    """The i-th output expression of each SELECT (inside its alias: the cast goes there)."""
    return [s.selects[i].unalias() for s in selects]


def _is_string(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and node.is_string  # PostgreSQL types it from the other rows


def _kind(node: exp.Expr, types: Types) -> str | None:
    return None if _is_string(node) else types.of(node)


def _set_operations(ctx: Context) -> list[list[exp.Select]]:
    """The SELECTs of each outermost set operation whose shape the rule knows (same width, no star)."""
    out = []
    for node in ctx.find(exp.SetOperation):
        if isinstance(node.parent, exp.SetOperation):
            continue  # the outermost one sees all the SELECTs
        selects = _selects(node)
        if selects and len({len(s.selects) for s in selects}) == 1 and not any(s.is_star for s in selects):
            out.append(selects)
    return out


def _rewrite_for(kinds: set[str]):
    """How to bring each kind of column to the type MySQL gives the set operation's column: text when
    any row is text (numbers, dates and flags as their text), integers for flags among numbers."""
    if TEXT in kinds and kinds & {*NUMERIC, BOOLEAN, TEMPORAL}:
        return {
            BOOLEAN: lambda n: cast(cast(n, "INT"), "TEXT"),
            **{k: (lambda n: cast(n, "TEXT")) for k in (*NUMERIC, TEMPORAL)},
        }
    if BOOLEAN in kinds and kinds & set(NUMERIC):
        return {BOOLEAN: lambda n: cast(n, "INT")}
    return {}


@rule("set-op types")
def set_operation_column_types(tree: exp.Expr, ctx: Context) -> int:
    """UNION / INTERSECT / EXCEPT whose rows put a text column beside a number, date or flag (or a flag
    beside a number), which PostgreSQL refuses ("types integer and text cannot be matched"). MySQL
    gives the column the wider type, text, and compares the numbers' text: the non-text sides become
    `CAST(x AS TEXT)` (a flag beside numbers, `CAST(x AS INT)`). SQLite compares such values by
    storage class (5 and '5' differ), which no cast reproduces: rejected."""
    screen = ctx.screen
    operations = [
        selects
        for selects in _set_operations(ctx)
        if any(
            _rewrite_for(set().union(*(screen.kinds(n) for n in _column(selects, i) if not _is_string(n))))
            for i in range(len(selects[0].selects))
        )
    ]
    types = ctx.types if operations else None
    if types is None:
        return 0
    targets = {}
    for selects in operations:
        for i in range(len(selects[0].selects)):
            column = _column(selects, i)
            kinds = {_kind(n, types) for n in column} - {None}
            rewrite = _rewrite_for(kinds)
            if not rewrite:
                continue
            if ctx.read == "sqlite":
                raise Unfaithful(
                    f"set operation column {i + 1} mixes {' and '.join(sorted(kinds))} values "
                    "(SQLite compares them by storage class, so 5 and '5' differ; no cast keeps that)"
                )
            for n in column:
                kind = _kind(n, types)
                if kind in rewrite:
                    targets[id(n)] = (n, rewrite[kind])
    return replace_all(targets)
