"""temporal=text: SQLite dates and times are text, and compare as text."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, compared, replace_all, rule
from hive_data.coerce.convert import cast
from hive_data.coerce.typed import TEMPORAL


def _string(node: exp.Expr) -> bool:
    return isinstance(node, exp.Literal) and node.is_string


@rule("temporal=text")
def temporal_compared_as_text(tree: exp.Expr, ctx: Context) -> int:
    """SQLite has no date or time type: a DATE or DATETIME column holds text ('2012-06-01 10:00:00'),
    and comparing it with a string (`=`, `<`, IN, BETWEEN) compares the two texts. PostgreSQL reads
    the string as a timestamp instead ('2012-06-01' is midnight), so `d > '2012-06-01'` keeps a row at
    midnight in SQLite and not in PostgreSQL, and `d BETWEEN '2009-01-01' AND '2009-12-31'` keeps the
    last day's afternoon only in PostgreSQL. For SQLite sources the column side becomes
    `CAST(d AS TEXT)`, the ISO text PostgreSQL prints, which is what SQLite applications store.
    MySQL has real temporal types and reads the string as PostgreSQL does: no rewrite."""
    if ctx.read != "sqlite":
        return 0
    could = ctx.screen.could_be
    pairs = [
        (column, string)
        for _, a, b in compared(ctx)
        for column, string in ((a, b), (b, a))
        if _string(string) and isinstance(column, exp.Column) and could(column, TEMPORAL)
    ]
    types = ctx.types if pairs else None
    if types is None:
        return 0
    targets = {
        id(column): (column, lambda n: cast(n, "TEXT")) for column, _ in pairs if types.of(column) == TEMPORAL
    }
    return replace_all(targets)
