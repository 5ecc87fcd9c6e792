"""Statement splitting: script conventions, procedural bodies, exact start positions."""

from __future__ import annotations

from hive_data.ddl.split import split_statements


def texts(sql: str, read: str = "postgres") -> list[str]:
    return [s.text for s in split_statements(sql, read)]


def test_semicolons_strings_and_comments_do_not_split_inside_literals():
    sql = "CREATE TABLE a (x text DEFAULT 'a;b'); -- c;d\n/* e;f */ CREATE TABLE \"b;c\" (y int);"
    assert texts(sql) == ["CREATE TABLE a (x text DEFAULT 'a;b')", 'CREATE TABLE "b;c" (y int)']


def test_positions_point_at_the_first_code_token_of_each_statement():
    sql = "-- header\n\n  CREATE TABLE a (x int);\n/* lead */ CREATE TABLE b (y int);"
    stmts = split_statements(sql, "postgres")
    assert [(s.line, s.col) for s in stmts] == [(3, 3), (4, 12)]
    assert stmts[1].locate(1, 5) == (4, 16)
    assert stmts[0].locate(2, 7) == (4, 7)


def test_bom_and_crlf_keep_line_numbers():
    sql = "\ufeffCREATE TABLE a (x int);\r\n\r\nCREATE TABLE b (y int);\r\n"
    stmts = split_statements(sql, "postgres")
    assert [s.text for s in stmts] == ["CREATE TABLE a (x int)", "CREATE TABLE b (y int)"]
    assert (stmts[0].line, stmts[0].col, stmts[1].line) == (1, 1, 3)


def test_tsql_go_batches_with_count_and_comment():
    sql = "CREATE TABLE a (x int)\nGO\nCREATE TABLE b (y int)\nGO 10\nCREATE TABLE c (z int)\ngo -- done\n"
    assert texts(sql, "tsql") == [
        "CREATE TABLE a (x int)",
        "CREATE TABLE b (y int)",
        "CREATE TABLE c (z int)",
    ]


def test_tsql_statements_without_separators_split_at_line_start_keywords():
    sql = "CREATE TABLE a (\n  x int,\n)\n\n-- next\nCREATE TABLE b (y int)\nCREATE INDEX i ON b (y)"
    assert texts(sql, "tsql") == [
        "CREATE TABLE a (\n  x int,\n)",
        "CREATE TABLE b (y int)",
        "CREATE INDEX i ON b (y)",
    ]


def test_mysql_delimiter_blocks_and_conditional_comments():
    sql = (
        "/*!40101 SET NAMES utf8 */;\n"
        "DELIMITER ;;\n"
        "CREATE TRIGGER t BEFORE INSERT ON a FOR EACH ROW BEGIN\n  SET NEW.x = 1;\nEND ;;\n"
        "DELIMITER ;\n"
        "CREATE TABLE a (x int);\n"
        "source data.dump;\n"
    )
    stmts = split_statements(sql, "mysql")
    assert stmts[0].text.strip() == "SET NAMES utf8"  # the markers are blanked, the content kept
    assert stmts[0].col == 10
    assert stmts[1].text.startswith("CREATE TRIGGER") and stmts[1].text.endswith("END")
    assert stmts[2].text == "CREATE TABLE a (x int)"
    assert stmts[3].meta and stmts[3].text.startswith("source")


def test_mysql_backslash_escapes_and_hash_comments():
    sql = "CREATE TABLE a (x int COMMENT 'it\\'s; fine'); # tail; comment\nCREATE TABLE b (y int);"
    assert texts(sql, "mysql") == ["CREATE TABLE a (x int COMMENT 'it\\'s; fine')", "CREATE TABLE b (y int)"]


def test_psql_meta_commands_are_their_own_statements():
    stmts = split_statements("\\connect shop\nCREATE TABLE a (x int);\n\\pset pager off\n", "postgres")
    assert [(s.meta, s.text) for s in stmts] == [
        (True, "\\connect shop"),
        (False, "CREATE TABLE a (x int)"),
        (True, "\\pset pager off"),
    ]


def test_dollar_quoted_bodies_and_begin_end_bodies_keep_their_semicolons():
    sql = (
        "CREATE FUNCTION f() RETURNS int AS $body$ BEGIN RETURN 1; END; $body$ LANGUAGE plpgsql;\n"
        "CREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 1; SELECT CASE WHEN 1 THEN 2 END; END;\n"
        "CREATE TABLE a (x int);"
    )
    out = texts(sql, "sqlite")
    assert len(out) == 3 and out[2] == "CREATE TABLE a (x int)"
    assert out[1].endswith("END; END")


def test_oracle_slash_lines_end_plsql_blocks():
    sql = (
        "CREATE TABLE a (x NUMBER);\n"
        "CREATE OR REPLACE TRIGGER t BEFORE INSERT ON a FOR EACH ROW\nBEGIN\n"
        "  IF :NEW.x IS NULL THEN\n    :NEW.x := 1;\n  END IF;\nEND;\n/\n"
        "CREATE TABLE b (y NUMBER);\n"
    )
    out = texts(sql, "oracle")
    assert out[0] == "CREATE TABLE a (x NUMBER)" and out[-1] == "CREATE TABLE b (y NUMBER)" and len(out) == 3


def test_comment_only_text_gives_no_statement():
    assert split_statements("-- nothing\n/* here */\n", "postgres") == []


