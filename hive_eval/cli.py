"""`hive-eval`: score predictions of an expert against a normalized dataset.

    hive-eval - data.jsonl --predictions preds.jsonl -o eval/      # no run directory: score a file
    hive-eval data.jsonl --predictions preds.jsonl -o eval/        # the same (RUN_DIR left out)
    hive-eval runs/sql data.jsonl --predictions preds.jsonl        # writes runs/sql/eval/

    hive-eval runs/sql data.jsonl                                  # generate with the run, then score
    hive-eval runs/sql                                             # the same on the run's validation split
    hive-eval dev.json -p preds.jsonl -o eval/ --db-dir spider/database   # execute on Spider's SQLite files

RUN_DIR is the training run whose adapter produced the predictions. Without --predictions the run
generates them first (`hive_eval.generate.predict`: the adapter folded into the base, the prompts
rendered exactly as pack rendered them, greedy by default) into OUT/completions.jsonl. Scoring alone
never imports torch.
"""

from __future__ import annotations

from pathlib import Path

import click

from hive_core.cli import cli_errors, recipe_option
from hive_core.errors import ConfigError
from hive_data.compare import COMPARE_MODES
from hive_eval.evaluate import KINDS, EvalConfig

DEFAULTS = EvalConfig()  # the defaults live in the dataclass; flags only fill it


