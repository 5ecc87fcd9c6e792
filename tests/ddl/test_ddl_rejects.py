"""Input that cannot be normalized faithfully is rejected as a whole, with `file:line:col: reason`.

Each case computes the expected position from the text itself (where the offending token is), so a
test fails if the reported location drifts.
"""

from __future__ import annotations

import pytest

from hive_core.errors import DDLError
from hive_data.ddl import normalize_ddl


def where(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based line and column of the `occurrence`-th `needle` in `text`."""
    pos = -1
    for _ in range(occurrence):
        pos = text.index(needle, pos + 1)
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def reject(text: str, read: str = "postgres") -> DDLError:
    with pytest.raises(DDLError) as info:
        normalize_ddl(text, read=read, source="bad.sql")
    return info.value


CASES = [
    # (name, read, text, needle where the error points, occurrence, words in the reason)
    ("double comma", "postgres", "CREATE TABLE t (\n  a int,, b int\n);", ",", 2, "empty element"),
    ("trailing comma", "postgres", "CREATE TABLE t (\n  a int,\n);", ")", 1, "empty element"),
    ("leading comma", "mysql", "CREATE TABLE t (, a int);", ",", 1, "empty element"),
    ("no columns", "postgres", "SELECT 1;\n  CREATE TABLE t ();", "CREATE", 1, "without columns"),
    (
        "duplicate column",
        "postgres",
        "CREATE TABLE t (\n  a int,\n  b int,\n  a text\n);",
        "a text",
        1,
        "duplicate column",
    ),
    (
        "table twice",
        "mysql",
        "CREATE TABLE t (a int);\nCREATE TABLE t (b int);",
        "CREATE",
        2,
        "created twice",
    ),
    (
        "command fallback",
        "postgres",
        "CREATE TABLE t (a int);\nCREATE TABLE u (a int) WITH SOMETHING ODD;",
        "CREATE",
        2,
        "fell back",
    ),
    (
        "alter fallback",
        "postgres",
        "CREATE TABLE t (a int);\nALTER TABLE t FROBNICATE a;",
        "ALTER",
        1,
        "fell back",
    ),
    ("as select", "postgres", "CREATE TABLE t AS SELECT 1 AS a;", "CREATE", 1, "AS SELECT"),
    (
        "like",
        "postgres",
        "CREATE TABLE u (a int);\nCREATE TABLE t (LIKE u INCLUDING ALL);",
        "CREATE",
        2,
        "LIKE",
    ),
    (
        "untyped computed",
        "tsql",
        "CREATE TABLE t (\n  [A] int,\n  [B] AS ([A]*2) PERSISTED\n)",
        "[B]",
        1,
        "no declared type",
    ),
    (
        "unknown type",
        "postgres",
        "CREATE TABLE t (\n  id int,\n  a my_domain\n);",
        "a my_domain",
        1,
        "unknown type",
    ),
    (
        "parse error",
        "mysql",
        "CREATE TABLE t (\n  a int NOT NULL DEFAULT,\n  b int\n);",
        ",",
        1,
        "cannot parse",
    ),
    (
        "virtual column",
        "postgres",
        "CREATE TABLE t (a int,\n b int GENERATED ALWAYS AS (a + 1) VIRTUAL);",
        "VIRTUAL",
        1,
        "cannot parse",
    ),
    (
        "alter unknown table",
        "postgres",
        "CREATE TABLE t (a int);\nALTER TABLE u ADD PRIMARY KEY (a);",
        "ALTER",
        1,
        "does not create",
    ),
    (
        "key on unknown column",
        "postgres",
        "CREATE TABLE p (\n  x int,\n  PRIMARY KEY (z)\n);",
        "CREATE",
        1,
        "unknown column",
    ),
    (
        "two primary keys",
        "postgres",
        "CREATE TABLE p (\n  x int PRIMARY KEY,\n  y int PRIMARY KEY\n);",
        "y int",
        1,
        "second PRIMARY KEY",
    ),
    (
        "pk-less reference",
        "postgres",
        "CREATE TABLE p (x int);\nCREATE TABLE c (a int REFERENCES p);",
        "CREATE",
        2,
        "primary key has 0",
    ),
    (
        "unknown ref column",
        "postgres",
        "CREATE TABLE p (x int PRIMARY KEY);\nCREATE TABLE c (a int REFERENCES p(y));",
        "CREATE",
        2,
        "unknown column p.y",
    ),
    (
        "fk width mismatch",
        "postgres",
        "CREATE TABLE p (x int, y int);\nCREATE TABLE c (a int, FOREIGN KEY (a) REFERENCES p (x, y));",
        "CREATE",
        2,
        "different number",
    ),
    (
        "partition of unknown",
        "postgres",
        "CREATE TABLE c PARTITION OF nowhere FOR VALUES IN (1);",
        "CREATE",
        1,
        "does not create",
    ),
    (
        "missing ref without columns",
        "postgres",
        "CREATE TABLE c (a int REFERENCES nowhere);",
        "CREATE",
        1,
        "not in the input",
    ),
    (
        "alter drop column",
        "postgres",
        "CREATE TABLE t (a int, b int);\nALTER TABLE t DROP COLUMN b;",
        "ALTER",
        1,
        "unsupported ALTER TABLE action",
    ),
    (
        "alter rename",
        "postgres",
        "CREATE TABLE t (a int);\nALTER TABLE t RENAME TO u;",
        "ALTER",
        1,
        "unsupported ALTER TABLE action",
    ),
    ("unterminated string", "postgres", "CREATE TABLE t (a text DEFAULT 'x);", "CREATE", 1, "tokenize"),
]


@pytest.mark.parametrize(
    ("name", "read", "text", "needle", "occurrence", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_rejected_with_file_line_col(name, read, text, needle, occurrence, words):
    err = reject(text, read)
    line, col = where(text, needle, occurrence)
    assert (err.file, err.line, err.col) == ("bad.sql", line, col), str(err)
    assert words in err.reason
    assert str(err).startswith(f"bad.sql:{line}:{col}: ")


def test_positions_survive_bom_crlf_and_go_batches():
    text = "\ufeffCREATE TABLE a (x int)\r\nGO\r\nCREATE TABLE b (\r\n  y int,, z int\r\n)\r\nGO\r\n"
    err = reject(text, "tsql")
    assert (err.line, err.col) == (4, 9)  # the second comma


def test_positions_inside_create_schema_bodies():
    text = "CREATE SCHEMA s\n  CREATE TABLE a (x int)\n  CREATE TABLE b (y int,, z int);"
    err = reject(text)
    assert (err.line, err.col) == (3, 25)


def test_nothing_to_normalize_is_an_error():
    err = reject("INSERT INTO t VALUES (1);")
    assert "no CREATE TABLE" in err.reason and err.file == "bad.sql"


def test_unknown_dialects_are_errors_not_tracebacks():
    with pytest.raises(DDLError, match="unsupported target dialect"):
        normalize_ddl("CREATE TABLE t (a int)", dialect="db2")
    with pytest.raises(DDLError, match="unknown source dialect"):
        normalize_ddl("CREATE TABLE t (a int)", read="db2")


def test_case_only_differences_rejected_for_case_insensitive_targets():
    text = 'CREATE TABLE t (\n  "Name" text,\n  "name" text\n);'
    assert normalize_ddl(text).text  # fine for PostgreSQL
    with pytest.raises(DDLError) as info:
        normalize_ddl(text, dialect="sqlite", source="bad.sql")
    assert (info.value.line, info.value.col) == where(
        text, '"name"'
    ) and "differ only in case" in info.value.reason
