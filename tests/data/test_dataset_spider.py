"""The Spider train set, MySQL -> PostgreSQL with EXPLAIN: at least 99% kept (answers coerced where MySQL
converted types implicitly), every reject explained, every kept answer passes EXPLAIN again in a fresh
scratch schema, and coercion changes no answer that was kept without it unless a rule rewrote it."""

from __future__ import annotations

import csv
import json

import pytest

from hive_data.coerce import LABELS
from hive_data.normalize_rows import STEPS, iter_output, normalize_dataset, rejects_path
from hive_data.verify import ExplainVerifier


def _spider(corpora, out, pg_uri, **options):
    spider = corpora / "spider-mysql" / "dataset_mysql"
    src = spider / "train_queries.csv"
    summary = normalize_dataset(
        src,
        out,
        schema_dir=spider / "databases",
        schema_key="database",
        read="mysql",
        dialect="postgres",
        verify="explain",
        pg_uri=pg_uri,
        progress=False,
        **options,
    )
    return src, summary


def _kept_by_row(out, summary) -> dict[int, dict]:
    """Input row number -> output row (outputs keep input order; Spider has no exact duplicates)."""
    assert summary.duplicates == 0
    rejected = {json.loads(line)["row"] for line in open(rejects_path(out), encoding="utf-8")}
    numbers = [n for n in range(1, summary.rows_in + 1) if n not in rejected]
    rows = list(iter_output(out))
    assert len(rows) == len(numbers) == summary.rows_out
    return dict(zip(numbers, rows))


@pytest.fixture(scope="module")
def coerced_run(corpora, pg_uri, tmp_path_factory):
    out = tmp_path_factory.mktemp("spider") / "train.jsonl"
    src, summary = _spider(corpora, out, pg_uri)
    return src, out, summary


@pytest.mark.slow
@pytest.mark.corpora
def test_spider_train_keeps_99_percent(coerced_run, pg_uri):
    src, out, s = coerced_run
    with open(src, encoding="utf-8", newline="") as fh:
        original = list(csv.DictReader(fh))
    assert s.rows_in == len(original) == s.rows_out + s.rows_rejected + s.duplicates
    assert s.rows_out / s.rows_in >= 0.99, s.text()

    rejects = [json.loads(line) for line in open(rejects_path(out), encoding="utf-8")]
    assert len(rejects) == s.rows_rejected
    for rej in rejects:
        assert rej["step"] in STEPS and rej["reason"].strip()
        assert rej["original"] == original[rej["row"] - 1]  # row numbers point at the input row

    rows = list(iter_output(out))
    assert len(rows) == s.rows_out
    with ExplainVerifier(pg_uri, prefix="hive_recheck") as verifier:
        for row in rows:
            assert row["dialect"] == "postgres" and row["schema"].startswith("-- Dialect: postgres\n")
            verifier.explain(row["sql"], row["schema"])


@pytest.mark.slow
@pytest.mark.corpora
def test_coercion_changes_only_the_rows_it_rewrites(coerced_run, corpora, pg_uri, tmp_path):
    """Every row kept without coercion is kept with it, byte for byte, unless a rule rewrote it; the
    summary counts exactly the rows that say which rules rewrote them."""
    _, out, s = coerced_run
    plain_out = tmp_path / "plain.jsonl"
    _, plain = _spider(corpora, plain_out, pg_uri, coerce=False)
    assert not plain.coerced and s.rows_out > plain.rows_out

    before, after = _kept_by_row(plain_out, plain), _kept_by_row(out, s)
    assert not any("coerced" in row for row in before.values())
    assert set(before) <= set(after)  # coercion loses no row
    for number, row in before.items():
        if "coerced" not in after[number]:
            assert after[number] == row, number

    rewritten = [row["coerced"] for row in after.values() if "coerced" in row]
    assert all(labels and set(labels) <= set(LABELS) for labels in rewritten)
    assert sum(s.coerced.values()) == sum(len(labels) for labels in rewritten)
