"""The canonical format, rule by rule (issue 2, rules 1-11), and the tricky inputs it handles."""

from __future__ import annotations

import re

import pytest

from hive_data.ddl import normalize_ddl


def norm(sql: str, read: str = "postgres", **kw) -> str:
    return normalize_ddl(sql, read=read, source="t.sql", **kw).text


def block(text: str, table: str) -> str:
    """The CREATE TABLE block of one table in canonical text."""
    m = re.search(rf"-- Table: {re.escape(table)}\n(CREATE TABLE .*?\n\);\n)", text, re.S)
    assert m, f"no table {table} in:\n{text}"
    return m.group(1)


def column_line(text: str, table: str, column: str) -> str:
    for line in block(text, table).splitlines()[1:-1]:
        if re.match(rf'  "?{re.escape(column)}"? ', line):
            return line.strip()
    raise AssertionError(f"no column {column} in {table}")


# ---- rule 1: layout -------------------------------------------------------------------------------
def test_rule1_layout_matches_the_issue_example_exactly(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "users_orders.sql").read_text(), read="mysql")
    assert text == (
        "-- Dialect: postgres\n"
        "-- Table: users\n"
        "CREATE TABLE users (\n"
        "  id INTEGER PRIMARY KEY,\n"
        "  name TEXT NOT NULL,\n"
        "  email TEXT UNIQUE,\n"
        "  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP\n"
        ");\n"
        "\n"
        "-- Table: orders\n"
        "CREATE TABLE orders (\n"
        "  id INTEGER PRIMARY KEY,\n"
        "  user_id INTEGER REFERENCES users(id),\n"
        "  total DECIMAL(10,2),\n"
        "  created_at TIMESTAMP\n"
        ");\n"
    )


def test_rule1_header_names_the_target_dialect():
    for target in ("postgres", "mysql", "sqlite"):
        assert normalize_ddl("CREATE TABLE t (a int)", dialect=target).text.startswith(
            f"-- Dialect: {target}\n"
        )


# ---- rule 2: foreign keys -------------------------------------------------------------------------
def test_rule2_table_level_named_and_altered_fks_are_inlined_with_actions():
    text = norm(
        "CREATE TABLE p (id int PRIMARY KEY);\n"
        "CREATE TABLE c (\n  a int,\n  b int,\n  d int,\n"
        "  FOREIGN KEY (a) REFERENCES p(id) ON DELETE CASCADE,\n"
        "  CONSTRAINT fk_b FOREIGN KEY (b) REFERENCES p (id) ON UPDATE SET NULL\n);\n"
        "ALTER TABLE c ADD CONSTRAINT fk_d FOREIGN KEY (d) REFERENCES p(id) ON DELETE RESTRICT;"
    )
    assert column_line(text, "c", "a") == "a INTEGER REFERENCES p(id) ON DELETE CASCADE,"
    assert column_line(text, "c", "b") == "b INTEGER REFERENCES p(id) ON UPDATE SET NULL,"
    assert column_line(text, "c", "d") == "d INTEGER REFERENCES p(id) ON DELETE RESTRICT"
    assert "FOREIGN KEY" not in text and "CONSTRAINT" not in text


def test_rule2_reference_without_columns_resolves_to_primary_key():
    text = norm("CREATE TABLE p (code text PRIMARY KEY);\nCREATE TABLE c (p_code text REFERENCES p);")
    assert column_line(text, "c", "p_code") == "p_code TEXT REFERENCES p(code)"


def test_rule2_composite_fk_stays_one_table_level_line(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "shop_mysql.sql").read_text(), read="mysql")
    lines = block(text, "shipment").splitlines()
    assert lines[-2] == "  FOREIGN KEY (order_id, line_no) REFERENCES order_line(order_id, line_no)"
    assert column_line(text, "shipment", "order_id") == "order_id INTEGER NOT NULL,"


def test_rule2_inline_and_duplicate_table_level_fk_is_emitted_once(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "notes_sqlite.sql").read_text(), read="sqlite")
    assert block(text, "note").count("REFERENCES folder(id)") == 1


def test_rule2_self_reference_and_missing_target_are_kept_and_reported(fixtures_dir):
    res = normalize_ddl((fixtures_dir / "ddl" / "cycle_postgres.sql").read_text())
    assert column_line(res.text, "employee", "manager_id") == "manager_id INTEGER REFERENCES employee(id),"
    assert column_line(res.text, "employee", "badge_id") == "badge_id INTEGER REFERENCES badge_registry(id)"
    assert any("badge_registry" in w and "not in the input" in w for w in res.warnings)