# ---- dump files ---------------------------------------------------------------------------------
def test_copy_from_stdin_rows_are_consumed_up_to_the_backslash_dot_line():
    sql = (
        "COPY t (a, b) FROM stdin;\n"
        '1\tit\'s; "x" $$ -- y\n'
        "\\N\t\\\\. not the end\n"
        "\\.\n"
        "CREATE TABLE u (x int);\n"
    )
    stmts = split_statements(sql, "postgres")
    assert [(s.text, s.kind, s.line) for s in stmts] == [
        ("COPY t (a, b) FROM stdin", "COPY ... FROM stdin data block", 1),
        ("CREATE TABLE u (x int)", None, 5),
    ]
    assert stmts[0].meta and not stmts[1].meta


def test_copy_rows_without_their_end_line_run_to_the_end_of_the_file():
    stmts = split_statements(
        "CREATE TABLE u (x int);\nCOPY u FROM STDIN WITH (FORMAT csv);\n1\n'2\n", "postgres"
    )
    assert [s.kind for s in stmts] == [None, "COPY ... FROM stdin data block"]


def test_psql_restrict_lines_of_new_pg_dump_are_meta_commands():
    stmts = split_statements("\\restrict abc\nSET x = 0;\n\\unrestrict abc\n", "postgres")
    assert [(s.meta, s.kind) for s in stmts] == [
        (True, "psql meta-command"),
        (False, None),
        (True, "psql meta-command"),
    ]


def test_statements_wholly_inside_versioned_comments_are_labelled_not_parsed():
    sql = (
        "/*!40000 ALTER TABLE `t` DISABLE KEYS */;\n"
        "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER tr BEFORE INSERT ON t FOR EACH ROW "
        "SET NEW.x = 1 */;\n"
        "/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50013 DEFINER=`root`@`%` SQL SECURITY DEFINER */\n"
        "/*!50001 VIEW v AS select 1 AS x */;\n"
        "/*M!100616 SET @OLD_NOTE_VERBOSITY=@@NOTE_VERBOSITY */;\n"
        "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop`;\n"
    )
    stmts = split_statements(sql, "mysql")
    assert [(s.meta, s.kind) for s in stmts] == [
        (True, "ALTER TABLE in /*!...*/"),
        (True, "CREATE TRIGGER in /*!...*/"),
        (True, "CREATE VIEW in /*!...*/"),
        (True, "SET in /*!...*/"),
        (False, None),
    ]
    assert stmts[0].text == "ALTER TABLE `t` DISABLE KEYS" and (stmts[0].line, stmts[0].col) == (1, 10)
    assert " ".join(stmts[4].text.split()) == "CREATE DATABASE IF NOT EXISTS `shop`"  # mid-statement: kept


def test_table_options_in_versioned_comments_are_cut_out_and_columns_kept():
    sql = (
        "CREATE TABLE t (\n  a int,\n  /*!50705 b json, */\n  c int\n) ENGINE=InnoDB /*!80016 ROW_FORMAT=DYNAMIC */\n"
        "/*!50100 PARTITION BY RANGE (a)\n(PARTITION p0 VALUES LESS THAN (10) ENGINE = InnoDB) */;\n"
        "CREATE TABLE u (x int);\n"
    )
    stmts = split_statements(sql, "mysql")
    table = stmts[0]
    assert " ".join(table.text.split()) == "CREATE TABLE t ( a int, b json, c int ) ENGINE=InnoDB"
    assert table.text.splitlines()[2] == "           b json,   "  # markers blanked: positions map back
    assert [(s.kind, s.text.split()[0], s.line, s.col) for s in stmts[1:3]] == [
        ("table option in /*!...*/", "ROW_FORMAT=DYNAMIC", 5, 26),
        ("table option in /*!...*/", "PARTITION", 6, 10),
    ]
    assert stmts[3].text == "CREATE TABLE u (x int)" and stmts[3].line == 8


def test_mariadb_sandbox_line_is_a_client_command():
    sql = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;\n"
    stmts = split_statements(sql, "mysql")
    assert [(s.kind, s.line) for s in stmts] == [("client command", 1), ("SET in /*!...*/", 3)]


def test_begin_transaction_is_not_a_body():
    sql = "BEGIN TRANSACTION;\nCREATE TABLE a (x int);\nBEGIN;\nCREATE TABLE b (y int);\nCOMMIT;\n"
    assert texts(sql, "sqlite") == [
        "BEGIN TRANSACTION",
        "CREATE TABLE a (x int)",
        "BEGIN",
        "CREATE TABLE b (y int)",
        "COMMIT",
    ]


def test_sqlite_internal_tables_are_labelled():
    sql = "CREATE TABLE sqlite_sequence(name,seq);\nINSERT INTO \"sqlite_sequence\" VALUES('t',2);\nDELETE FROM sqlite_stat1;"
    assert [s.kind for s in split_statements(sql, "sqlite")] == [
        "CREATE TABLE sqlite_sequence (SQLite internal table)",
        "INSERT INTO sqlite_sequence (SQLite internal table)",
        "DELETE FROM sqlite_stat1 (SQLite internal table)",
    ]
    assert [s.kind for s in split_statements(sql, "postgres")] == [None, None, None]  # legal names there


def test_tsql_procedure_runs_to_its_go_line():
    sql = (
        "CREATE PROCEDURE p @n int\nAS\nSET NOCOUNT ON;\nCREATE TABLE #t (x int);\nSELECT * FROM #t;\nGO\n"
        "CREATE OR ALTER PROC q AS\nSELECT 1\nGO\nCREATE TABLE a (x int)\nCREATE TABLE b (y int)\nGO\n"
    )
    out = texts(sql, "tsql")
    assert len(out) == 4 and out[0].startswith("CREATE PROCEDURE p") and out[0].endswith("SELECT * FROM #t")
    assert out[1].startswith("CREATE OR ALTER PROC q") and out[2:] == [
        "CREATE TABLE a (x int)",
        "CREATE TABLE b (y int)",
    ]
