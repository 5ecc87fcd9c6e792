"""GROUP BY strictness: selected columns the grouping keys do not determine (rejected, never rewritten)."""

from __future__ import annotations

from sqlglot import exp
from sqlglot.optimizer.scope import traverse_scope

from hive_data.coerce.base import Context, Unfaithful, rule
from hive_data.coerce.typed import TypedSchema

ENGINES = {"mysql": "MySQL", "sqlite": "SQLite"}
_OTHER_SCOPE = (exp.Subquery, exp.Select, exp.SetOperation)


def _is_aggregate(node: exp.Expr) -> bool:
    """An aggregate of the query's groups (not a window function's)."""
    return isinstance(node, exp.AggFunc) and not isinstance(node.parent, exp.Window)


def _has_aggregate(node: exp.Expr) -> bool:
    if _is_aggregate(node):
        return True
    if isinstance(node, _OTHER_SCOPE):
        return False
    return any(_has_aggregate(child) for child in node.iter_expressions())


def _bare_columns(node: exp.Expr, keys: list[exp.Expr]):
    """Columns of `node` outside aggregates, subqueries and grouped expressions."""
    if node in keys or _is_aggregate(node) or isinstance(node, _OTHER_SCOPE):
        return
    if isinstance(node, exp.Column):
        yield node
        return
    for child in node.iter_expressions():
        yield from _bare_columns(child, keys)


def _key_is_grouped(source: exp.Table, alias: str, grouped: set, schema: TypedSchema) -> bool:
    """PostgreSQL's functional dependency: every column of the table's primary key is a grouping key."""
    path = tuple(p.name for p in (source.args.get("db"), source.this) if p is not None)
    key = schema.keys.get(path)
    return bool(key) and all((alias, column) in grouped for column in key)


def _message(clause: str, grouped_query: bool, engine: str, columns: list[str]) -> str:
    why = f"({engine} picks an arbitrary row): {', '.join(columns)}"
    if clause == "SELECT" and grouped_query:
        return f"GROUP BY selects columns not determined by the grouping keys {why}"
    if clause == "SELECT":
        return f"aggregate query without GROUP BY selects columns it does not aggregate {why}"
    if grouped_query:
        return f"{clause} uses columns not determined by the grouping keys {why}"
    return f"aggregate query without GROUP BY uses columns in {clause} that it does not aggregate {why}"


def _clauses(select: exp.Select) -> list[tuple[str, list[exp.Expr]]] | None:
    """The clauses of an aggregate query that may only use grouped values, or None when `select` is
    not one (or groups by ROLLUP, CUBE or GROUPING SETS, or calls a function that may aggregate)."""
    group = select.args.get("group")
    if group is not None and any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")):
        return None
    having, order = select.args.get("having"), select.args.get("order")
    clauses = [
        ("SELECT", list(select.expressions)),
        ("HAVING", [having.this] if having else []),
        ("ORDER BY", [o.this for o in order.expressions] if order else []),
    ]
    if group is None and not any(_has_aggregate(e) for _, exprs in clauses for e in exprs):
        return None  # not an aggregate query
    if any(select.find_all(exp.Anonymous)):
        return None  # an unknown function may be an aggregate: do not guess
    return clauses


def _grouped(select: exp.Select) -> tuple[list[exp.Expr], set[tuple[str, str]]]:
    keys = [k.unnest() for k in select.args["group"].expressions] if select.args.get("group") else []
    return keys, {(k.table, k.name) for k in keys if isinstance(k, exp.Column)}


def _may_be_loose(select: exp.Select) -> bool:
    """Whether an aggregate query uses a column that is not, as written, a grouping key (only then
    does the rule type the answer to resolve it)."""
    clauses = _clauses(select)
    if clauses is None:
        return False
    if select.is_star:
        return True  # the stars' columns are known once typed
    keys, grouped = _grouped(select)
    return any(
        (col.table, col.name) not in grouped
        for _, exprs in clauses
        for expr in exprs
        for col in _bare_columns(expr, keys)
    )


def _check(select: exp.Select, sources: dict, ctx: Context) -> None:
    clauses = _clauses(select)
    if clauses is None:
        return
    group = select.args.get("group")
    keys, grouped = _grouped(select)
    for clause, exprs in clauses:
        loose = []
        for expr in exprs:
            for col in _bare_columns(expr, keys):
                source = sources.get(col.table)
                if source is None or (col.table, col.name) in grouped:
                    continue  # an outer query's column (a constant here), an output name, or a key
                if isinstance(source, exp.Table) and _key_is_grouped(source, col.table, grouped, ctx.schema):
                    continue
                loose.append(col.sql(dialect="postgres"))
        if loose:
            engine = ENGINES.get(ctx.read, "the source engine")
            raise Unfaithful(_message(clause, group is not None, engine, sorted(set(loose))))


@rule("GROUP BY")
def loose_group_by(tree: exp.Expr, ctx: Context) -> int:
    """An aggregate query whose SELECT, HAVING or ORDER BY uses a column that is neither aggregated nor
    determined by the grouping keys (a key itself, or a column of a table whose primary key is
    grouped, as PostgreSQL accepts). MySQL and SQLite take its value from an arbitrary row of each
    group, so no faithful target query exists: rejected with the columns named. Never rewrites."""
    if not any(_may_be_loose(select) for select in ctx.find(exp.Select)):
        return 0
    types = ctx.types
    if types is None:
        return 0
    for scope in traverse_scope(types.copy):
        if isinstance(scope.expression, exp.Select):
            _check(scope.expression, scope.sources, ctx)
    return 0