def test_rule2_pg_dump_keys_added_later(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "school_postgres.sql").read_text())
    assert column_line(text, "student", "id") == "id SERIAL PRIMARY KEY,"
    assert column_line(text, "enrollment", "student_id") == (
        "student_id INTEGER REFERENCES student(id) ON DELETE CASCADE,"
    )
    assert "  PRIMARY KEY (student_id, course_code)\n" in block(text, "enrollment")


# ---- rule 3: primary keys -------------------------------------------------------------------------
def test_rule3_single_pk_inline_composite_pk_table_level():
    text = norm(
        "CREATE TABLE t (a int, b int, PRIMARY KEY (a, b));\nCREATE TABLE u (x int, CONSTRAINT pk PRIMARY KEY (x));"
    )
    assert block(text, "t").splitlines()[-2] == "  PRIMARY KEY (a, b)"
    assert column_line(text, "u", "x") == "x INTEGER PRIMARY KEY"


def test_rule3_pk_from_alter_table_is_inlined():
    text = norm(
        "CREATE TABLE t (id int NOT NULL, v text);\nALTER TABLE ONLY public.t ADD CONSTRAINT t_pkey PRIMARY KEY (id);"
    )
    assert column_line(text, "t", "id") == "id INTEGER PRIMARY KEY,"


# ---- rule 4: types --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("read", "source_type", "expected"),
    [
        ("mysql", "VARCHAR(20)", "TEXT"),
        ("mysql", "CHAR(3)", "TEXT"),
        ("tsql", "NVARCHAR(MAX)", "TEXT"),
        ("mysql", "LONGTEXT", "TEXT"),
        ("oracle", "CLOB", "TEXT"),
        ("hive", "STRING", "TEXT"),
        ("mysql", "INT(11)", "INTEGER"),
        ("postgres", "INT4", "INTEGER"),
        ("mysql", "MEDIUMINT", "INTEGER"),
        ("mysql", "INT(10) UNSIGNED ZEROFILL", "INTEGER"),
        ("mysql", "TINYINT(1)", "SMALLINT"),
        ("mysql", "BIGINT(20) UNSIGNED", "BIGINT"),
        ("mysql", "DATETIME", "TIMESTAMP"),
        ("mysql", "TIMESTAMP", "TIMESTAMP"),
        ("postgres", "TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"),
        ("tsql", "DATETIMEOFFSET", "TIMESTAMPTZ"),
        ("mysql", "DOUBLE", "DOUBLE PRECISION"),
        ("mysql", "FLOAT", "REAL"),
        ("postgres", "NUMERIC(8,3)", "DECIMAL(8,3)"),
        ("oracle", "NUMBER(10,2)", "DECIMAL(10,2)"),
        ("oracle", "VARCHAR2(30 CHAR)", "TEXT"),
        ("tsql", "BIT", "BOOLEAN"),
        ("postgres", "BOOL", "BOOLEAN"),
        ("mysql", "LONGBLOB", "BYTEA"),
        ("tsql", "VARBINARY(MAX)", "BYTEA"),
        ("mysql", "JSON", "JSON"),
        ("tsql", "UNIQUEIDENTIFIER", "UUID"),
        ("tsql", "MONEY", "DECIMAL(19,4)"),
        ("mysql", "YEAR", "SMALLINT"),
        ("bigquery", "STRUCT<x INT64>", "JSON"),
        ("snowflake", "VARIANT", "JSON"),
        ("postgres", "TEXT[]", "TEXT[]"),
        ("mysql", "SET('a','b')", "TEXT"),
    ],
)
def test_rule4_type_vocabulary(read, source_type, expected):
    text = normalize_ddl(f"CREATE TABLE t (c {source_type})", read=read).text
    assert column_line(text, "t", "c") == f"c {expected}"


