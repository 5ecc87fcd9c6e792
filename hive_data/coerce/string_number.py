"""'string'=number: string literals compared with numbers, read as the numbers the source reads."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, Unfaithful, combined, compared, replace_all, rule
from hive_data.coerce.convert import number_literal, reads_as, string_value
from hive_data.coerce.typed import INTEGER, NUMERIC, string_literal


def _as_number(node: exp.Expr) -> exp.Expr:
    return number_literal(string_value(node.name))


@rule("'string'=number")
def string_literal_as_number(tree: exp.Expr, ctx: Context) -> int:
    """A string literal compared with (or added to) a number where PostgreSQL cannot read the string
    as that number: `id = 'null'`, `count = ''`, `int_col = '5.5'`. MySQL reads the string as a number
    (numeric prefix, 0 when none: 'null' is 0), so the literal becomes that number (`id = 0`); strings
    PostgreSQL reads as MySQL does ('5', ' 12') stay as written. SQLite converts only strings that are
    whole numbers; it compares any other string with a number by storage class, which PostgreSQL
    cannot express, so such an answer is rejected."""
    pairs = [
        (literal, other)
        for _, a, b in [*compared(ctx), *combined(ctx)]
        for literal, other in ((a, b), (b, a))
        if string_literal(literal) is not None and ctx.screen.could_be(other, *NUMERIC)
    ]
    types = ctx.types if pairs else None
    if types is None:
        return 0
    targets = {}
    for literal, other in pairs:
        if types.of(other) not in NUMERIC or reads_as(literal.name, integer=types.of(other) == INTEGER):
            continue
        if ctx.read == "sqlite" and not reads_as(literal.name, integer=False):
            raise Unfaithful(
                f"the string {literal.sql()} is compared with a number (SQLite orders every number "
                "before every string; PostgreSQL has no such comparison)"
            )
        targets[id(literal)] = (literal, _as_number)
    return replace_all(targets)
