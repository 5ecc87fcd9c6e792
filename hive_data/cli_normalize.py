"""`hive-data normalize`: SQL schema files -> the canonical schema format, datasets -> clean rows.

The command is thin: `hive_data.ddl.files.normalize_sql_path` does the work for `.sql` inputs (a file
or a directory of them), `hive_data.normalize_rows.normalize_dataset` for datasets
(.jsonl/.json/.parquet/.csv, hub ids).
"""

from __future__ import annotations

import click

from hive_core.cli import cli_errors, recipe_option
from hive_core.errors import ConfigError
from hive_core.settings import click_options, specs
from hive_data.normalize_rows import NormalizeConfig

FIELDS = specs(NormalizeConfig)


def _field_option(name: str, *decls: str, **click_kwargs):
    """A click option for an option that needs a click type of its own (a path, a range, a
    case-insensitive choice, a metavar), its default and help taken from NormalizeConfig's field."""
    spec = FIELDS[name]
    click_kwargs.setdefault("default", spec.default)
    return click.option(*decls, name, help=spec.help, **click_kwargs)


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_path", metavar="INPUT")
@_field_option("read", "--read", show_default=True)
@_field_option(
    "dialect",
    "--dialect",
    show_default=True,
    type=click.Choice(["postgres", "mysql", "sqlite"], case_sensitive=False),
)
@click.option(
    "-o",
    "--output",
    default="-",
    show_default=True,
    help="Output file ('-' for stdout), or a directory when INPUT is a directory. "
    "Datasets: a .jsonl or .parquet file (required).",
)
@click_options(NormalizeConfig, ["fmt"])
@_field_option("mapping", "--map", default=None, metavar="FIELD=COLUMN,...")
@_field_option("schema_dir", "--schema-dir", type=click.Path(file_okay=False))
@click_options(NormalizeConfig, ["schema_key", "keep_data", "coerce", "verify", "rejects", "strict"])
@_field_option("num_proc", "--num-proc", type=click.IntRange(min=1))
@recipe_option("normalize")
@cli_errors
def normalize(input_path: str, read: str, dialect: str, output: str, **options) -> None:
    """Normalize INPUT into canonical schemas, or a dataset into clean, verified rows.

    INPUT is a .sql file or a directory of them: every CREATE TABLE is rewritten into the canonical
    format (inline foreign keys, a closed type vocabulary, dependency order); statements that are
    not table structure are dropped and counted on stderr.

    INPUT can also be a dataset: a .jsonl/.json/.parquet/.csv file, a directory of them, or a hub id
    org/name[:split][:config]. Schemas are canonicalized, SQL answers transpiled to --dialect and
    verified (--verify), duplicates removed; failing rows go to the rejects file with their reason.
    """
    from hive_data.ddl.files import is_sql_input, normalize_sql_path

    if is_sql_input(input_path):
        normalize_sql_path(input_path, output=output, read=read, dialect=dialect.lower(), log=_echo_err)
        return
    from hive_data.normalize_rows import NothingKept, normalize_dataset

    if output in (None, "-"):
        raise ConfigError("a dataset input needs -o OUTPUT.jsonl or -o OUTPUT.parquet", file=input_path)
    given = {name: value for name, value in options.items() if value is not None}  # the rest: defaults
    cfg = NormalizeConfig(read=read, dialect=dialect.lower(), **given)
    try:
        summary = normalize_dataset(input_path, output, cfg)
    except NothingKept as err:  # the summary (with its warning) first, then the one-line error
        click.echo(err.summary.text(), err=True)
        raise
    click.echo(summary.text(), err=True)