@pytest.mark.parametrize(
    ("read", "column", "expected"),
    [
        ("mysql", "id INT NOT NULL AUTO_INCREMENT PRIMARY KEY", "id SERIAL PRIMARY KEY"),
        ("mysql", "id BIGINT AUTO_INCREMENT PRIMARY KEY", "id BIGSERIAL PRIMARY KEY"),
        ("tsql", "id INT IDENTITY(1,1) PRIMARY KEY", "id SERIAL PRIMARY KEY"),
        ("postgres", "id SERIAL PRIMARY KEY", "id SERIAL PRIMARY KEY"),
        ("postgres", "id INT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "id SERIAL PRIMARY KEY"),
        ("sqlite", "id INTEGER PRIMARY KEY AUTOINCREMENT", "id SERIAL PRIMARY KEY"),
        ("postgres", "id int DEFAULT nextval('t_id_seq'::regclass) PRIMARY KEY", "id SERIAL PRIMARY KEY"),
    ],
)
def test_rule4_auto_increment_serial_identity(read, column, expected):
    assert column_line(normalize_ddl(f"CREATE TABLE t ({column})", read=read).text, "t", "id") == expected


def test_rule4_enums_become_text_with_check_and_mysql_keeps_enum():
    sql = "CREATE TABLE t (s enum('a','b''c') DEFAULT 'a')"
    assert column_line(norm(sql, "mysql"), "t", "s") == "s TEXT DEFAULT 'a' CHECK (s IN ('a', 'b''c'))"
    assert column_line(normalize_ddl(sql, read="mysql", dialect="mysql").text, "t", "s") == (
        "s ENUM('a', 'b''c') DEFAULT 'a'"
    )


def test_rule4_postgres_enum_types_and_domains_resolve_to_builtins(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "school_postgres.sql").read_text())
    assert (
        column_line(text, "enrollment", "grade") == "grade TEXT DEFAULT 'C' CHECK (grade IN ('A', 'B', 'C')),"
    )
    assert column_line(text, "enrollment", "score") == "score INTEGER CHECK (score >= 0 AND score <= 100),"


def test_rule4_typeless_sqlite_columns(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "notes_sqlite.sql").read_text(), "sqlite")
    assert column_line(text, "note", "extra") == "extra TEXT"
    # a typeless key column takes the type of the column it references
    assert column_line(text, "tag", "note_id") == "note_id INTEGER PRIMARY KEY REFERENCES note(id),"
    assert column_line(text, "note", "size") == "size BIGINT,"
    assert column_line(text, "note", "body") == "body TEXT,"


def test_rule4_tsql_bit_defaults_become_booleans(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "library_tsql.sql").read_text(), "tsql")
    assert column_line(text, "Author", "Active") == "Active BOOLEAN NOT NULL DEFAULT TRUE,"


# ---- rule 5: case and quoting ---------------------------------------------------------------------
def test_rule5_case_kept_and_quotes_only_when_needed(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "shop_mysql.sql").read_text(), "mysql")
    assert '-- Table: order\nCREATE TABLE "order" (' in text  # reserved word
    assert column_line(text, "users", "Percent (%) Eligible Free (K-12)").startswith(
        '"Percent (%) Eligible Free (K-12)" '
    )
    assert 'REFERENCES "order"(id)' in text
    assert column_line(text, "order", "user_id").startswith("user_id INTEGER")  # unquoted when plain
    text = norm('CREATE TABLE "MixedCase" ("Name" int, "1st" int, "a""b" int, "select" int, "Ünï" int)')
    assert (
        'CREATE TABLE MixedCase (\n  Name INTEGER,\n  "1st" INTEGER,\n  "a""b" INTEGER,\n  "select" INTEGER,'
        in text
    )


def test_rule5_names_differing_only_in_case_stay_distinct(pg_conn):
    text = norm('CREATE TABLE "T" ("Name" text, "name" text, other int);\nCREATE TABLE t (x int);')
    assert column_line(text, "T", "Name") == '"Name" TEXT,'
    assert column_line(text, "T", "name") == '"name" TEXT,'
    assert column_line(text, "T", "other") == "other INTEGER"
    assert 'CREATE TABLE "T" (' in text and 'CREATE TABLE "t" (' in text
    pg_conn.execute(text)
    assert normalize_ddl(text).text == text


def test_rule5_keywords_and_types_upper_case():
    text = norm("create table t (a varchar(3) not null default 'x', b int check (b > 0))")
    assert column_line(text, "t", "a") == "a TEXT NOT NULL DEFAULT 'x',"
    assert column_line(text, "t", "b") == "b INTEGER CHECK (b > 0)"


# ---- rule 6: schema qualifiers --------------------------------------------------------------------
def test_rule6_single_schema_qualifiers_are_dropped(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "shop_mysql.sql").read_text(), "mysql")
    assert "shop." not in text and "`" not in text


def test_rule6_several_schemas_keep_qualifiers(fixtures_dir):
    res = normalize_ddl((fixtures_dir / "ddl" / "warehouse_multi_schema.sql").read_text())
    assert res.tables == ["stock.item", "stock.bin", "sales.invoice"]  # CREATE SCHEMA body included
    assert "item_id INTEGER REFERENCES stock.item(id)" in res.text


