"""Schema-aware transpilation: make explicit in the target what the source engine did implicitly.

An answer written for MySQL or SQLite relies on their implicit conversions: a text column compared
with a number, SUM over text, a flag compared with 1, LIKE on a date. sqlglot transpiles the syntax
but cannot know the types, so PostgreSQL refuses such answers (``operator does not exist: text =
integer``). `coerce` types the answer against the row's canonical schema (`typed`: sqlglot's
`qualify` and `annotate_types` on a copy) and applies `RULES` in order; each rule is a small function
with its own contract (see its docstring) that rewrites only where the types say the target would
refuse or compute something else, so a well-typed answer comes back untouched and prints byte for
byte as before. What no target query can reproduce (a value MySQL takes from an arbitrary row) raises
`Unfaithful`, whose reason names the construct.

Integer division needs no rule: sqlglot reads MySQL's `/` as a division that is never integral and
never fails on zero, and prints it for PostgreSQL as `CAST(a AS DOUBLE PRECISION) / NULLIF(b, 0)`;
SQLite's integral `/` stays `/`.

Adding a rule: write a function `(tree, ctx) -> number of places changed` in a module of its own,
label it with `@rule("...")`, and add it to `RULES`.
"""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, Rule, Unfaithful
from hive_data.coerce.boolean_integer import boolean_as_integer
from hive_data.coerce.distinct_order_by import distinct_ordered_by_unselected
from hive_data.coerce.like_case import sqlite_like_ignores_case
from hive_data.coerce.like_non_text import like_on_non_text
from hive_data.coerce.loose_group_by import loose_group_by
from hive_data.coerce.set_operation_types import set_operation_column_types
from hive_data.coerce.string_number import string_literal_as_number
from hive_data.coerce.temporal_text import temporal_compared_as_text
from hive_data.coerce.text_aggregates import numeric_aggregates_over_text
from hive_data.coerce.text_number import text_number_comparison
from hive_data.coerce.typed import typed_schema

# In order: the rejections first (nothing to rewrite in a rejected answer), aggregates before the
# comparisons that may hold them (SUM(text) > 5 compares a number once its argument is converted).
RULES: tuple[Rule, ...] = (
    loose_group_by,
    distinct_ordered_by_unselected,
    numeric_aggregates_over_text,
    boolean_as_integer,
    string_literal_as_number,
    text_number_comparison,
    temporal_compared_as_text,
    like_on_non_text,
    sqlite_like_ignores_case,
    set_operation_column_types,
)
LABELS = tuple(r.label for r in RULES)  # type: ignore[attr-defined]
SOURCES = ("mysql", "sqlite")  # the dialects whose implicit conversions the rules reproduce
TARGETS = ("postgres",)  # the dialect they write for

__all__ = ["LABELS", "RULES", "SOURCES", "TARGETS", "Unfaithful", "coerce"]


def coerce(
    tree: exp.Expr, schema_text: str, read: str, target: str = "postgres"
) -> tuple[exp.Expr, list[str]]:
    """Rewrite `tree` (an answer read as `read`, identifiers as in the schema) in place so that `target`
    computes what `read` computed, typed against `schema_text` (canonical DDL in `target`). Returns the
    tree and the labels of the rules that changed it, in `RULES` order (empty: the tree is untouched).

    Does nothing for a source or target the rules are not written for, for a schema without typed
    tables, and for an answer that cannot be typed against it (an unknown table: EXPLAIN says so).
    Raises `Unfaithful` (an SQLError with step "coerce") when the answer has no faithful target form.
    """
    if read not in SOURCES or target not in TARGETS:
        return tree, []
    schema = typed_schema(schema_text, target)
    if schema is None:
        return tree, []
    ctx = Context(read, schema, tree)
    fired = []
    for rewrite in RULES:
        if rewrite(tree, ctx):
            fired.append(rewrite.label)  # type: ignore[attr-defined]
            ctx.retype()
    return tree, fired
