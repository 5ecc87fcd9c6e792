"""ALTER TABLE replayed in file order (issue 3, part 1), checked in real databases.

Each PostgreSQL case runs the input itself and the normalized output in the embedded server (each in
its own schema, inside a transaction that is rolled back) and compares the two catalogs: columns in
order with their types and NOT NULL, primary key, foreign keys, unique keys, checks. Cases in
other dialects run the output and compare the catalog with what the ALTERs describe; SQLite cases
run input and output in `sqlite3`. Every output is idempotent.
"""

from __future__ import annotations

import sqlite3
import uuid

import psycopg
import pytest

from hive_core.errors import DDLError
from hive_data.ddl import normalize_ddl
from hive_data.ddl.files import normalize_sql_path


def norm(sql: str, read: str = "postgres", target: str = "postgres"):
    res = normalize_ddl(sql, read=read, dialect=target, source="t.sql")
    again = normalize_ddl(res.text, read=target, dialect=target, source="out.sql")
    assert again.text == res.text, "not idempotent"
    assert not again.dropped and not again.clauses
    return res


@pytest.fixture(scope="module")
def pg(pg_uri):
    with psycopg.connect(pg_uri) as conn:
        yield conn


COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attgenerated <> ''
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum
"""
KEYS = """
SELECT con.contype, c.relname,
  ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, i)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.i),
  fc.relname,
  ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, i)
        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.i)
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_class fc ON fc.oid = con.confrelid
WHERE n.nspname = %s AND con.contype IN ('p', 'f', 'u', 'c') AND con.conparentid = 0
"""


def pg_catalog(pg, sql: str) -> dict:
    """Run `sql` in a fresh schema and read back, per table: columns (name, type, not null,
    generated), primary key, foreign keys, unique keys and the number of checks."""
    with pg.transaction():
        schema = "alter_" + uuid.uuid4().hex[:12]
        pg.execute(f"CREATE SCHEMA {schema}")
        pg.execute(f"SET LOCAL search_path TO {schema}")
        pg.execute(sql)
        out: dict[str, dict] = {}
        for table, name, typ, not_null, generated in pg.execute(COLUMNS, (schema,)):
            t = out.setdefault(table, {"columns": [], "pk": [], "fks": set(), "uniques": set(), "checks": 0})
            t["columns"].append((name, typ, not_null, generated))
        for kind, table, cols, ref_table, ref_cols in pg.execute(KEYS, (schema,)):
            t = out[table]
            if kind == "p":
                t["pk"] = cols
            elif kind == "f":
                t["fks"].add((tuple(cols), ref_table, tuple(ref_cols)))
            elif kind == "u":
                t["uniques"].add(tuple(cols))
            else:
                t["checks"] += 1
        raise psycopg.Rollback()
    return out


def same_in_postgres(pg, sql: str) -> tuple[object, dict]:
    """Normalize PostgreSQL DDL; the output's catalog must be the input's. Returns (result, catalog)."""
    res = norm(sql)
    want, got = pg_catalog(pg, sql), pg_catalog(pg, res.text)
    assert got == want, res.text
    return res, got


def cols(cat: dict, table: str) -> list[str]:
    return [c[0] for c in cat[table]["columns"]]


def col(cat: dict, table: str, name: str) -> tuple:
    return next(c for c in cat[table]["columns"] if c[0] == name)


# ---- ADD ----------------------------------------------------------------------------------------------
def test_add_column_with_constraints_and_several_actions_in_one_statement(pg):
    res, cat = same_in_postgres(
        pg,
        "CREATE TABLE p (id int PRIMARY KEY);\n"
        "CREATE TABLE t (a int);\n"
        "ALTER TABLE IF EXISTS ONLY t ADD COLUMN b int NOT NULL DEFAULT 1, ADD c int REFERENCES p(id),\n"
        "  ADD COLUMN IF NOT EXISTS a int, ADD COLUMN d text UNIQUE CHECK (d <> '');\n",
    )
    assert cols(cat, "t") == ["a", "b", "c", "d"]
    assert cat["t"]["fks"] == {(("c",), "p", ("id",))} and cat["t"]["uniques"] == {("d",)}
    assert col(cat, "t", "b")[2] is True
    assert res.applied == {"ADD COLUMN": 4}


def test_add_constraints_primary_foreign_unique_check(pg):
    _, cat = same_in_postgres(
        pg,
        "CREATE TABLE p (id int NOT NULL, code text NOT NULL);\n"
        "CREATE TABLE c (a int, b text, n int);\n"
        "ALTER TABLE p ADD CONSTRAINT p_pk PRIMARY KEY (id), ADD UNIQUE (code);\n"
        "ALTER TABLE c ADD CONSTRAINT c_p FOREIGN KEY (a) REFERENCES p (id) ON DELETE CASCADE;\n"
        "ALTER TABLE c ADD FOREIGN KEY (b) REFERENCES p (code), ADD CHECK (n > 0);\n"
        "ALTER TABLE c ADD CONSTRAINT c_n CHECK (n < 100) NOT VALID;\n",
    )
    assert cat["p"]["pk"] == ["id"] and cat["p"]["uniques"] == {("code",)}
    assert cat["c"]["fks"] == {(("a",), "p", ("id",)), (("b",), "p", ("code",))}
    assert cat["c"]["checks"] == 2


# ---- DROP COLUMN ----------------------------------------------------------------------------------------
def test_drop_column_takes_its_keys_checks_and_references_with_it(pg):
    res, cat = same_in_postgres(
        pg,
        "CREATE TABLE p (a int, b int, c int, d int UNIQUE, PRIMARY KEY (a, b), CHECK (c > a));\n"
        "CREATE TABLE ch (x int, y int, z int REFERENCES p (d), FOREIGN KEY (x, y) REFERENCES p);\n"
        "ALTER TABLE p DROP COLUMN a CASCADE;\n"
        "ALTER TABLE ch DROP COLUMN IF EXISTS nothing;\n",
    )
    assert cols(cat, "p") == ["b", "c", "d"] and cat["p"]["pk"] == [] and cat["p"]["checks"] == 0
    assert cat["ch"]["fks"] == {(("z",), "p", ("d",))}  # the composite key went with p's primary key
    assert any("foreign key (x, y) dropped" in w for w in res.warnings)


def test_drop_column_own_foreign_key_and_generated_column_with_cascade(pg):
    _, cat = same_in_postgres(
        pg,
        "CREATE TABLE p (id int PRIMARY KEY);\n"
        "CREATE TABLE t (id int PRIMARY KEY, p_id int REFERENCES p, twice int GENERATED ALWAYS AS (p_id * 2) STORED,"
        " keep int);\n"
        "ALTER TABLE t DROP p_id CASCADE;\n",
    )
    assert cols(cat, "t") == ["id", "keep"] and cat["t"]["fks"] == set()


def test_drop_column_in_mysql_shrinks_the_keys_it_was_part_of(pg):
    res = norm(
        "CREATE TABLE t (a int NOT NULL, b int NOT NULL, c int, PRIMARY KEY (a, b), UNIQUE KEY u (b, c));\n"
        "ALTER TABLE t DROP COLUMN a;",
        read="mysql",
    )
    cat = pg_catalog(pg, res.text)
    assert cols(cat, "t") == ["b", "c"] and cat["t"]["pk"] == ["b"] and cat["t"]["uniques"] == {("b", "c")}


# ---- RENAME ---------------------------------------------------------------------------------------------
def test_rename_column_everywhere_it_is_named(pg):
    res, cat = same_in_postgres(
        pg,
        "CREATE TABLE p (id int PRIMARY KEY, lo int, hi int, span int GENERATED ALWAYS AS (hi - lo) STORED,"
        " CHECK (lo <= hi), UNIQUE (lo, hi));\n"
        "CREATE TABLE c (p_id int REFERENCES p (id), self int REFERENCES c (p_id) , UNIQUE (p_id));\n"
        "ALTER TABLE p RENAME COLUMN id TO pid;\n"
        "ALTER TABLE p RENAME lo TO low;\n"
        "ALTER TABLE c RENAME COLUMN p_id TO parent;\n",
    )
    assert cols(cat, "p") == ["pid", "low", "hi", "span"] and cat["p"]["uniques"] == {("low", "hi")}
    assert cat["c"]["fks"] == {(("parent",), "p", ("pid",)), (("self",), "c", ("parent",))}
    assert "CHECK (low <= hi)" in res.text and "GENERATED ALWAYS AS (hi - low)" in res.text
    assert res.applied == {"RENAME COLUMN": 3}


def test_rename_table_updates_references_from_other_tables(pg):
    res, cat = same_in_postgres(
        pg,
        "CREATE TABLE p (id int PRIMARY KEY);\n"
        "CREATE TABLE c (p_id int REFERENCES p, me int REFERENCES c (p_id), UNIQUE (p_id));\n"
        "ALTER TABLE p RENAME TO parent;\n"
        "ALTER TABLE c RENAME TO child;\n"
        "CREATE TABLE p (x int);\n",  # the old name is free again
    )
    assert set(cat) == {"parent", "child", "p"}
    assert cat["child"]["fks"] == {(("p_id",), "parent", ("id",)), (("me",), "child", ("p_id",))}
    assert res.tables == ["parent", "child", "p"]


# ---- ALTER COLUMN -----------------------------------------------------------------------------------------
def test_alter_column_type_default_and_not_null(pg):
    _, cat = same_in_postgres(
        pg,
        "CREATE TYPE mood AS ENUM ('sad', 'ok');\n"
        "CREATE TABLE t (a int, b text DEFAULT 'x', c int NOT NULL, d int);\n"
        "ALTER TABLE t ALTER COLUMN a TYPE bigint USING a::bigint, ALTER COLUMN a SET NOT NULL;\n"
        "ALTER TABLE t ALTER b DROP DEFAULT, ALTER COLUMN c DROP NOT NULL, ALTER COLUMN c SET DEFAULT 7;\n"
        "ALTER TABLE t ALTER COLUMN d SET DATA TYPE numeric(10,2);\n",
    )
    assert cat["t"]["columns"] == [
        ("a", "bigint", True, False),
        ("b", "text", False, False),
        ("c", "integer", False, False),
        ("d", "numeric(10,2)", False, False),
    ]


def test_alter_column_default_and_identity(pg):
    res = norm(
        "CREATE TABLE t (id int NOT NULL, n int, g int GENERATED ALWAYS AS (n + 1) STORED);\n"
        "ALTER TABLE t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME t_seq START WITH 5);\n"
        "ALTER TABLE t ALTER COLUMN n SET DEFAULT 3, ALTER COLUMN g DROP EXPRESSION;\n"
        "ALTER TABLE t ALTER COLUMN n SET STATISTICS 100;\n",
    )
    assert (
        "id SERIAL NOT NULL" in res.text and "n INTEGER DEFAULT 3" in res.text and "g INTEGER\n" in res.text
    )
    assert res.dropped["ALTER TABLE ALTER COLUMN SET STATISTICS"] == 1
    pg_catalog(pg, res.text)


# ---- DROP CONSTRAINT --------------------------------------------------------------------------------------
def test_drop_constraint_by_given_and_by_generated_name(pg):
    res, cat = same_in_postgres(
        pg,
        "CREATE TABLE p (id int PRIMARY KEY, code text CONSTRAINT code_u UNIQUE, n int CHECK (n > 0),"
        " m int NOT NULL);\n"
        "CREATE TABLE c (a int REFERENCES p, b text, CONSTRAINT c_b FOREIGN KEY (b) REFERENCES p (code),"
        " CONSTRAINT c_pos CHECK (a > 0));\n"
        "ALTER TABLE c DROP CONSTRAINT c_a_fkey, DROP CONSTRAINT IF EXISTS nothing_here;\n"
        "ALTER TABLE c DROP CONSTRAINT c_pos;\n"
        "ALTER TABLE p DROP CONSTRAINT p_n_check, DROP CONSTRAINT p_m_not_null;\n"
        "ALTER TABLE p DROP CONSTRAINT code_u CASCADE;\n",  # c_b relied on it: it goes too
    )
    assert cat["c"]["fks"] == set() and cat["c"]["checks"] == 0
    assert cat["p"]["checks"] == 0 and cat["p"]["uniques"] == set() and col(cat, "p", "m")[2] is False
    assert any("c: foreign key (b) dropped" in w for w in res.warnings)


def test_drop_primary_key_drops_the_foreign_keys_that_relied_on_it(pg):
    res, cat = same_in_postgres(
        pg,
        "CREATE TABLE p (id int CONSTRAINT p_id PRIMARY KEY, alt int UNIQUE, other int);\n"
        "CREATE TABLE c (a int REFERENCES p, b int REFERENCES p (alt));\n"
        "ALTER TABLE p DROP CONSTRAINT p_id CASCADE;\n"
        "ALTER TABLE p ADD PRIMARY KEY (other);\n",
    )
    assert cat["p"]["pk"] == ["other"] and cat["c"]["fks"] == {(("b",), "p", ("alt",))}
    assert col(cat, "p", "id")[2] is True  # the key made it NOT NULL, and it stays so
    assert res.applied == {"DROP CONSTRAINT": 1, "ADD CONSTRAINT": 1}


def test_rename_constraint_then_drop_it(pg):
    _, cat = same_in_postgres(
        pg,
        "CREATE TABLE t (a int CONSTRAINT first_name CHECK (a > 0), b int);\n"
        "ALTER TABLE t RENAME CONSTRAINT first_name TO second_name;\n"
        "ALTER TABLE t DROP CONSTRAINT second_name;\n",
    )
    assert cat["t"]["checks"] == 0


# ---- MySQL ------------------------------------------------------------------------------------------------
PHPMYADMIN = """
CREATE TABLE `users` (
  `id` int(11) NOT NULL,
  `name` varchar(50) NOT NULL COMMENT 'shown to others',
  `team_id` int(11) DEFAULT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE `teams` (`id` int(11) NOT NULL, `title` varchar(20) DEFAULT NULL) ENGINE=InnoDB;
ALTER TABLE `users` ADD PRIMARY KEY (`id`), ADD KEY `team_id` (`team_id`);
ALTER TABLE `teams` ADD PRIMARY KEY (`id`), ADD UNIQUE KEY `title` (`title`);
ALTER TABLE `users` MODIFY `id` int(11) NOT NULL AUTO_INCREMENT, AUTO_INCREMENT=42;
ALTER TABLE `users` ADD CONSTRAINT `users_ibfk_1` FOREIGN KEY (`team_id`) REFERENCES `teams` (`id`);
ALTER TABLE `users` CHANGE `name` `display_name` varchar(80) NOT NULL COMMENT 'public' AFTER `team_id`;
ALTER TABLE `users` ADD COLUMN `created` datetime NOT NULL FIRST, ENGINE=InnoDB, DEFAULT CHARSET=utf8mb4;
ALTER TABLE `teams` DROP INDEX `title`, ALTER COLUMN `title` SET DEFAULT 'none';
ALTER TABLE `users` DISABLE KEYS;
"""


def test_mysql_export_with_keys_modify_change_and_positions(pg):
    res = norm(PHPMYADMIN, read="mysql")
    cat = pg_catalog(pg, res.text)
    assert cols(cat, "users") == ["created", "id", "team_id", "display_name"]
    assert cat["users"]["pk"] == ["id"] and cat["users"]["fks"] == {(("team_id",), "teams", ("id",))}
    assert cat["teams"]["uniques"] == set()
    assert "display_name TEXT NOT NULL -- public" in res.text and "id SERIAL PRIMARY KEY" in res.text
    assert "title TEXT DEFAULT 'none'" in res.text
    assert res.applied == {
        "ADD CONSTRAINT": 4,
        "MODIFY": 1,
        "CHANGE": 1,
        "ADD COLUMN": 1,
        "DROP CONSTRAINT": 1,
        "SET DEFAULT": 1,
    }
    assert res.dropped["ALTER TABLE ADD INDEX"] == 1 and res.dropped["ALTER TABLE AUTO_INCREMENT"] == 1
    assert res.dropped["ALTER TABLE ENGINE"] == 1 and res.dropped["ALTER TABLE DISABLE KEYS"] == 1


def test_mysql_modify_restates_the_whole_column(pg):
    res = norm(
        "CREATE TABLE t (a int NOT NULL DEFAULT 1 COMMENT 'old', b int);\n"
        "ALTER TABLE t MODIFY COLUMN a bigint;\n"
        "ALTER TABLE t MODIFY b int NOT NULL FIRST;\n",
        read="mysql",
    )
    cat = pg_catalog(pg, res.text)
    assert cat["t"]["columns"] == [("b", "integer", True, False), ("a", "bigint", False, False)]
    assert "old" not in res.text and "DEFAULT" not in res.text  # as MySQL does: restated, not merged


# ---- T-SQL ------------------------------------------------------------------------------------------------
TSQL = """
CREATE TABLE [dbo].[orders] ([id] int NOT NULL, [note] nvarchar(10) NOT NULL, [old] int, [older] int)
GO
ALTER TABLE [dbo].[orders] ADD CONSTRAINT [PK_orders] PRIMARY KEY CLUSTERED ([id] ASC)
GO
ALTER TABLE [dbo].[orders] ALTER COLUMN [note] nvarchar(200) NULL
GO
ALTER TABLE [dbo].[orders] ADD [total] decimal(10, 2) NOT NULL, [placed] datetime2 NULL
GO
ALTER TABLE [dbo].[orders] ADD CONSTRAINT [DF_total] DEFAULT ((0)) FOR [total]
GO
ALTER TABLE [dbo].[orders] DROP CONSTRAINT [DF_total]
GO
ALTER TABLE [dbo].[orders] DROP COLUMN [old], [older]
GO
ALTER TABLE [dbo].[orders] SET (LOCK_ESCALATION = TABLE)
GO
ALTER TABLE [dbo].[orders] WITH CHECK CHECK CONSTRAINT [PK_orders]
GO
"""


def test_tsql_alter_column_lists_and_named_defaults(pg):
    res = norm(TSQL, read="tsql")
    cat = pg_catalog(pg, res.text)
    assert cat["orders"]["columns"] == [
        ("id", "integer", True, False),
        ("note", "text", False, False),
        ("total", "numeric(10,2)", True, False),
        ("placed", "timestamp without time zone", False, False),
    ]
    assert cat["orders"]["pk"] == ["id"] and "DEFAULT" not in res.text
    assert res.dropped["ALTER TABLE SET"] == 1 and res.dropped["ALTER TABLE WITH CHECK CHECK CONSTRAINT"] == 1


# ---- SQLite -----------------------------------------------------------------------------------------------
def sqlite_catalog(sql: str) -> dict:
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(sql)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    out = {}
    for t in tables:
        info = db.execute(f'PRAGMA table_info("{t}")').fetchall()
        fks = db.execute(f'PRAGMA foreign_key_list("{t}")').fetchall()
        out[t] = {
            "columns": [(r[1], bool(r[3])) for r in info],
            "pk": [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]],
            "fks": sorted((r[3], r[2], r[4]) for r in fks),
        }
    db.close()
    return out


def test_sqlite_alters_match_sqlite_itself():
    sql = (
        "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT);\n"
        "CREATE TABLE c (id INTEGER PRIMARY KEY, p_id INTEGER REFERENCES p(id), junk TEXT);\n"
        "ALTER TABLE c ADD COLUMN note TEXT NOT NULL DEFAULT '';\n"
        "ALTER TABLE c RENAME COLUMN p_id TO parent_id;\n"
        "ALTER TABLE p RENAME TO parent;\n"
        "ALTER TABLE parent RENAME name TO title;\n"
        "ALTER TABLE c DROP COLUMN junk;\n"
    )
    res = norm(sql, read="sqlite", target="sqlite")
    assert sqlite_catalog(res.text) == sqlite_catalog(sql)


# ---- options, counting, rejects ---------------------------------------------------------------------------
def test_table_options_are_dropped_and_counted(pg):
    res = norm(
        "CREATE TABLE t (a int PRIMARY KEY, b int) PARTITION BY RANGE (a);\n"
        "ALTER TABLE t OWNER TO bob;\n"
        "ALTER TABLE ONLY t REPLICA IDENTITY FULL, SET (fillfactor = 70), SET TABLESPACE fast;\n"
        "ALTER TABLE t ENABLE ROW LEVEL SECURITY;\n"
        "ALTER TABLE t ATTACH PARTITION t_1 FOR VALUES FROM (1) TO (10);\n"
        "ALTER TABLE t DISABLE TRIGGER ALL, CLUSTER ON t_pkey;\n"
        "ALTER TABLE public.t_id_seq OWNER TO bob;\n"  # pg_dump's sequences: no such table here
    )
    assert res.dropped == {
        "ALTER TABLE OWNER TO": 2,
        "ALTER TABLE REPLICA IDENTITY": 1,
        "ALTER TABLE SET": 1,
        "ALTER TABLE SET TABLESPACE": 1,
        "ALTER TABLE ENABLE ROW LEVEL SECURITY": 1,
        "ALTER TABLE ATTACH PARTITION": 1,
        "ALTER TABLE DISABLE TRIGGER": 1,
        "ALTER TABLE CLUSTER ON": 1,
    }
    assert not res.applied
    assert cols(pg_catalog(pg, res.text), "t") == ["a", "b"]


def test_summary_counts_alter_actions_and_dropped_clauses(tmp_path):
    src = tmp_path / "s.sql"
    src.write_text(
        "CREATE TABLE t (a int, b int STORAGE EXTERNAL) WITH (fillfactor = 70);\n"
        "ALTER TABLE t ADD c int, DROP COLUMN b;\nALTER TABLE t OWNER TO bob;\n"
    )
    lines = []
    normalize_sql_path(src, tmp_path / "out.sql", read="postgres", log=lines.append)
    assert lines[-1].endswith("; 2 ALTER action(s) applied, 2 clause(s) dropped")
    assert "ALTER TABLE OWNER TO 1" in lines[-1]


def test_errors_point_at_the_action():
    text = "CREATE TABLE t (a int, b int);\nALTER TABLE t\n  ADD c int,\n  RENAME COLUMN zz TO y;"
    with pytest.raises(DDLError) as info:
        normalize_ddl(text, source="bad.sql")
    assert (info.value.line, info.value.col) == (4, 17) and "no column 'zz'" in info.value.reason