# ---- rule 7: order --------------------------------------------------------------------------------
def test_rule7_referenced_tables_first_original_order_otherwise(fixtures_dir):
    res = normalize_ddl((fixtures_dir / "ddl" / "shop_mysql.sql").read_text(), read="mysql")
    assert res.tables == ["users", "order", "order_line", "shipment"]


def test_rule7_cycles_keep_order_are_reported_and_still_execute(fixtures_dir, pg_conn):
    res = normalize_ddl((fixtures_dir / "ddl" / "cycle_postgres.sql").read_text())
    assert res.tables == ["employee", "dept"]
    assert any("cycle" in w and "employee(dept_id) -> dept" in w for w in res.warnings)
    assert res.text.endswith(
        "-- Foreign keys closing a cycle\nALTER TABLE employee ADD FOREIGN KEY (dept_id) REFERENCES dept(id);\n"
    )
    pg_conn.execute("CREATE TABLE badge_registry (id int PRIMARY KEY)")
    pg_conn.execute(res.text)
    again = normalize_ddl(res.text, read="postgres")
    assert again.text == res.text


# ---- rule 8: comments -----------------------------------------------------------------------------
def test_rule8_column_comments_in_every_form(fixtures_dir):
    mysql = norm((fixtures_dir / "ddl" / "shop_mysql.sql").read_text(), "mysql")
    assert column_line(mysql, "order", "note") == "note TEXT, -- it's free text"  # COMMENT 'it\'s'
    assert column_line(mysql, "order", "user_id").endswith(", -- who placed it")
    assert column_line(mysql, "users", "Name") == "Name TEXT NOT NULL, -- display name"
    pg = norm((fixtures_dir / "ddl" / "school_postgres.sql").read_text())
    assert column_line(pg, "student", "full_name") == "full_name TEXT NOT NULL, -- as printed on the diploma"
    tsql = norm((fixtures_dir / "ddl" / "library_tsql.sql").read_text(), "tsql")
    assert (
        column_line(tsql, "Order Details", "Quantity")
        == "Quantity SMALLINT NOT NULL DEFAULT 0, -- Units ordered"
    )
    last = norm("CREATE TABLE t (\n  a int, -- first\n  b int /* second */\n);")
    assert block(last, "t") == "CREATE TABLE t (\n  a INTEGER, -- first\n  b INTEGER -- second\n);\n"


# ---- rule 9: defaults and constraints -------------------------------------------------------------
def test_rule9_defaults_not_null_unique_check_are_kept_and_transpiled(fixtures_dir):
    text = norm(
        "CREATE TABLE t (a datetime NOT NULL DEFAULT (getdate()), b int CONSTRAINT DF_b DEFAULT ((0)), "
        "c nvarchar(5) UNIQUE, d int CHECK (d > 0), e int, f int, UNIQUE (e, f), CHECK (e < f))",
        "tsql",
    )
    assert column_line(text, "t", "a") == "a TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,"
    assert column_line(text, "t", "b") == "b INTEGER DEFAULT 0,"
    assert column_line(text, "t", "c") == "c TEXT UNIQUE,"
    assert column_line(text, "t", "d") == "d INTEGER CHECK (d > 0),"
    assert block(text, "t").endswith("  UNIQUE (e, f),\n  CHECK (e < f)\n);\n")
    school = norm((fixtures_dir / "ddl" / "school_postgres.sql").read_text())
    assert (
        column_line(school, "enrollment", "total_points")
        == "total_points INTEGER GENERATED ALWAYS AS (2 * 50) STORED,"
    )
    assert column_line(school, "student", "enrolled") == "enrolled TIMESTAMP DEFAULT CURRENT_TIMESTAMP,"


def test_rule9_tsql_default_for_column_via_alter(fixtures_dir):
    text = norm((fixtures_dir / "ddl" / "library_tsql.sql").read_text(), "tsql")
    assert column_line(text, "Order Details", "Added") == "Added TIMESTAMP DEFAULT CURRENT_TIMESTAMP,"


