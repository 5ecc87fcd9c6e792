"""DISTINCT ORDER BY: SELECT DISTINCT sorted by something it does not select."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, Unfaithful, rule
from hive_data.coerce.typed import Types


def _is_selected(node: exp.Expr, select: exp.Select, types: Types | None) -> bool:
    """Whether PostgreSQL finds `node` (an ORDER BY or GROUP BY expression) in the select list: a
    position, an output name, or an expression equal to a selected one (as written, or compared
    qualified when `types` are known)."""
    if isinstance(node, exp.Literal) and node.is_int:
        return True
    if (
        isinstance(node, exp.Column)
        and not node.table
        and node.name in {p.alias_or_name for p in select.selects}
    ):
        return True
    twin = types.twin(node) if types is not None else None
    for projection in select.selects:
        if projection.unalias() == node:
            return True
        other = types.twin(projection) if twin is not None else None
        if twin is not None and other is not None and other.unalias() == twin:
            return True
    return False


def _groups_are_selected(select: exp.Select, types: Types) -> bool:
    """Whether the query groups by plain keys that are all selected: then its rows are already
    distinct (two groups differ in a key, and every key is an output column)."""
    group = select.args.get("group")
    if group is None or any(group.args.get(k) for k in ("rollup", "cube", "grouping_sets")):
        return False
    return bool(group.expressions) and all(_is_selected(key, select, types) for key in group.expressions)


@rule("DISTINCT ORDER BY")
def distinct_ordered_by_unselected(tree: exp.Expr, ctx: Context) -> int:
    """SELECT DISTINCT ... ORDER BY an expression it does not select (PostgreSQL: "for SELECT DISTINCT,
    ORDER BY expressions must appear in select list").

    When the query groups by keys that are all selected, each output row is one group and no two are
    equal, so DISTINCT removes nothing: it is dropped, and the result is the same. Otherwise MySQL
    sorts each distinct row by the value of an arbitrary one of the rows it stands for, which no
    query reproduces: rejected."""
    candidates = []
    for select in ctx.find(exp.Select):
        distinct, order = select.args.get("distinct"), select.args.get("order")
        if not isinstance(distinct, exp.Distinct) or distinct.args.get("on") or order is None:
            continue
        if not all(_is_selected(o.this, select, None) for o in order.expressions):
            candidates.append(select)
    types = ctx.types if candidates else None
    if types is None:
        return 0
    changed = 0
    for select in candidates:
        if all(_is_selected(o.this, select, types) for o in select.args["order"].expressions):
            continue
        if not _groups_are_selected(select, types):
            raise Unfaithful(
                "SELECT DISTINCT is ordered by an expression it does not select (the source engine sorts "
                "each distinct row by an arbitrary one of its rows' values)"
            )
        select.set("distinct", None)
        changed += 1
    return changed
