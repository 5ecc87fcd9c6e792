"""The Spider train set, MySQL -> PostgreSQL with EXPLAIN: at least 92% kept, every reject explained,
every kept answer passes EXPLAIN again in a fresh scratch schema."""

from __future__ import annotations

import csv
import json

import pytest

from hive_data.normalize_rows import STEPS, iter_output, normalize_dataset, rejects_path
from hive_data.verify import ExplainVerifier


@pytest.mark.slow
@pytest.mark.corpora
def test_spider_train_keeps_92_percent(corpora, tmp_path, pg_uri):
    spider = corpora / "spider-mysql" / "dataset_mysql"
    src = spider / "train_queries.csv"
    out = tmp_path / "train.jsonl"
    s = normalize_dataset(
        src,
        out,
        schema_dir=spider / "databases",
        schema_key="database",
        read="mysql",
        dialect="postgres",
        verify="explain",
        pg_uri=pg_uri,
        progress=False,
    )
    with open(src, encoding="utf-8", newline="") as fh:
        original = list(csv.DictReader(fh))
    assert s.rows_in == len(original) == s.rows_out + s.rows_rejected + s.duplicates
    assert s.rows_out / s.rows_in >= 0.92, s.text()

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