# ---- rule 10: dropped statements ------------------------------------------------------------------
def test_rule10_everything_else_is_dropped_and_counted(fixtures_dir):
    res = normalize_ddl((fixtures_dir / "ddl" / "school_postgres.sql").read_text())
    assert res.dropped["psql meta-command"] == 2
    assert res.dropped["ALTER TABLE OWNER TO"] == 1
    assert res.dropped["SET"] == 1 and res.dropped["SELECT"] == 1 and res.dropped["GRANT"] == 1
    assert res.dropped["CREATE INDEX"] == 1 and res.dropped["CREATE FUNCTION"] == 1
    assert res.dropped["CREATE SEQUENCE"] == 1 and res.dropped["COMMENT ON TABLE"] == 1
    mysql = normalize_ddl((fixtures_dir / "ddl" / "shop_mysql.sql").read_text(), read="mysql")
    assert mysql.dropped["INSERT"] == 1 and mysql.dropped["CREATE TRIGGER"] == 1
    assert mysql.dropped["CREATE VIEW"] == 1 and mysql.dropped["DROP TABLE"] == 1
    assert mysql.dropped["index inside CREATE TABLE"] == 3 and mysql.dropped["client command"] == 1
    for word in ("INSERT", "TRIGGER", "VIEW", "INDEX", "KEY `", "ENGINE", "SET ", "GRANT", "OWNER"):
        assert word not in mysql.text


def test_rule10_keep_data_returns_inserts_in_the_target_dialect(fixtures_dir):
    res = normalize_ddl((fixtures_dir / "ddl" / "shop_mysql.sql").read_text(), read="mysql", keep_data=True)
    assert res.data == [
        "INSERT INTO users VALUES (1, 'Ann', 'A1', 'ann@example.com', 1.5, '2000-01-01 00:00:00', 30)"
    ]


# ---- rule 11: deterministic, idempotent, executable -----------------------------------------------
FIXTURES = [
    ("users_orders.sql", "mysql"),
    ("shop_mysql.sql", "mysql"),
    ("school_postgres.sql", "postgres"),
    ("notes_sqlite.sql", "sqlite"),
    ("library_tsql.sql", "tsql"),
    ("crm_oracle.sql", "oracle"),
    ("warehouse_multi_schema.sql", "postgres"),
]


@pytest.mark.parametrize(("name", "read"), FIXTURES)
def test_rule11_fixtures_are_detected_idempotent_and_execute(fixtures_dir, pg_conn, name, read):
    raw = (fixtures_dir / "ddl" / name).read_text(encoding="utf-8-sig")
    res = normalize_ddl(raw, source=name)
    assert res.read == read  # auto-detection
    assert normalize_ddl(raw, read=read, source=name).text == res.text  # deterministic
    assert normalize_ddl(res.text, read="postgres").text == res.text  # idempotent
    pg_conn.execute("CREATE SCHEMA IF NOT EXISTS stock; CREATE SCHEMA IF NOT EXISTS sales")
    pg_conn.execute(res.text)


@pytest.mark.parametrize("target", ["mysql", "sqlite"])
@pytest.mark.parametrize(("name", "read"), FIXTURES)
def test_rule11_other_targets_are_idempotent(fixtures_dir, name, read, target):
    raw = (fixtures_dir / "ddl" / name).read_text(encoding="utf-8-sig")
    res = normalize_ddl(raw, read=read, dialect=target)
    assert res.text.startswith(f"-- Dialect: {target}\n")
    assert normalize_ddl(res.text, read=target, dialect=target).text == res.text


def test_rule11_sqlite_target_executes_in_sqlite(fixtures_dir):
    import sqlite3

    for name, read in FIXTURES:
        if name == "warehouse_multi_schema.sql":
            continue  # SQLite has no schemas (attached databases only)
        text = normalize_ddl(
            (fixtures_dir / "ddl" / name).read_text(encoding="utf-8-sig"), read=read, dialect="sqlite"
        ).text
        db = sqlite3.connect(":memory:")
        db.executescript(text)
        db.close()


# ---- tricky inputs from the notes that are handled ------------------------------------------------
def test_partitions_and_inheritance_become_plain_tables_with_the_parents_columns(fixtures_dir, pg_conn):
    text = norm(
        "CREATE TABLE p (id int PRIMARY KEY, v int NOT NULL) PARTITION BY RANGE (v);\n"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (1) TO (10);"
    )
    assert block(text, "p1") == "CREATE TABLE p1 (\n  id INTEGER PRIMARY KEY,\n  v INTEGER NOT NULL\n);\n"
    school = norm((fixtures_dir / "ddl" / "school_postgres.sql").read_text())
    archive = block(school, "enrollment_archive")
    assert archive.startswith("CREATE TABLE enrollment_archive (\n  student_id INTEGER NOT NULL,\n")
    assert archive.endswith("  archived_on DATE\n);\n") and "PRIMARY KEY" not in archive
    pg_conn.execute(text)


