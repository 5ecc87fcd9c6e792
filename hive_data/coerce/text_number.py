"""text=number: text compared with or computed with a number, converted as the source converts it."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, Unfaithful, combined, compared, replace_all, rule
from hive_data.coerce.convert import cast, numeric_affinity, sqlite_text, text_to_number
from hive_data.coerce.typed import NUMERIC, TEXT, Types, is_literal

_AFFINITY = (exp.Column, exp.Cast)  # SQLite operands with a type affinity of their own


def _is_text(node: exp.Expr, types: Types) -> bool:
    """A text operand to convert; not a literal (the target types it from context) and not `-x`
    (x itself is converted, as an operand of arithmetic)."""
    return not is_literal(node) and not isinstance(node, exp.Neg) and types.of(node) == TEXT


def _sqlite(text: exp.Expr, number: exp.Expr, targets: dict) -> None:
    """SQLite's comparison affinity: a number with a column affinity (INTEGER, REAL) turns the text
    into a number when the whole text is one; a number without (a literal, an expression) is compared
    as text when the text side is a column; with no affinity on either side, never equal."""
    if isinstance(number, _AFFINITY):
        targets[id(text)] = (text, numeric_affinity)
    elif not isinstance(text, _AFFINITY):
        raise Unfaithful(
            f"{text.sql()} (text) is compared with {number.sql()} (a number), neither a column: SQLite "
            "compares them by storage class and never finds them equal"
        )
    elif is_literal(number) and not isinstance(number, exp.Paren):
        targets[id(number)] = (number, sqlite_text)
    else:
        targets[id(number)] = (number, lambda n: cast(n, "TEXT"))


@rule("text=number")
def text_number_comparison(tree: exp.Expr, ctx: Context) -> int:
    """A text expression compared with a number (`=`, `<`, IN, BETWEEN), or in arithmetic: PostgreSQL
    has no `text = integer` or `text + integer`.

    MySQL compares a string with a number as doubles, reading the string's numeric prefix ('10' > 9,
    '12abc' = 12, 'abc' = 0), and computes with strings the same way: the text side becomes
    `convert.text_to_number(text)`. Casting the number to text instead would be unfaithful for `<`
    and `>` ('10' < '9' as text) and for strings such as '094002' or '1e3' under `=`.

    SQLite applies affinities: against a number column the text becomes a number when it is one, and
    is greater than every number when it is not (`convert.numeric_affinity`); against a number
    literal or expression the number is compared as text ('5', or CAST(n AS TEXT)); with no column on
    either side they never compare equal (rejected). Arithmetic converts as MySQL does in both."""
    could = ctx.screen.could_be
    pairs = [
        (text, number)
        for _, a, b in compared(ctx)
        for text, number in ((a, b), (b, a))
        if not is_literal(text) and could(text, TEXT) and could(number, *NUMERIC)
    ]
    operands = [op for _, a, b in combined(ctx) for op in (a, b)] + [n.this for n in ctx.find(exp.Neg)]
    computed = [op for op in operands if not is_literal(op) and could(op, TEXT)]
    types = ctx.types if pairs or computed else None
    if types is None:
        return 0
    targets: dict = {}
    for text, number in pairs:
        if _is_text(text, types) and types.of(number) in NUMERIC:
            if ctx.read == "sqlite":
                _sqlite(text, number, targets)
            else:
                targets[id(text)] = (text, text_to_number)
    for text in computed:
        if _is_text(text, types):
            targets[id(text)] = (text, text_to_number)
    return replace_all(targets)
