"""boolean=integer: flags used as the integers 0 and 1 they are in MySQL and SQLite."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import ARITHMETIC, COMPARISONS, EQUALITIES, Context, replace_all, rule
from hive_data.coerce.convert import cast, number_literal, reads_as, string_value
from hive_data.coerce.text_aggregates import AGGREGATES, aggregated
from hive_data.coerce.typed import BOOLEAN, NUMERIC, Types, is_literal, string_literal

_MIN_MAX = (exp.Min, exp.Max)


def _as_int(node: exp.Expr) -> exp.Expr:
    return cast(node, "INT")


def _bit(literal: exp.Expr) -> bool | None:
    """True/False for the integer literal 1/0, None for anything else."""
    if isinstance(literal, exp.Literal) and not literal.is_string and literal.name in ("0", "1"):
        return literal.name == "1"
    return None


def _operands(node: exp.Expr) -> list[exp.Expr]:
    if isinstance(node, exp.In):
        return [node.this, *node.expressions] + ([node.args["query"]] if node.args.get("query") else [])
    if isinstance(node, exp.Between):
        return [node.this, node.args.get("low"), node.args.get("high")]
    return [node.left, node.right]


def _mentions_flag(node: exp.Expr, could) -> bool:
    return any(
        op is not None and not isinstance(op, exp.Boolean) and could(op, BOOLEAN) for op in _operands(node)
    )


def _is_flag(node: exp.Expr, types: Types) -> bool:
    return not isinstance(node, exp.Boolean) and types.of(node) == BOOLEAN


def _comparison(node: exp.Expr, types: Types, targets: dict) -> None:
    """One comparison with a flag on one side (the first operand of IN and BETWEEN, either side of
    `=`) and numbers or strings on the other."""
    operands = [op for op in _operands(node) if op is not None]
    flags = [op for op in operands if _is_flag(op, types)]
    others = [op for op in operands if not _is_flag(op, types)]
    if not flags or not others:
        return
    numbers = [op for op in others if types.of(op) in NUMERIC]
    strings = [op for op in others if string_literal(op) is not None]
    if len(numbers) + len(strings) != len(others):
        return  # compared with something else (a date, an unknown type): not ours
    if (
        isinstance(node, (*EQUALITIES, exp.In))
        and not strings
        and all(_bit(op) is not None for op in numbers)
    ):
        for op in numbers:  # flag = 1 reads as flag = TRUE
            targets[id(op)] = (op, lambda n: exp.Boolean(this=_bit(n)))
        return
    if not numbers and all(op.name.strip() in ("0", "1") for op in strings):
        return  # PostgreSQL reads '0' and '1' as booleans, as MySQL reads them as 0 and 1
    for flag in flags:
        targets[id(flag)] = (flag, _as_int)
    for op in strings:
        if not reads_as(op.name, integer=True):  # MySQL reads the string as a number: so does the query
            targets[id(op)] = (op, lambda n: number_literal(string_value(n.name)))


@rule("boolean=integer")
def boolean_as_integer(tree: exp.Expr, ctx: Context) -> int:
    """A BOOLEAN column (MySQL's TINYINT(1), SQLite's 0/1) used as a number, which PostgreSQL refuses.

    - `flag = 1`, `flag <> 0`, `flag IN (0, 1)`: the literals become TRUE/FALSE (the query reads as
      the question meant it);
    - any other comparison with numbers (`flag > 0`, `flag = 2`, `flag = n`), arithmetic (`flag + 1`)
      and numeric aggregates or MIN/MAX over it: `CAST(flag AS INT)`, the 0 or 1 MySQL computes with;
    - `flag = 'yes'`: MySQL compares the flag with the number the string reads as (0 here), where
      PostgreSQL would read 'yes' as TRUE: `CAST(flag AS INT) = 0`. '0' and '1' stay as written.
    """
    could = ctx.screen.could_be
    comparisons = [n for n in ctx.find(*COMPARISONS, exp.In, exp.Between) if _mentions_flag(n, could)]
    numbers = [op for n in ctx.find(*ARITHMETIC) for op in (n.left, n.right) if not is_literal(op)]
    numbers += [aggregated(agg) for agg in ctx.find(*AGGREGATES, *_MIN_MAX)]
    numbers = [op for op in numbers if op is not None and could(op, BOOLEAN)]
    types = ctx.types if comparisons or numbers else None
    if types is None:
        return 0
    targets: dict = {}
    for node in comparisons:
        _comparison(node, types, targets)
    for op in numbers:
        if _is_flag(op, types):
            targets[id(op)] = (op, _as_int)
    return replace_all(targets)
