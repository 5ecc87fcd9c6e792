"""What every rule shares: the `Context` it reads types from, the `Unfaithful` rejection, and the shapes
of the expressions that compare or combine two operands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlglot import exp

from hive_core.errors import SQLError
from hive_data.coerce.typed import Screen, TypedSchema, Types

COMPARISONS = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ, exp.NullSafeNEQ)
EQUALITIES = (exp.EQ, exp.NEQ, exp.NullSafeEQ, exp.NullSafeNEQ)
ARITHMETIC = (exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod, exp.IntDiv)


class Unfaithful(SQLError):
    """The answer relies on source-engine behaviour that no target query reproduces; the reason names
    the construct. Rows with it are rejected at step `coerce`."""

    step = "coerce"


@dataclass
class Context:
    """What a rule may consult: the source dialect whose semantics it reproduces (`read`, "mysql" or
    "sqlite"), the row's schema, and the types of the tree as it stands (`types`, None when the answer
    cannot be typed against the schema, e.g. an unknown table: rules that need types then do nothing)."""

    read: str
    schema: TypedSchema
    tree: exp.Expr
    _types: Types | None = field(default=None, repr=False)
    _typed: bool = field(default=False, repr=False)
    _screen: Screen | None = field(default=None, repr=False)
    _index: dict[type, list[exp.Expr]] | None = field(default=None, repr=False)

    def find(self, *classes: type) -> list[exp.Expr]:
        """The tree's nodes that are instances of `classes` (grouped by class, each group in walk order):
        one walk of the tree serves every rule, which is most of what rules cost an answer they leave
        alone."""
        if self._index is None:
            self._index = {}
            for node in self.tree.walk():
                self._index.setdefault(type(node), []).append(node)
        return [node for kind, nodes in self._index.items() if issubclass(kind, classes) for node in nodes]

    @property
    def screen(self) -> Screen:
        """The kinds a node could have, from names alone (`typed.Screen`): for skipping `types`."""
        if self._screen is None:
            self._screen = Screen(self.find(exp.Alias), self.schema)
        return self._screen

    @property
    def types(self) -> Types | None:
        if not self._typed:
            self._typed = True
            try:
                self._types = Types(self.tree, self.schema)
            except Exception:  # noqa: BLE001 - sqlglot's optimizer raises many kinds; untyped: no rewrite
                self._types = None
        return self._types

    def retype(self) -> None:
        """Forget the types: a rule changed the tree."""
        self._types, self._typed, self._screen, self._index = None, False, None, None


Rule = Callable[[exp.Expr, Context], int]  # rewrites the tree in place; returns how many places it changed


def rule(label: str) -> Callable[[Rule], Rule]:
    """Name a rule for the summary and the rows' `coerced` field."""

    def mark(fn: Rule) -> Rule:
        fn.label = label  # type: ignore[attr-defined]
        return fn

    return mark


def compared(ctx: Context) -> Iterator[tuple[exp.Expr, exp.Expr, exp.Expr]]:
    """(predicate, left, right) for each pair of operands the tree compares: both sides of `=`, `<`,
    ... ; `x` with each item of `x IN (...)` (and with the subquery of `x IN (SELECT ...)`); `x` with
    each bound of `x BETWEEN a AND b`. Taken as a list first, so callers may rewrite as they go."""
    out = []
    for node in ctx.find(*COMPARISONS, exp.In, exp.Between):
        if isinstance(node, exp.In):
            items = list(node.expressions)
            if node.args.get("query") is not None:
                items.append(node.args["query"])
            out.extend((node, node.this, item) for item in items)
        elif isinstance(node, exp.Between):
            out.extend(
                (node, node.this, node.args[k]) for k in ("low", "high") if node.args.get(k) is not None
            )
        else:
            out.append((node, node.left, node.right))
    return iter(out)


def combined(ctx: Context) -> Iterator[tuple[exp.Expr, exp.Expr, exp.Expr]]:
    """(operator, left, right) for each arithmetic operator (`+ - * / % DIV`), as a list first."""
    return iter([(node, node.left, node.right) for node in ctx.find(*ARITHMETIC)])


Rewrite = Callable[[exp.Expr], exp.Expr]  # a node -> what replaces it (built from a copy)


def replace_all(targets: dict[int, tuple[exp.Expr, Rewrite]]) -> int:
    """Apply collected rewrites (id(node) -> (node, rewrite)), deepest node first, each built when it is
    applied, so a rewrite of an outer node copies the inner ones already made; how many there were."""
    for node, rewrite in sorted(targets.values(), key=lambda pair: -pair[0].depth):
        node.replace(rewrite(node))
    return len(targets)
