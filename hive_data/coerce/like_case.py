"""LIKE case: SQLite's LIKE ignores the case of ASCII letters."""

from __future__ import annotations

from sqlglot import exp

from hive_data.coerce.base import Context, rule


@rule("LIKE case")
def sqlite_like_ignores_case(tree: exp.Expr, ctx: Context) -> int:
    """SQLite's `LIKE` matches ASCII letters without regard to case ('Bob' LIKE 'b%' is true) unless
    `PRAGMA case_sensitive_like` is set, which a query cannot see; PostgreSQL's LIKE is case-sensitive.
    For SQLite sources `x LIKE p` becomes `x ILIKE p` (PostgreSQL also folds non-ASCII letters, which
    SQLite does not; SQLite's GLOB, which is case-sensitive, is left alone). No typing needed."""
    if ctx.read != "sqlite":
        return 0
    likes = ctx.find(exp.Like)
    for like in likes:
        like.replace(exp.ILike(**like.args))  # every argument kept: NOT LIKE is `negate`, ESCAPE its own
    return len(likes)
