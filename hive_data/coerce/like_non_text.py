"""LIKE non-text: pattern matching on dates, times and numbers, over the text the source matches."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, replace_all, rule
from hive_data.coerce.convert import cast
from hive_data.coerce.typed import BOOLEAN, INTEGER, NUMBER, TEMPORAL

MATCHES = (exp.Like, exp.ILike, exp.RegexpLike, exp.RegexpILike)
_NOT_TEXT = (TEMPORAL, INTEGER, NUMBER, BOOLEAN)


def _as_text(node: exp.Expr, datatype: exp.DataType | None, kind: str) -> exp.Expr:
    if kind == BOOLEAN:  # MySQL matches the digit: 1 or 0
        return cast(cast(node, "INT"), "TEXT")
    if datatype is not None and datatype.this == exp.DataType.Type.TIMESTAMPTZ:  # no zone in MySQL's text
        return cast(cast(node, "TIMESTAMP"), "TEXT")
    return cast(node, "TEXT")


@rule("LIKE non-text")
def like_on_non_text(tree: exp.Expr, ctx: Context) -> int:
    """`x LIKE pattern` (and REGEXP) where x is a date, time, timestamp, number or flag: MySQL and SQLite
    match the value's text, PostgreSQL has no `date ~~ text`. x becomes `CAST(x AS TEXT)`, which gives
    the same text as MySQL for the ISO dates and times PostgreSQL prints by default ('2016-03-01',
    '2016-03-01 12:00:00'), integers and decimals; a flag is matched as its digit 0 or 1."""
    subjects = [n.this for n in ctx.find(*MATCHES) if ctx.screen.could_be(n.this, *_NOT_TEXT)]
    types = ctx.types if subjects else None
    if types is None:
        return 0
    targets = {}
    for subject in subjects:
        kind = types.of(subject)
        if kind in _NOT_TEXT:
            datatype = types.type(subject)
            targets[id(subject)] = (subject, lambda n, d=datatype, k=kind: _as_text(n, d, k))
    return replace_all(targets)
