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
