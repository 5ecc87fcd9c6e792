"""`hive-data normalize`: SQL schema files -> the canonical schema format.

The command is thin: `normalize_sql_path` does the work for `.sql` inputs (a file or a directory of
them). Dataset inputs (.jsonl/.json/.parquet/.csv, hub ids) get their own branch in `normalize`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from hive_data.cli_util import cli_errors
from hive_data.errors import ConfigError, DDLError

SQL_SUFFIXES = (".sql", ".ddl")


def is_sql_input(path: str) -> bool:
    """A `.sql` file, or a directory holding `.sql` files."""
    p = Path(path)
    if p.is_dir():
        return any(f.suffix.lower() in SQL_SUFFIXES for f in p.rglob("*") if f.is_file())
    return p.suffix.lower() in SQL_SUFFIXES


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DDLError("not UTF-8 or UTF-16 text", file=str(path), line=line, col=col) from None


def normalize_sql_path(
    input_path: str | Path,
    output: str | Path | None = "-",
    read: str = "auto",
    dialect: str = "postgres",
    log=None,
) -> dict[str, Counter]:
    """Normalize one `.sql` file (to `output`, a file or "-" for stdout) or a directory of them (to
    `output`, a directory mirroring it). Says on `log` which dialect `--read auto` chose for each file,
    warnings, and a summary of dropped statements by kind. Returns dropped counts per input file.

    Any file that cannot be normalized faithfully raises `DDLError` naming it, before anything is
    written for a single file; in directory mode, completed files are intact (each is written
    atomically) and the first failure stops the run.
    """
    from hive_data.atomic import atomic_file
    from hive_data.ddl import normalize_ddl

    log = log or (lambda msg: click.echo(msg, err=True))
    src = Path(input_path)
    if not src.exists():
        raise DDLError("no such file or directory", file=str(src))
    if src.is_dir():
        if output in (None, "-"):
            raise ConfigError("a directory input needs -o DIRECTORY (the output mirrors the input tree)")
        files = sorted(f for f in src.rglob("*") if f.is_file() and f.suffix.lower() in SQL_SUFFIXES)
        if not files:
            raise DDLError("no .sql files in this directory", file=str(src))
        targets = [(f, Path(output) / f.relative_to(src)) for f in files]
    else:
        targets = [(src, None if output in (None, "-") else Path(output))]

    per_file: dict[str, Counter] = {}
    total: Counter = Counter()
    progress = _progress(len(targets))
    for path, dest in targets:
        res = normalize_ddl(_read_text(path), read=read, dialect=dialect, source=str(path))
        if read == "auto":
            log(f"{path}: read as {res.read} (detected)")
        for warning in res.warnings:
            log(f"warning: {path}: {warning}")
        if dest is None:
            sys.stdout.write(res.text)
            sys.stdout.flush()
        else:
            with atomic_file(dest, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(res.text)
        per_file[str(path)] = res.dropped
        total.update(res.dropped)
        progress.update(1)
    progress.close()
    log(_summary(total, len(targets)))
    return per_file


def _progress(n: int):
    from tqdm import tqdm

    return tqdm(total=n, unit="file", desc="normalize", file=sys.stderr, disable=n < 20, leave=False)


def _summary(dropped: Counter, files: int) -> str:
    if not dropped:
        return f"normalized {files} file(s); no statement dropped"
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"normalized {files} file(s); dropped {sum(dropped.values())} statement(s) that are not table structure: {kinds}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_path", metavar="INPUT")
@click.option(
    "--read",
    default="auto",
    show_default=True,
    help="Source SQL dialect (mysql, sqlite, postgres, tsql, oracle, ... any sqlglot dialect); "
    "auto detects it from the text and says which it chose.",
)
@click.option(
    "--dialect",
    default="postgres",
    show_default=True,
    type=click.Choice(["postgres", "mysql", "sqlite"], case_sensitive=False),
    help="Target dialect of the canonical schema.",
)
@click.option(
    "-o",
    "--output",
    default="-",
    show_default=True,
    help="Output file ('-' for stdout), or a directory when INPUT is a directory.",
)
@cli_errors
def normalize(input_path: str, read: str, dialect: str, output: str) -> None:
    """Normalize INPUT into canonical schemas (and, later, datasets into clean records).

    INPUT is a .sql file or a directory of them: every CREATE TABLE is rewritten into the canonical
    format (inline foreign keys, a closed type vocabulary, dependency order); statements that are
    not table structure are dropped and counted on stderr.
    """
    if is_sql_input(input_path):
        normalize_sql_path(input_path, output=output, read=read, dialect=dialect.lower())
        return
    raise ConfigError(
        "not a .sql file or a directory of them; dataset inputs "
        "(.jsonl/.json/.parquet/.csv, hub ids) are not handled by this command yet",
        file=input_path,
    )
