"""`hive-data normalize`: SQL schema files -> the canonical schema format.

The command is thin: `normalize_sql_path` does the work for `.sql` inputs (a file or a directory of
them). Dataset inputs (.jsonl/.json/.parquet/.csv, hub ids) get their own branch in `normalize`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from hive_core.cli import cli_errors, recipe_option
from hive_core.errors import ConfigError, DDLError

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
    atomically) and the first failure stops the run. An `output` that is the input, lies inside the
    input directory or holds the input raises `ConfigError` before anything is written.
    """
    from hive_core.atomic import atomic_file, check_separate
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
        check_separate(output, [src], what="output directory")
        targets = [(f, Path(output) / f.relative_to(src)) for f in files]
    else:
        if output not in (None, "-"):
            check_separate(output, [src])
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
    help="Output file ('-' for stdout), or a directory when INPUT is a directory. "
    "Datasets: a .jsonl or .parquet file (required).",
)
@click.option(
    "--format",
    "fmt",
    default=None,
    type=click.Choice(
        ["gretel", "create_context", "spider", "messages", "prompt_completion", "alpaca", "text"]
    ),
    help="Datasets: record format (default: detected from the columns).",
)
@click.option(
    "--map",
    "mapping",
    default=None,
    metavar="FIELD=COLUMN,...",
    help="Datasets: take a format's field from another column, e.g. question=q,answer=query,schema=ddl.",
)
@click.option(
    "--schema-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Datasets: directory of schemas that live outside the rows: DIR/<key>/schema.sql or DIR/<key>.sql.",
)
@click.option(
    "--schema-key",
    default=None,
    help="Datasets: the column naming each row's schema in --schema-dir (default: db_id|database).",
)
@click.option(
    "--keep-data",
    is_flag=True,
    help="Datasets: keep INSERTs found in schema contexts (transpiled, after the tables) instead of dropping them.",
)
@click.option(
    "--verify",
    default="parse",
    show_default=True,
    type=click.Choice(["parse", "explain"]),
    help="Datasets: answers must parse in the target dialect, or also pass EXPLAIN in an embedded PostgreSQL.",
)
@click.option(
    "--rejects",
    default=None,
    help="Datasets: where failing rows go, with row number, step and reason (default: OUTPUT.rejects.jsonl, "
    "e.g. clean.jsonl.rejects.jsonl). Must differ from INPUT and OUTPUT.",
)
@click.option("--strict", is_flag=True, help="Datasets: exit with status 1 if any row is rejected.")
@click.option(
    "--num-proc",
    default=None,
    type=click.IntRange(min=1),
    help="Datasets: worker processes (default: all cores).",
)
@recipe_option("normalize")
@cli_errors
def normalize(
    input_path: str,
    read: str,
    dialect: str,
    output: str,
    fmt: str | None = None,
    mapping: str | None = None,
    schema_dir: str | None = None,
    schema_key: str | None = None,
    keep_data: bool = False,
    verify: str = "parse",
    rejects: str | None = None,
    strict: bool = False,
    num_proc: int | None = None,
) -> None:
    """Normalize INPUT into canonical schemas, or a dataset into clean, verified rows.

    INPUT is a .sql file or a directory of them: every CREATE TABLE is rewritten into the canonical
    format (inline foreign keys, a closed type vocabulary, dependency order); statements that are
    not table structure are dropped and counted on stderr.

    INPUT can also be a dataset: a .jsonl/.json/.parquet/.csv file, a directory of them, or a hub id
    org/name[:split][:config]. Schemas are canonicalized, SQL answers transpiled to --dialect and
    verified (--verify), duplicates removed; failing rows go to the rejects file with their reason.
    """
    if is_sql_input(input_path):
        normalize_sql_path(input_path, output=output, read=read, dialect=dialect.lower())
        return
    from hive_data.dataset import NormalizeConfig, NothingKept, normalize_dataset

    if output in (None, "-"):
        raise ConfigError("a dataset input needs -o OUTPUT.jsonl or -o OUTPUT.parquet", file=input_path)
    cfg = NormalizeConfig(
        read=read,
        dialect=dialect.lower(),
        fmt=fmt,
        mapping=mapping or {},
        schema_dir=schema_dir,
        schema_key=schema_key,
        keep_data=keep_data,
        verify=verify,
        rejects=rejects,
        strict=strict,
        num_proc=num_proc,
    )
    try:
        summary = normalize_dataset(input_path, output, cfg)
    except NothingKept as err:  # the summary (with its warning) first, then the one-line error
        click.echo(err.summary.text(), err=True)
        raise
    click.echo(summary.text(), err=True)
