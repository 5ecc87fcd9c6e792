"""Result comparators for execution accuracy: pure functions over lists of row tuples.

Two rules, as the public benchmarks define them (see ../shared/reference/evaluation-notes.md):

- ``set`` (BIRD): ``set(pred) == set(gold)``; row order and duplicate rows are ignored, column order
  matters (a row is a tuple).
- ``bag`` (Spider test-suite): same row and column counts, equal as multisets of rows under some
  permutation of the predicted columns; row order matters only when the gold query orders its result
  (ORDER BY at its top level).

Before comparing, every value is normalized (`normalize_value`) so that the Python types a driver
returns for one SQL value agree: ``Decimal('3.00')``, ``3.0`` and ``3`` are one number; non-integral
numbers are rounded to ``SIGNIFICANT`` significant digits (a relative tolerance of about 1e-9, well
inside the 1e-6 the benchmarks allow for float arithmetic done in another order); NULL equals NULL;
two empty results are equal whatever their columns.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal

COMPARE_MODES = ("set", "bag")
SIGNIFICANT = 9
# Column permutations tried before giving up: Spider's suite never needs many, since the candidate
# columns of each position are first narrowed to those holding the same multiset of values.
MAX_PERMUTATIONS = 10_000


def normalize_value(value: object) -> object:
    """A hashable, comparable stand-in for one result cell (see the module docstring)."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, (int, float, Decimal)):
        return _number(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return tuple(normalize_value(v) for v in value)
    if isinstance(value, dict):  # JSON: key order is not part of the value
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, (dt.date, dt.time, dt.timedelta, uuid.UUID)):
        return value  # hashable and ordered within their own type already
    return str(value)


def _number(value: int | float | Decimal) -> int | float | str:
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value).lower()  # 'nan', 'infinity', '-infinity': equal to the float ones below
        if value == value.to_integral_value():
            return int(value)
        value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "infinity" if value > 0 else "-infinity"
    if value.is_integer():
        return int(value)
    # float(f"{x:.9g}") rounds to 9 significant digits: Decimal averages and float averages of the
    # same numbers, or sums taken in another order, print alike.
    return float(f"{value:.{SIGNIFICANT}g}")


def normalize_rows(rows: Iterable[Sequence]) -> list[tuple]:
    return [tuple(normalize_value(v) for v in row) for row in rows]


def _sort_key(value: object) -> tuple:
    """Orders values of mixed types (None, numbers, strings, dates...) deterministically."""
    if value is None:
        return (0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, value)
    return (2, type(value).__name__, repr(value))


def set_equal(gold: Sequence[Sequence], pred: Sequence[Sequence]) -> bool:
    """BIRD: equal as sets of row tuples (row order and duplicates ignored, column order kept)."""
    return set(normalize_rows(gold)) == set(normalize_rows(pred))


def bag_equal(gold: Sequence[Sequence], pred: Sequence[Sequence], *, ordered: bool = False) -> bool:
    """Spider test-suite: equal as multisets of rows (as lists when `ordered`) under some permutation
    of the predicted columns."""
    g, p = normalize_rows(gold), normalize_rows(pred)
    if not g and not p:
        return True
    if len(g) != len(p):
        return False
    width = len(g[0])
    if any(len(r) != width for r in g) or any(len(r) != width for r in p):
        return False
    # Quick reject: whatever the column order, each row holds the same multiset of values.
    if Counter(tuple(sorted(r, key=_sort_key)) for r in g) != Counter(
        tuple(sorted(r, key=_sort_key)) for r in p
    ):
        return False
    for perm in _permutations(g, p, width):
        permuted = [tuple(r[i] for i in perm) for r in p]
        if (permuted == g) if ordered else (Counter(permuted) == Counter(g)):
            return True
    return False


def _permutations(g: list[tuple], p: list[tuple], width: int):
    """Column orders of `p` worth trying: pred column i may stand at gold position j only if the two
    columns hold the same multiset of values."""
    gold_cols = [Counter(r[j] for r in g) for j in range(width)]
    pred_cols = [Counter(r[i] for r in p) for i in range(width)]
    options = [[i for i in range(width) if pred_cols[i] == gold_cols[j]] for j in range(width)]
    if any(not o for o in options):
        return
    tried = 0
    chosen: list[int] = []
    used = [False] * width

    def extend(j: int):
        nonlocal tried
        if j == width:
            tried += 1
            yield tuple(chosen)
            return
        for i in options[j]:
            if used[i] or tried >= MAX_PERMUTATIONS:
                continue
            used[i] = True
            chosen.append(i)
            yield from extend(j + 1)
            chosen.pop()
            used[i] = False

    yield from extend(0)


def results_equal(
    gold: Sequence[Sequence], pred: Sequence[Sequence], mode: str, *, ordered: bool = False
) -> bool:
    """Compare two results by `mode` (`set` or `bag`); `ordered` (gold sorts its result) counts for bag."""
    if mode == "set":
        return set_equal(gold, pred)
    if mode == "bag":
        return bag_equal(gold, pred, ordered=ordered)
    raise ValueError(f"unknown compare mode {mode!r}; choose one of {', '.join(COMPARE_MODES)}")


def orders_rows(query) -> bool:
    """Whether a parsed query (a sqlglot expression) sorts its final result: ORDER BY at the top level
    (of the outer SELECT or of a set operation), not inside a subquery or window."""
    return query.args.get("order") is not None