def split_paths(paths: tuple[str, ...], predictions: str | None) -> tuple[str | None, str | None]:
    """(RUN_DIR or None, DATA or None) from the positional arguments `RUN_DIR [DATA]`: a single
    argument is DATA when --predictions is given, else RUN_DIR (DATA None: the run's validation
    split); RUN_DIR `-` means none."""
    if not paths:
        raise ConfigError("missing DATA: hive-eval [RUN_DIR] DATA --predictions FILE -o OUT")
    if len(paths) > 2:
        raise ConfigError(f"expected RUN_DIR and DATA, got {len(paths)} arguments")
    if len(paths) == 1:
        if predictions is not None:
            return None, paths[0]
        if not (Path(paths[0]) / "config.yaml").is_file():
            raise ConfigError(
                "not a run directory (no config.yaml): pass RUN_DIR [DATA] to generate, or DATA "
                "--predictions FILE",
                file=paths[0],
            )
        return paths[0], None
    run_dir, data = paths
    if run_dir == "-":
        run_dir = None
    elif not Path(run_dir).is_dir():
        raise ConfigError("no such run directory", file=run_dir)
    if predictions is None and run_dir is None:
        raise ConfigError("nothing to score: pass RUN_DIR to generate predictions, or --predictions FILE")
    return run_dir, data


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, metavar="[RUN_DIR] [DATA]")
@click.option(
    "--predictions",
    "-p",
    type=click.Path(dir_okay=False),
    help="jsonl of predictions: `row` (1-based row of DATA) or `id`, and `prediction` (the predicted text).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    help="Output directory for predictions.jsonl and summary.json (default: RUN_DIR/eval).",
)
@click.option(
    "--compare",
    type=click.Choice(COMPARE_MODES),
    default=DEFAULTS.compare,
    show_default=True,
    help="Result equality: set (BIRD: rows as a set, column order kept) or bag (Spider test-suite: "
    "multiset of rows, any column order, row order only under gold's ORDER BY).",
)
@click.option(
    "--databases", type=click.IntRange(min=1), default=DEFAULTS.databases, show_default=True,
    help="Synthesized databases per gold query; a prediction is correct only if it matches on all.",
)  # fmt: skip
@click.option(
    "--seed", type=int, default=DEFAULTS.seed, show_default=True, help="Seed of the synthesized databases."
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Score only the first N rows of DATA."
)
@click.option(
    "--timeout-ms", type=click.IntRange(min=1), default=DEFAULTS.timeout_ms, show_default=True,
    help="Per-query deadline; a query past it scores wrong.",
)  # fmt: skip
@click.option(
    "--kind",
    type=click.Choice(KINDS),
    default=DEFAULTS.kind,
    show_default=True,
    help="Scorer: auto picks sql for rows with a schema or dialect, json when gold is JSON, else text.",
)
@click.option(
    "--pg-uri", default=None, metavar="URI",
    help="A PostgreSQL to run SQL in (superuser or CREATEROLE+CREATEDB); default: an embedded one.",
)  # fmt: skip
@click.option(
    "--db-dir", type=click.Path(), default=None, metavar="DIR",
    help="Execute on real SQLite databases instead of synthesized ones: DIR/<db_id>/<db_id>.sqlite "
    "(Spider/BIRD layout), picked by each row's db_id, opened read-only.",
)  # fmt: skip
@click.option(
    "--db-uri", default=None, metavar="URI",
    help="Execute on this PostgreSQL database instead of synthesized ones, in read-only transactions "
    "that are rolled back; pass a role that can only read.",
)  # fmt: skip
@click.option(
    "--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True,
    help="Generating: the longest answer, in tokens.",
)  # fmt: skip
@click.option(
    "--temperature", type=click.FloatRange(min=0), default=0.0, show_default=True,
    help="Generating: 0 is greedy; above 0 samples (seeded by --seed).",
)  # fmt: skip
@click.option(
    "--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True,
    help="Generating: nucleus sampling mass (with --temperature > 0).",
)  # fmt: skip
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Generating: rows per batch (64 on CUDA, 8 on CPU).",
)
@click.option("--device", default="auto", show_default=True, help="Generating: auto, cpu, cuda or cuda:N.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@recipe_option("eval")
@cli_errors
def main(
    paths, predictions, output, compare, databases, seed, limit, timeout_ms, kind, pg_uri, db_dir, db_uri,
    max_new_tokens, temperature, top_p, batch_size, device, progress,
):  # fmt: skip
    """Score an expert against a normalized dataset (DATA: jsonl/json/csv/parquet from
    `hive-data normalize`), as BIRD's and Spider's evaluation scripts do: SQL is executed on small
    synthesized databases in a sandboxed PostgreSQL, or on real ones with --db-dir / --db-uri. With
    --predictions FILE no model is loaded; without it, RUN_DIR's adapter generates the answers first
    (DATA left out: the run's own validation split, prompts as the shards hold them)."""
    from hive_eval.evaluate import evaluate, summary_table

    run_dir, data = split_paths(paths, predictions)
    if output is None:
        if run_dir is None:
            raise ConfigError("missing -o OUT (there is no RUN_DIR to write eval/ into)")
        output = str(Path(run_dir) / "eval")
    config = EvalConfig(
        compare=compare,
        databases=databases,
        seed=seed,
        limit=limit,
        timeout_ms=timeout_ms,
        kind=kind,
        pg_uri=pg_uri,
        db_dir=db_dir,
        db_uri=db_uri,
    )
    config.check()  # before generating: a bad flag combination fails at once
    if predictions is None:  # the run answers the data's questions first
        import logging

        from hive_eval.generate import predict

        # bitsandbytes logs at import that an optional CPU kernel package is absent: noise for users
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

        predictions = str(Path(output) / "completions.jsonl")
        val_data = str(Path(output) / "val_rows.jsonl") if data is None else None
        stats = predict(
            run_dir, data, predictions, limit=limit, device=device, max_new_tokens=max_new_tokens,
            batch_size=batch_size, temperature=temperature, top_p=top_p, seed=seed, progress=progress,
            val_data=val_data,
        )  # fmt: skip
        data = val_data or data
        click.echo(f"generated {stats.rows} answers ({stats.new_tokens} tokens) into {predictions}", err=True)
    if not Path(predictions).is_file():
        raise ConfigError("no such file", file=predictions)
    summary = evaluate(data, predictions, output, config, progress=progress, run_dir=run_dir)
    click.echo(summary_table(summary))
    click.echo(f"wrote {Path(output) / 'predictions.jsonl'} and {Path(output) / 'summary.json'}")


if __name__ == "__main__":
    main()
