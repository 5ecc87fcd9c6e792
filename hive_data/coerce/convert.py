"""The conversions the source engines apply implicitly, spelled as explicit PostgreSQL expressions.

MySQL (and SQLite, in arithmetic and aggregates) turn a string into a number by reading its longest
numeric prefix after leading white space: '12abc' is 12, ' 3.5e2x' is 350, 'abc' and '' are 0; NULL
stays NULL. `text_to_number` spells exactly that in PostgreSQL, with a regular expression that never
fails on any text (a plain `CAST(x AS ...)` raises on 'abc' at run time), as DOUBLE PRECISION because
MySQL compares and sums converted strings as doubles. The one text it cannot take is a number beyond
double range ('1e400'), where PostgreSQL raises and MySQL clamps with a warning.
"""

from __future__ import annotations

import decimal
import functools
import re

import sqlglot
from sqlglot import exp

# What reaches CAST is ASCII only, on purpose: a Unicode digit or space matched there would raise.
_SPACE = r"[ \t\n\r\f\v]"
_NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
# The numeric prefix MySQL reads, captured without the white space before it (SUBSTRING returns the
# group), and a whole text SQLite's numeric affinity converts; PostgreSQL regular expressions.
PREFIX = f"^\\s*({_NUMBER})"
WELL_FORMED = f"^{_SPACE}*{_NUMBER}{_SPACE}*$"
_PREFIX = re.compile(PREFIX, re.ASCII)
# A whole string PostgreSQL reads as a number of each kind (its input functions allow white space).
_INTEGER_TEXT = re.compile(f"{_SPACE}*[-+]?[0-9]+{_SPACE}*", re.ASCII)
_NUMBER_TEXT = re.compile(WELL_FORMED, re.ASCII)

_TEMPLATE = (
    f"CAST(COALESCE(SUBSTRING(x FROM '{PREFIX}'), CASE WHEN NOT x IS NULL THEN '0' END) AS DOUBLE PRECISION)"
)
_AFFINITY = (
    f"CASE WHEN x ~ '{WELL_FORMED}' THEN CAST(x AS DOUBLE PRECISION) "
    "WHEN NOT x IS NULL THEN CAST('Infinity' AS DOUBLE PRECISION) END"
)


@functools.cache
def _template(sql: str) -> exp.Expr:
    return sqlglot.parse_one(sql, read="postgres")


def _fill(template: str, node: exp.Expr) -> exp.Expr:
    """`template` with each placeholder column `x` replaced by a copy of `node`."""
    out = _template(template).copy()
    for placeholder in list(out.find_all(exp.Column)):
        if placeholder.name == "x" and not placeholder.table:
            placeholder.replace(node.copy())
    return out


def text_to_number(node: exp.Expr) -> exp.Expr:
    """`node` (a text expression) as the number MySQL reads from it: its numeric prefix, 0 when it
    has none, NULL when it is NULL; never raises on any text that fits a double."""
    return _fill(_TEMPLATE, node)


def numeric_affinity(node: exp.Expr) -> exp.Expr:
    """`node` (text) compared as SQLite compares a text with a number column: the number the text is
    when the whole text is one (numeric affinity converts only those), else greater than every number
    (a text stays text, and SQLite orders texts after numbers): +Infinity, which compares the same
    way with any finite number under every operator. NULL stays NULL."""
    return _fill(_AFFINITY, node)


def string_value(text: str) -> decimal.Decimal:
    """The number MySQL reads from a string: its numeric prefix, or 0."""
    match = _PREFIX.match(text)
    return decimal.Decimal(match.group(1)) if match else decimal.Decimal(0)


def number_literal(value: decimal.Decimal) -> exp.Expr:
    """A number literal for `value`, written plainly (12, -3.5, 1000 for 1e3)."""
    text = format(value.normalize(), "f") if value == value.to_integral_value() else format(value, "f")
    return exp.Literal.number(text)


def reads_as(text: str, integer: bool) -> bool:
    """Whether PostgreSQL reads the string as an integer (`integer`) or a decimal number without
    changing what MySQL reads from it (no 'NaN' or 'Infinity', which MySQL reads as 0)."""
    return bool((_INTEGER_TEXT if integer else _NUMBER_TEXT).fullmatch(text))


def sqlite_text(literal: exp.Expr) -> exp.Literal:
    """A number literal as the text SQLite compares it as (TEXT affinity applied to it): integers as
    written, reals in SQLite's %!.15g form ('5.0', '1000.0')."""
    text = literal.sql()
    if re.fullmatch(r"-?\d+", text):
        return exp.Literal.string(str(int(text)))
    value = float(text)
    shown = f"{value:.15g}"
    if not re.search(r"[.eEn]", shown):
        shown += ".0"
    return exp.Literal.string(shown)


def cast(node: exp.Expr, to: str) -> exp.Cast:
    """`CAST(node AS to)` around a copy of `node`."""
    return exp.cast(node.copy(), to, dialect="postgres")
