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
        "CREATE TABLE t (a int);\nALTER TABLE t ADD b int, FROBNICATE a;",
        "FROBNICATE",
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
        "unreadable column type",  # the fallback drops clauses, never a column's type
        "postgres",
        "CREATE TABLE t (a int,\n b int STORAGE EXTERNAL, c int % 2);",
        "%",
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
        "alter drop unknown column",
        "postgres",
        "CREATE TABLE t (a int, b int);\nALTER TABLE t DROP COLUMN c;",
        "c;",
        1,
        "unknown column 'c'",
    ),
    (
        "alter drop unknown constraint",  # a name the database chose itself cannot be known
        "tsql",
        "CREATE TABLE t (a int PRIMARY KEY)\nGO\nALTER TABLE t DROP CONSTRAINT PK__t__3BD0198E;",
        "PK__",
        1,
        "no constraint of that name",
    ),
    (
        "alter rename onto a table",
        "postgres",
        "CREATE TABLE t (a int);\nCREATE TABLE u (a int);\nALTER TABLE t RENAME TO u;",
        "RENAME",
        1,
        "already exists",
    ),
    (
        "alter leaves no column",
        "postgres",
        "CREATE TABLE t (a int, b int);\nALTER TABLE t DROP a, DROP b;",
        "b;",
        1,
        "without columns",
    ),
    (
        "alter drop generated source",
        "postgres",
        "CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2) STORED);\nALTER TABLE t DROP COLUMN a;",
        "a;",
        1,
        "computed from it",
    ),
    (
        "alter key from an index",
        "postgres",
        "CREATE TABLE t (a int);\nALTER TABLE t ADD CONSTRAINT t_pk PRIMARY KEY USING INDEX t_a_idx;",
        "CONSTRAINT",
        1,
        "USING INDEX",
    ),
    (
        "alter empty action",
        "postgres",
        "CREATE TABLE t (a int);\nALTER TABLE t ADD b int,, ADD c int;",
        ",",
        2,
        "empty element",
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