def test_temporary_and_unlogged_tables_are_ordinary_tables():
    res = normalize_ddl("CREATE TEMPORARY TABLE t (a int);\nCREATE UNLOGGED TABLE u (b int);")
    assert res.tables == ["t", "u"] and "TEMPORARY" not in res.text and "UNLOGGED" not in res.text


def test_create_schema_body_tables_take_the_schema():
    res = normalize_ddl(
        "CREATE SCHEMA s CREATE TABLE a (x int PRIMARY KEY) CREATE TABLE b (y int REFERENCES a(x));"
    )
    assert res.tables == ["a", "b"] and res.dropped["CREATE SCHEMA"] == 1  # one schema: qualifiers dropped
    assert "y INTEGER REFERENCES a(x)" in res.text


def test_identifier_policy_for_answers_matches_schemas():
    import sqlglot

    from hive_data.ddl import apply_identifier_policy

    tree = sqlglot.parse_one("SELECT `order`.`Name`, `Percent (%)` FROM `order` WHERE `x` = 1", read="mysql")
    sql = apply_identifier_policy(tree, "postgres").sql(dialect="postgres")
    assert sql == 'SELECT "order".Name, "Percent (%)" FROM "order" WHERE x = 1'
    assert (
        tree.sql(dialect="mysql") == "SELECT `order`.`Name`, `Percent (%)` FROM `order` WHERE `x` = 1"
    )  # untouched


def test_duckdb_map_type():
    assert (
        column_line(normalize_ddl("CREATE TABLE t (a MAP(VARCHAR, INT))", read="duckdb").text, "t", "a")
        == "a JSON"
    )


def test_mysql_zero_date_defaults_are_dropped_and_reported(pg_conn):
    res = normalize_ddl(
        "CREATE TABLE t (d datetime NOT NULL DEFAULT '0000-00-00 00:00:00', e date DEFAULT '2001-01-01')"
    )
    assert column_line(res.text, "t", "d") == "d TIMESTAMP NOT NULL,"
    assert column_line(res.text, "t", "e") == "e DATE DEFAULT '2001-01-01'"
    assert res.warnings == ["t.d: zero-date default dropped"]
    pg_conn.execute(res.text)


def test_rule8_comments_anywhere_in_a_column_definition_are_gathered_once():
    text = norm(
        "CREATE TABLE t (\n  a int NOT NULL, -- c1\n  b int DEFAULT 0 CHECK (b > 0), -- c2\n"
        "  c int REFERENCES t(a) -- c3\n  , e int NOT NULL -- c5\n);"
    )
    assert block(text, "t") == (
        "CREATE TABLE t (\n  a INTEGER NOT NULL, -- c1\n  b INTEGER DEFAULT 0 CHECK (b > 0), -- c2\n"
        "  c INTEGER REFERENCES t(a), -- c3\n  e INTEGER NOT NULL -- c5\n);\n"
    )
    assert normalize_ddl(text).text == text
    mysql = norm("CREATE TABLE t (a int COMMENT 'multi\nline', -- more\n  b int);", "mysql")
    assert column_line(mysql, "t", "a") == "a INTEGER, -- multi line; more"


def test_identifier_policy_in_place_on_request():
    import sqlglot

    from hive_data.ddl import apply_identifier_policy

    tree = sqlglot.parse_one('SELECT "a", "select" FROM "T"', read="postgres")
    assert apply_identifier_policy(tree, "postgres", copy=False) is tree
    assert tree.sql(dialect="postgres") == 'SELECT a, "select" FROM T'


def test_rule5_case_collisions_are_quoted_in_references_and_checks_too(pg_conn):
    text = norm(
        'CREATE TABLE "P" ("Id" int UNIQUE, "id" int PRIMARY KEY);\n'
        'CREATE TABLE c (a int REFERENCES "P"("Id"), "B" int, "b" int, CHECK ("B" > "b"));'
    )
    assert column_line(text, "c", "a") == 'a INTEGER REFERENCES P("Id"),'
    assert block(text, "c").endswith('  CHECK ("B" > "b")\n);\n')
    pg_conn.execute(text)
    fk = pg_conn.execute(
        "SELECT a.attname FROM pg_constraint con JOIN pg_attribute a ON a.attrelid = con.confrelid "
        "AND a.attnum = con.confkey[1] WHERE con.contype = 'f' AND con.conrelid = 'c'::regclass"
    ).fetchone()[0]
    assert fk == "Id"
