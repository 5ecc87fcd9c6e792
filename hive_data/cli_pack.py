"""`hive-data pack` and `hive-data inspect`: thin click wrappers over `hive_data.pack` and the manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hive_core.cli import cli_errors, recipe_option
from hive_core.settings import click_options
from hive_data.pack import PackConfig

# the PackConfig fields that are `hive-data pack` flags, in --help order (progress is -q/--quiet)
PACK_FLAGS = (
    "tokenizer", "seq", "loss", "think", "val", "seed", "overlong", "keep_duplicates", "shard_tokens",
    "num_proc", "fmt", "mapping", "force", "trust_remote_code",
)  # fmt: skip


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False),
    help="Shard directory to write (replaced atomically; only an empty directory or an earlier pack "
    "holding nothing but its own files is replaced).",
)
@click_options(PackConfig, PACK_FLAGS)
@recipe_option("pack")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@cli_errors
def pack(inputs, output, quiet, **options):
    """Tokenize, loss-mask and pack INPUTS (files, directories or hub ids) into Arrow shards.

    Rows are rendered with the tokenizer's chat template, packed with global best-fit-decreasing into
    rows of --seq tokens, split train/val, and written as memory-mappable Arrow shards with a
    manifest.json. Re-running with the same inputs and options does nothing.
    """
    from hive_data.pack import describe, pack_dataset
    from hive_data.records import parse_mapping

    given = {name: value for name, value in options.items() if value is not None}  # the rest: defaults
    given["mapping"] = parse_mapping(given.get("mapping")) or None
    result = pack_dataset(list(inputs), output, progress=not quiet, **given)
    click.echo(describe(result))


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("shards", type=click.Path(file_okay=False))
@click.option("--row", "row", type=int, default=None, help="Decode packed row K (0-based) of --split.")
@click.option(
    "--split", default="train", show_default=True, type=click.Choice(["train", "val"]), help="Split of --row."
)
@click.option(
    "--plot", type=click.Path(dir_okay=False), default=None, help="Write the length histogram as a PNG."
)
@click.option("--tokenizer", default=None, help="Tokenizer for --row (default: the one in the manifest).")
@click.option(
    "--verify", type=click.Choice(["size", "sha256"]), default="size", show_default=True, help="Shard check."
)
@click.option(
    "--color/--no-color", default=None, help="Highlight loss tokens with colour (default: on a terminal)."
)
@cli_errors
def inspect(shards, row, split, plot, tokenizer, verify, color):
    """Summarize a shard directory: manifest, document-length histogram, and optionally decode one row
    with the tokens that carry loss highlighted."""
    from hive_data.shards import open_shards

    opened = open_shards(shards, verify=verify)
    manifest = opened.manifest
    if row is not None:  # refuse a bad row or tokenizer before printing anything
        check_row(opened, split, row)
        tokenizer = matching_tokenizer(opened, tokenizer)
    click.echo(summary(manifest))
    click.echo("")
    click.echo(text_histogram(length_histogram(manifest)))
    if plot:
        write_plot(
            length_histogram(manifest),
            plot,
            title=f"{shards} (seq {manifest['seq']})",
        )
        click.echo(f"\nhistogram written to {plot}")
    if row is not None:
        if color is None:
            color = sys.stdout.isatty()
        click.echo("")
        click.echo(decode_row(opened, split, row, tokenizer, color))


def length_histogram(manifest: dict) -> dict | None:
    """The manifest's document-length histogram, or None when it is absent or not in hive's layout."""
    totals = manifest.get("totals")
    hist = totals.get("length_histogram") if isinstance(totals, dict) else None
    if not isinstance(hist, dict):
        return None
    edges, counts = hist.get("edges"), hist.get("counts")
    numbers = isinstance(edges, list) and isinstance(counts, list) and len(edges) == len(counts) + 1
    if not numbers or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in edges + counts
    ):
        return None
    return hist


def summary(manifest: dict) -> str:
    t = manifest.get("totals", {})
    tok = manifest.get("tokenizer", {})
    lines = [
        f"format        {manifest['format']} v{manifest['format_version']} (hive {manifest.get('hive_version', '?')})",
        f"tokenizer     {tok.get('name_or_path')} (vocab {tok.get('vocab_size')}, pad {tok.get('pad_id')}, "
        f"eos {tok.get('eos_id')}, sha256 {str(tok.get('sha256'))[:12]})",
        f"policy        seq {manifest['seq']}, loss {manifest.get('loss')}, think {manifest.get('think')}, "
        f"seed {manifest.get('seed')}, val {manifest.get('val')}",
    ]
    described: list[str] = []
    try:  # inputs and totals only inform (no reader relies on them): an odd layout is noted, not fatal
        for item in manifest.get("inputs", []):
            described.append(f"input         {item['path']} ({str(item.get('sha256'))[:12]})")
        if t:
            dropped = ", ".join(f"{k} {v}" for k, v in t.get("rows_dropped", {}).items()) or "none"
            described += [
                f"rows          {t['rows_in']} in, {t['rows_packed']} packed, dropped: {dropped}",
                f"tokens        {t['tokens']} ({t['loss_tokens']} under loss, {t['padding_tokens']} padding to fill rows)",
                f"sequences     {t['sequences']}, fill efficiency {t['fill_efficiency']:.2%}",
            ]
            for name, s in t.get("splits", {}).items():
                described.append(
                    f"  {name:<11} {s['rows']} rows in {s['sequences']} sequences, {s['tokens']} tokens, "
                    f"fill {s['fill_efficiency']:.2%}"
                )
    except (AttributeError, KeyError, TypeError, ValueError):
        described = [
            "totals        not in hive's layout (the manifest's inputs/totals were edited or not written by hive)"
        ]
    lines += described
    for info in manifest["shards"]:
        lines.append(
            f"shard         {info['file']}: {info['rows']} rows, {info['tokens']} tokens, {info['bytes']} bytes"
        )
    return "\n".join(lines)


def text_histogram(hist: dict | None, width: int = 50) -> str:
    if not hist or not hist.get("counts"):
        return "document lengths: no histogram in the manifest"
    edges, counts = hist["edges"], hist["counts"]
    top = max(counts) or 1
    lines = ["document length (tokens)   documents"]
    for lo, hi, n in zip(edges[:-1], edges[1:], counts):
        bar = "#" * round(width * n / top) if n else ""
        lines.append(f"{lo:>6} - {hi:<6}  {n:>10}  {bar}")
    return "\n".join(lines)


def write_plot(hist: dict | None, path: str, title: str = "") -> None:
    from hive_core.errors import ShardError

    if not hist or not hist.get("counts"):
        raise ShardError("the manifest has no length histogram to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hive_core.atomic import atomic_file

    edges, counts = hist["edges"], hist["counts"]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(
        edges[:-1],
        counts,
        width=[b - a for a, b in zip(edges[:-1], edges[1:])],
        align="edge",
        edgecolor="black",
    )
    ax.set_xlabel("document length (tokens)")
    ax.set_ylabel("documents")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_file(Path(path), "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def check_row(opened, split: str, k: int):
    from hive_core.errors import ShardError

    table = opened.split(split)
    if table is None or not 0 <= k < table.num_rows:
        rows = 0 if table is None else table.num_rows
        raise ShardError(f"no row {k} in split {split!r} (it has {rows} rows)", file=str(opened.root))
    return table


def matching_tokenizer(opened, tokenizer_name: str | None):
    """The tokenizer named (default: the manifest's), refused unless it is the one the shards were packed
    with: decoding with another one prints plausible but wrong text."""
    from hive_core.errors import ShardError
    from hive_data.pack import load_tokenizer, tokenizer_info

    packed_with = opened.manifest.get("tokenizer") or {}
    name = tokenizer_name or packed_with.get("name_or_path")
    tokenizer = load_tokenizer(name)
    if packed_with.get("sha256") and tokenizer_info(tokenizer)["sha256"] != packed_with["sha256"]:
        raise ShardError(
            f"tokenizer does not match the one the shards were packed with "
            f"({packed_with.get('name_or_path')}, sha256 {packed_with['sha256'][:12]}); pass that one with --tokenizer",
            file=str(name),
        )
    return tokenizer


def decode_row(opened, split: str, k: int, tokenizer, color: bool) -> str:
    """Row `k` of `split`, document by document, loss-carrying text highlighted (colour, or ⟦...⟧).
    `tokenizer` is a loaded tokenizer, or a name for `matching_tokenizer`."""
    import numpy as np

    table = check_row(opened, split, k)
    if tokenizer is None or isinstance(tokenizer, str):
        tokenizer = matching_tokenizer(opened, tokenizer)
    rec = table.slice(k, 1).to_pylist()[0]
    ids = np.asarray(rec["input_ids"])
    mask = np.asarray(rec["completion_mask"])
    out = [
        f"row {k} of {split}: {len(ids)} tokens, {int(mask.sum())} under loss, {len(rec['seq_lengths'])} documents"
    ]
    start = 0
    for d, n in enumerate(rec["seq_lengths"]):
        doc_ids, doc_mask = ids[start : start + n], mask[start : start + n]
        start += n
        out.append(f"--- document {d + 1}: {n} tokens, {int(doc_mask.sum())} under loss ---")
        text = []
        cuts = np.flatnonzero(np.diff(doc_mask)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, n]):
            piece = tokenizer.decode(doc_ids[a:b].tolist(), skip_special_tokens=False)
            if doc_mask[a]:
                piece = click.style(piece, fg="green", bold=True) if color else f"⟦{piece}⟧"
            text.append(piece)
        out.append("".join(text))
    if not color:
        out.append("(⟦...⟧ marks the tokens that carry loss)")
    return "\n".join(out)
