"""`hive-train SHARDS -o runs/NAME [--config recipe.yaml] [flags]`: a thin edge over `hive_train.loop.train`."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import click

from hive_core.cli import cli_errors
from hive_core.settings import click_options
from hive_train import __version__
from hive_train.config import TrainConfig

# The TrainConfig fields that are flags, in --help order: each flag's help, default, choices and
# type come from the field's setting (hive_train/config.py).
CLI_SETTINGS = (
    "model",
    "tokenizer",
    "quant",
    "adapter",
    "rank",
    "alpha",
    "dropout",
    "target_modules",
    "epochs",
    "max_steps",
    "lr",
    "weight_decay",
    "warmup_ratio",
    "lr_scheduler",
    "max_grad_norm",
    "batch_size",
    "grad_accum",
    "tokens_per_micro",
    "tokens_per_step",
    "seq",
    "eval_every",
    "eval_data",
    "eval_rows",
    "eval_max_new_tokens",
    "select_by",
    "save_every",
    "log_every",
    "keep_checkpoints",
    "seed",
    "vram",
    "device",
    "dtype",
    "attention",
    "gradient_checkpointing",
    "checkpoint_layers",
    "lean_layers",
    "loss_chunk",
    "compile",
    "cuda_graphs",
    "fast",
    "keep_4bit",
    "trust_remote_code",
)


def cache_bytecode(environ=os.environ) -> str | None:
    """Where this process caches compiled bytecode, when Python was told not to write it.

    Images that set PYTHONDONTWRITEBYTECODE and ship torch without bytecode (the GPU machine this
    project benchmarks on is one) recompile some 4,700 modules on every start: about 9 s of
    hive-train's start-up. Such a process writes and reads them under the user's cache instead
    (`$XDG_CACHE_HOME/hive/pycache`, never in site-packages), so only the first start pays.
    HIVE_BYTECODE_CACHE=0 turns this off; an explicit PYTHONPYCACHEPREFIX is left alone.
    """
    if not sys.dont_write_bytecode or sys.pycache_prefix or environ.get("HIVE_BYTECODE_CACHE") == "0":
        return None
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    sys.pycache_prefix = os.path.join(base, "hive", "pycache")
    sys.dont_write_bytecode = False
    return sys.pycache_prefix


def run() -> None:
    """The `hive-train` command: `main` with the bytecode cache set up before torch is imported;
    `hive-train export RUN -o OUT` goes to `export` (a shard directory named `export` needs `./export`)."""
    cache_bytecode()
    if sys.argv[1:2] == ["export"]:
        export(sys.argv[2:], prog_name="hive-train export")
    else:
        main()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=str))
@click.option("-o", "--output", required=True, type=click.Path(path_type=str), help="Merged model directory.")
@click.option(
    "--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16", show_default=True
)
@click.option("--device", default="auto", show_default=True, help="Where to fold: auto, cpu, cuda or cuda:N.")
@cli_errors
def export(run_dir, output, dtype, device):
    """Write RUN_DIR's model with its DoRA adapter folded in as a plain Hugging Face model directory
    (config, safetensors, tokenizer, generation config), for serving engines that cannot load DoRA
    adapters: it loads with `AutoModelForCausalLM.from_pretrained`, without peft or bitsandbytes."""
    import torch

    from hive_train.export import export_merged

    out = export_merged(run_dir, output, dtype=getattr(torch, dtype), device=device)
    click.echo(f"wrote {out}")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.argument("shards", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "-o", "--output", required=True, type=click.Path(file_okay=False), help="Run directory (runs/NAME)."
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="Recipe YAML (its `train` section) or a hivellm expert manifest.json (schema 2.0).",
)
@click_options(TrainConfig, CLI_SETTINGS)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the newest complete checkpoint in the run directory, with the configuration, "
    "base model and tokenizer the run recorded (flags and --config may restate them, not change them; "
    "a changed base model is refused). A larger --max-steps or --epochs extends the run, finished or "
    "not: it continues from the checkpoint's adapter, optimizer and data order, and the learning-rate "
    "schedule is recomputed for the new total (each step from the resume point on takes the rate the "
    "new total gives it; steps already taken keep theirs).",
)
@click.option("--overwrite", is_flag=True, help="Delete an existing run directory and start over.")
@click.option(
    "--stop-after", type=int, help="Stop (with a checkpoint) after N steps in total, keeping the schedule."
)
@click.option(
    "--verify",
    type=click.Choice(["sha256", "size"]),
    default="sha256",
    show_default=True,
    help="Shard check at start: full sha256 or sizes and counts only.",
)
@click.option(
    "--gpus",
    type=click.IntRange(min=1),
    help="Data-parallel processes on this host: N > 1 re-launches this command through torchrun "
    "(one process per GPU, NCCL; on a machine without CUDA or with --device cpu, N CPU processes "
    "with gloo). See docs/distributed.md.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or notes.")
@click.version_option(__version__, prog_name="hive-train")
@cli_errors
def main(shards, output, config_path, resume, overwrite, stop_after, verify, gpus, quiet, **options):
    """Train a QLoRA (NF4) + DoRA adapter on packed SHARDS (made by `hive-data pack`) into OUTPUT.

    Writes OUTPUT/adapter (PEFT format), best/ (the best adapter by --select-by), tokenizer/,
    config.yaml, metrics.jsonl, loss.png and report.md; with --eval-data, eval/step-N/ (answers and
    scores of every evaluation). Flags override the recipe given with --config. Runs data-parallel
    under torchrun (`torchrun --nproc-per-node N -m hive_train ...`) or with --gpus N.
    """
    if gpus is not None and gpus > 1:
        from hive_train.distributed import launch

        sys.exit(launch(gpus, sys.argv[1:]))

    from hive_train.config_sources import resolve
    from hive_train.distributed import PeerFailed
    from hive_train.loop import train

    warnings.filterwarnings("ignore", category=FutureWarning)
    # bitsandbytes logs at import that an optional CPU kernel package is absent: noise for users
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    flags = {k: v for k, v in options.items() if v is not None}
    recorded, recorded_source = None, None
    if resume:  # the run's own configuration stands in for the defaults (its model, tokenizer, ...)
        from hive_train.checkpoint import recorded_config

        recorded, recorded_source = recorded_config(output)
    resolved = resolve(config_path, flags, recorded=recorded, recorded_source=recorded_source)
    try:
        result = train(
            resolved.cfg,
            shards,
            output,
            resume=resume,
            overwrite=overwrite,
            stop_after=stop_after,
            verify=verify,
            progress=not quiet,
            notes=resolved.notes,
            explicit=resolved.explicit,
        )
    except PeerFailed:
        sys.exit(1)  # a rank of a data-parallel run; rank 0 printed why
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") != "0":
            sys.exit(130)  # Ctrl-C reaches every rank; rank 0 says it once
        raise
    if not result.completed and os.environ.get("RANK", "0") == "0":  # said once under torchrun
        click.echo(
            f"stopped after step {result.steps} of {result.total_steps}; checkpoint {result.checkpoint} "
            "(continue with --resume)",
            err=True,
        )


if __name__ == "__main__":
    main()
