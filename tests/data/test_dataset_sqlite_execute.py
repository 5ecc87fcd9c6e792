"""`--verify execute` on a SQLite-sourced text-to-SQL set: hand-written questions over the shared
corpora's SQLite schemas (Chinook, Sakila), committed in fixtures/datasets/sqlite_*.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hive_data.normalize_rows import iter_output, normalize_dataset, rejects_path
from hive_data.verify_execute import ExecuteVerifier

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "datasets"
SAMPLES = {  # fixture -> the corpus folder its db_id names a schema file in
    "sqlite_chinook.jsonl": "chinook/ChinookDatabase/DataSources",
    "sqlite_sakila.jsonl": "sakila/sqlite-sakila-db",
}


@pytest.mark.corpora
@pytest.mark.slow  # 10-14 s here: keeps the quick subset under 5 minutes
def test_a_sqlite_sourced_set_keeps_95_percent_and_every_kept_row_agrees(corpora, tmp_path, pg_uri):
    kept_rows, total = 0, 0
    for name, folder in SAMPLES.items():
        src = FIXTURES / name
        out = tmp_path / f"{name}.out.jsonl"
        s = normalize_dataset(
            src, out, schema_dir=corpora / folder, schema_key="db_id", read="sqlite", dialect="postgres",
            verify="execute", pg_uri=pg_uri, progress=False, num_proc=1,
        )  # fmt: skip
        assert s.rows_in == s.rows_out + s.rows_rejected + s.duplicates
        assert s.executed == s.rows_out and not s.not_executed  # every kept row was run in both engines
        assert "verified by execution" in s.text()
        for line in open(rejects_path(out), encoding="utf-8"):
            reject = json.loads(line)
            assert reject["step"] in ("execute", "coerce") and reject["reason"].strip()
        kept_rows += s.rows_out
        total += s.rows_in
        # every kept answer agrees with its source answer again, in a fresh verifier
        sources = [json.loads(x) for x in src.read_text().splitlines()]
        by_question = {r["question"]: r["query"] for r in sources}
        with ExecuteVerifier(pg_uri, prefix="hive_vx_recheck") as verifier:
            for row in iter_output(out):
                source = by_question[row["question"]]
                assert verifier.check(source, "sqlite", row["query"], row["schema"]) is True, row["query"]
    assert total == 80 and kept_rows / total >= 0.95, (kept_rows, total)


@pytest.mark.corpora
def test_mysql_sources_fall_back_to_explain_and_say_so(corpora, tmp_path, pg_uri):
    spider = corpora / "spider-mysql" / "dataset_mysql"
    rows = (spider / "train_queries.csv").read_text(encoding="utf-8").splitlines()[:21]
    src = tmp_path / "spider20.csv"
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    s = normalize_dataset(
        src, tmp_path / "out.jsonl", schema_dir=spider / "databases", schema_key="database", read="mysql",
        dialect="postgres", verify="execute", pg_uri=pg_uri, progress=False, num_proc=1,
    )  # fmt: skip
    assert s.rows_out > 0 and s.executed == 0 and s.not_executed == {"mysql": s.rows_out}
    assert "not executable here, checked by EXPLAIN only: mysql" in s.text()
