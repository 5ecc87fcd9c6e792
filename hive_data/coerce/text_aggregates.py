"""sum(text): numeric aggregates over text, summed as the numbers the strings read as."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, replace_all, rule
from hive_data.coerce.convert import text_to_number
from hive_data.coerce.typed import TEXT, is_literal

AGGREGATES = (exp.Sum, exp.Avg, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance, exp.VariancePop)


def aggregated(agg: exp.Expr) -> exp.Expr | None:
    """The expression an aggregate folds (inside `SUM(DISTINCT x)` too), or None."""
    arg = agg.this
    if isinstance(arg, exp.Distinct):
        arg = arg.expressions[0] if len(arg.expressions) == 1 else None
    return arg


@rule("sum(text)")
def numeric_aggregates_over_text(tree: exp.Expr, ctx: Context) -> int:
    """SUM, AVG, STDDEV and VARIANCE of a text expression. MySQL and SQLite fold the number each string
    reads as (its numeric prefix, 0 when it has none); PostgreSQL has no sum(text). The argument
    becomes `convert.text_to_number(arg)`, so the result is MySQL's double."""
    args = [aggregated(agg) for agg in ctx.find(*AGGREGATES)]
    args = [a for a in args if a is not None and not is_literal(a) and ctx.screen.could_be(a, TEXT)]
    types = ctx.types if args else None
    if types is None:
        return 0
    return replace_all({id(a): (a, text_to_number) for a in args if types.of(a) == TEXT})
