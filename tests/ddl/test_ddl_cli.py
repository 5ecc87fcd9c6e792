"""`hive-data normalize` on .sql inputs: stdout/file/directory outputs, stderr summary, error edge."""

from __future__ import annotations

import shutil

from click.testing import CliRunner

from hive_data.cli import main
from hive_data.ddl import normalize_ddl
from hive_data.ddl.files import normalize_sql_path


def run(*args):
    result = CliRunner().invoke(main, ["normalize", *map(str, args)], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_file_to_stdout_with_detection_and_summary(fixtures_dir):
    src = fixtures_dir / "ddl" / "school_postgres.sql"
    code, out, err = run(src)
    assert code == 0, err
    assert out == normalize_ddl(src.read_text(encoding="utf-8-sig")).text
    assert f"{src}: read as postgres (detected)" in err
    assert "dropped 12 statement(s) that are not table structure: psql meta-command 2," in err
    assert "CREATE INDEX 1" in err and "ALTER TABLE OWNER TO 1" in err


def test_explicit_read_and_target_and_output_file(fixtures_dir, tmp_path):
    out_file = tmp_path / "sub" / "shop.sql"
    code, out, err = run(
        fixtures_dir / "ddl" / "shop_mysql.sql", "--read", "mysql", "--dialect", "sqlite", "-o", out_file
    )
    assert code == 0, err
    assert out == "" and "detected" not in err
    assert out_file.read_text().startswith("-- Dialect: sqlite\n-- Table: users\n")
    assert "INSERT 1" in err


def test_warnings_go_to_stderr(fixtures_dir):
    code, out, err = run(fixtures_dir / "ddl" / "cycle_postgres.sql", "-o", "-")
    assert code == 0
    assert "warning:" in err and "foreign-key cycle" in err and "badge_registry" in err
    assert "warning" not in out


def test_directory_mirrors_into_output_directory(fixtures_dir, tmp_path):
    src = tmp_path / "in"
    (src / "nested").mkdir(parents=True)
    shutil.copy(fixtures_dir / "ddl" / "users_orders.sql", src / "a.sql")
    shutil.copy(fixtures_dir / "ddl" / "notes_sqlite.sql", src / "nested" / "b.sql")
    (src / "readme.txt").write_text("not sql")
    code, _, err = run(src, "-o", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")) == [
        "a.sql",
        "nested",
        "nested/b.sql",
    ]
    assert (tmp_path / "out" / "a.sql").read_text() == normalize_ddl((src / "a.sql").read_text()).text
    assert "normalized 2 file(s)" in err


def test_directory_needs_an_output_directory(fixtures_dir, tmp_path):
    (tmp_path / "x.sql").write_text("CREATE TABLE t (a int);")
    code, out, err = run(tmp_path)
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "-o DIRECTORY" in err


def test_bad_input_is_one_line_with_location_and_exit_1(tmp_path):
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE ok (a int);\nCREATE TABLE t (\n  a int,, b int\n);\n")
    out_file = tmp_path / "out.sql"
    code, out, err = run(bad, "-o", out_file)
    assert code == 1
    assert err == f"error: {bad}:3:9: empty element in a list (,,)\n"
    assert not out_file.exists()  # nothing half-written


def test_undecodable_bytes_are_located(tmp_path):
    bad = tmp_path / "latin1.sql"
    bad.write_bytes(b"CREATE TABLE t (\n  caf\xe9 int\n);\n")
    code, _, err = run(bad)
    assert code == 1 and err == f"error: {bad}:2:6: not UTF-8 or UTF-16 text\n"


def test_missing_file(tmp_path):
    code, _, err = run(tmp_path / "nope.sql")
    assert code == 1 and "no such file" in err and "Traceback" not in err


def test_help_on_command_and_options():
    code, out, _ = run("--help")
    assert code == 0
    for flag in ("--read", "--dialect", "-o, --output"):
        assert flag in out


def test_library_function_returns_dropped_counts(fixtures_dir, tmp_path):
    messages = []
    counts = normalize_sql_path(
        fixtures_dir / "ddl" / "library_tsql.sql", tmp_path / "o.sql", read="auto", log=messages.append
    )
    (only,) = counts.values()
    assert only["USE"] == 1 and only["CREATE INDEX"] == 1
    assert any("read as tsql (detected)" in m for m in messages)
