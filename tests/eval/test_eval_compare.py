"""Result comparators: each rule of BIRD's set equality and Spider test-suite's bag equality."""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlglot

from hive_data.compare import bag_equal, normalize_value, orders_rows, results_equal, set_equal


def test_row_order_ignored_without_order_by():
    gold = [(1, "a"), (2, "b")]
    pred = [(2, "b"), (1, "a")]
    assert set_equal(gold, pred)
    assert bag_equal(gold, pred, ordered=False)


def test_row_order_matters_for_bag_when_gold_orders():
    gold = [(1, "a"), (2, "b")]
    assert not bag_equal(gold, [(2, "b"), (1, "a")], ordered=True)
    assert bag_equal(gold, [(1, "a"), (2, "b")], ordered=True)
    # BIRD's set rule never looks at order
    assert results_equal(gold, [(2, "b"), (1, "a")], "set", ordered=True)


def test_duplicates_ignored_by_set_counted_by_bag():
    gold = [("x",), ("x",), ("y",)]
    pred = [("x",), ("y",)]
    assert set_equal(gold, pred)
    assert not bag_equal(gold, pred)
    assert not bag_equal([("x",), ("x",), ("y",)], [("x",), ("y",), ("y",)])  # same length, other counts


def test_column_order_matters_for_set_not_for_bag():
    gold = [(1, "a"), (2, "b")]
    pred = [("a", 1), ("b", 2)]
    assert not set_equal(gold, pred)
    assert bag_equal(gold, pred)
    assert bag_equal(gold, [("b", 2), ("a", 1)])


def test_column_permutation_must_be_one_for_all_rows():
    # per-row value multisets agree (the quick check passes), but no single column order maps all rows
    gold = [(1, 2), (3, 4)]
    pred = [(1, 2), (4, 3)]
    assert not bag_equal(gold, pred)


def test_permutation_search_with_repeated_columns():
    gold = [(1, 1, 2), (1, 1, 3)]
    pred = [(2, 1, 1), (3, 1, 1)]
    assert bag_equal(gold, pred)
    assert not bag_equal(gold, [(2, 1, 1), (1, 3, 1)])


def test_column_and_row_counts_must_agree():
    assert not bag_equal([(1, 2)], [(1,)])
    assert not set_equal([(1, 2)], [(1,)])
    assert not bag_equal([(1,)], [(1,), (1,)])


def test_nulls_equal_each_other():
    assert set_equal([(None, 1)], [(None, 1)])
    assert bag_equal([(None, 1), (2, None)], [(None, 2), (1, None)])
    assert not set_equal([(None,)], [(0,)])
    assert not bag_equal([(None,)], [("",)])


def test_floats_decimals_and_ints_compare_numerically():
    assert normalize_value(Decimal("3.00")) == normalize_value(3) == normalize_value(3.0)
    assert set_equal([(Decimal("0.3"),)], [(0.1 + 0.2,)])
    assert bag_equal([(10 / 3,)], [(Decimal("3.333333333333333333"),)])
    assert not set_equal([(3.3333,)], [(3.3334,)])
    assert not set_equal([(1234567,)], [(1234568,)])  # integers stay exact however large
    assert set_equal([(float("nan"),)], [(Decimal("NaN"),)])


def test_empty_results_equal_each_other():
    assert set_equal([], [])
    assert bag_equal([], [], ordered=True)
    assert not bag_equal([], [(None,)])
    assert not set_equal([(1,)], [])


def test_booleans_are_not_numbers_for_hashing():
    assert not set_equal([(True,)], [("t",)])
    assert set_equal([(True, None)], [(True, None)])


def test_unhashable_driver_values():
    assert set_equal([([1, 2], {"b": 1, "a": 2}, memoryview(b"ab"))], [((1, 2), {"a": 2, "b": 1}, b"ab")])


def test_unknown_mode_refused():
    with pytest.raises(ValueError):
        results_equal([], [], "list")


@pytest.mark.parametrize(
    "sql, ordered",
    [
        ("SELECT a FROM t ORDER BY a", True),
        ("SELECT a FROM t", False),
        ("SELECT a FROM (SELECT a FROM t ORDER BY a) AS s", False),
        ("SELECT a, ROW_NUMBER() OVER (ORDER BY a) FROM t", False),
        ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
        ("WITH s AS (SELECT a FROM t ORDER BY a) SELECT a FROM s", False),
        ("SELECT a FROM t ORDER BY a LIMIT 1", True),
    ],
)
def test_orders_rows_only_at_top_level(sql, ordered):
    assert orders_rows(sqlglot.parse_one(sql, read="postgres")) is ordered
