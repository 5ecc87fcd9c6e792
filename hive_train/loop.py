"""The training run: setup from shards + config, then one readable loop.

Order of operations per optimizer step: set the learning rate, forward + backward every
micro-batch of this process's share (each loss is a *sum* over its loss tokens divided by the loss
tokens of the whole step, so the step's gradient is the gradient of the mean over all its loss
tokens, however it is split, over micro-batches or over data-parallel ranks), sum the adapter
gradients over ranks, check the loss is finite, clip, step, zero the gradients, log, then evaluate
and save on their cadence.

Under torchrun (`hive_train.distributed`) every rank runs this same loop; rank 0 alone writes the
run directory and shows progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from hive_core.atomic import (
    Layout,
    atomic_file,
    check_replaceable,
    check_separate,
    clear_dir,
    commit_dir,
    new_staging_dir,
    remove_stale,
    write_marker,
)
from hive_core.errors import ConfigError, TrainError
from hive_data.shards import open_shards
from hive_train import attention, checkpoint, distributed
from hive_train.config import TrainConfig, oom_message
from hive_train.data import (
    MicroBatch,
    RowTable,
    build_schedule,
    eval_batches,
    flatten,
    micro_capacity,
    shard_micro_batches,
)
from hive_train.distributed import pick_device  # noqa: F401  (re-exported: the loop's device rule)
from hive_train.fast import linear_cross_entropy_sum
from hive_train.graphs import GraphedStep, graph_eligibility, micro_batches_per_step, static_shape
from hive_train.metrics import MetricsLog, peak_flops, peak_memory_gb, read_metrics, step_flops
from hive_train.model import (
    check_fit,
    compute_dtype,
    has_tokenizer_files,
    load_model,
    load_tokenizer,
    model_fingerprint,
    read_model_info,
    save_adapter,
    tokenizer_sha256,
)
from hive_train.report import plot_losses, write_report

# Config fields that may change between a run and its resumption (they do not change the math).
RESUMABLE_CHANGES = {
    "eval_every",
    "save_every",
    "log_every",
    "keep_checkpoints",
    "device",
    "compile",
    "cuda_graphs",
    "attention",
    "trust_remote_code",  # a permission, not part of the math
    "tokenizer",  # where it is read from: its content is checked against the shards' manifest
}
# Config fields a resume may raise, extending the run (`hive-train --help`, --resume). The
# learning-rate schedule is recomputed for the new total: every step from the resume point on takes
# the rate the new total's schedule gives it (`lr_at(step, new_total)`); steps already taken keep
# theirs. The data order is a prefix property of the seed, so the extension sees the rows a run
# started with the new total would have seen at those steps.
EXTENDABLE = {"max_steps", "epochs"}


@dataclass
class TrainResult:
    run_dir: Path
    steps: int  # optimizer steps completed
    total_steps: int
    losses: list[float]  # train loss of every step this process ran
    final_val_loss: float | None
    checkpoint: Path | None  # the newest checkpoint
    completed: bool  # False when stopped early by `stop_after`
    cuda_graphs: bool = False  # whether the steps ran as CUDA graph replays
    model: object = dataclasses.field(default=None, repr=False)  # the trained peft model


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based optimizer `step`: linear warmup, then cosine/linear decay or constant."""
    warmup = math.ceil(cfg.warmup_ratio * total)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.lr_scheduler == "constant":
        return cfg.lr
    progress = (step - warmup) / max(1, total - warmup)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.lr_scheduler == "cosine" else 1 - progress
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


def micro_loss(model, batch: MicroBatch, backend: str) -> torch.Tensor:
    """Sum of token cross-entropies over the micro-batch's loss positions (not a mean).

    Logits are computed only at loss positions: prompt tokens never produce a vocab-sized row.
    """
    base = model.get_base_model()
    out = base.model(
        input_ids=batch.input_ids,
        position_ids=batch.position_ids,
        use_cache=False,
        **attention.attention_inputs(backend, batch.cu_seqlens, batch.max_doc_len, batch.length),
    )
    hidden = out.last_hidden_state[0].index_select(0, batch.loss_positions)
    head = base.get_output_embeddings()
    if head.bias is None:
        # chunked: the (loss tokens x vocab) logits never exist in full
        return linear_cross_entropy_sum(hidden, head.weight, batch.targets, weights=batch.loss_weights)
    losses = F.cross_entropy(head(hidden).float(), batch.targets, reduction="none")
    return losses.sum() if batch.loss_weights is None else (losses * batch.loss_weights).sum()


def accumulate(model, batches: list[MicroBatch], backend: str, autocast, denom: int) -> torch.Tensor:
    """Backward through every micro-batch's loss sum divided by `denom`, the loss tokens of the
    whole optimizer step (over all ranks); return the summed loss / `denom` as a float64 tensor on
    the device (no host sync). Summed over ranks, the gradients and the returned value are those
    of the mean over all the step's loss tokens."""
    total = None
    for batch in batches:
        with autocast():
            loss = micro_loss(model, batch, backend)
        (loss / max(denom, 1)).backward()
        # summed on the device: one host sync per step, not one per micro-batch
        total = loss.detach().double() if total is None else total + loss.detach().double()
    if total is None:  # a data-parallel rank with no micro-batch in this step
        return torch.zeros((), dtype=torch.float64)
    return total / max(denom, 1)


def forward_backward(model, batches: list[MicroBatch], backend: str, autocast) -> tuple[float, int]:
    """Accumulate the gradient of the mean loss over all loss tokens of `batches`; return (mean loss, tokens)."""
    denom = sum(b.loss_tokens for b in batches)
    return float(accumulate(model, batches, backend, autocast, denom)), denom


@torch.no_grad()
def evaluate(
    model,
    table: RowTable,
    micro_rows: list[np.ndarray],
    device,
    backend: str,
    autocast,
    pad: dict | None = None,
) -> float | None:
    """Mean loss over all loss tokens of the validation split.

    Under data parallelism each rank evaluates micro-batches rank, rank + world, ... and the
    (loss sum, token count) pairs are summed over ranks: every rank gets the same mean.
    """
    if not micro_rows:
        return None
    model.eval()
    total, count = 0.0, 0
    for rows in micro_rows[distributed.rank() :: distributed.world()]:
        batch = flatten(table, rows, **(pad or {})).to(device)
        with autocast():
            total += float(micro_loss(model, batch, backend))
        count += batch.loss_tokens
    model.train()
    total, count = distributed.all_reduce_sum([total, count])
    return total / count if count else None


def _versions() -> dict:
    import bitsandbytes
    import peft
    import transformers

    return {
        "torch": str(torch.__version__),
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "bitsandbytes": bitsandbytes.__version__,
    }


def _legacy_run(path: Path) -> bool:
    """A run directory of a hive that wrote no ownership marker: its config.yaml is hive-train's
    resolved config (a mapping with `train` and `shards` sections)."""
    try:
        with open(path / "config.yaml", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("train"), dict) and "shards" in data


# What hive-train writes at the top level of a run directory: a new entry written there must be
# added here, or `--overwrite` refuses to delete such a run directory.
RUN_LAYOUT = Layout(
    kind="run",
    names=(
        "config.yaml",
        "tokenizer",
        "generation_config.json",
        "metrics.jsonl",
        "loss.png",
        "report.md",
        "adapter",
        checkpoint.CHECKPOINTS,
    ),
    legacy=_legacy_run,
)


def _prepare_run_dir(out: Path, resume: bool, overwrite: bool, shards_dir: str | Path | None = None) -> None:
    """Make `out` the run directory. Missing or empty: created, with hive's ownership marker
    (`.hive-owned`, kind "run"). Holding something: kept as it is with `resume`; refused without
    `overwrite`; with `overwrite` emptied only when it is hive's run directory (`RUN_LAYOUT`: the
    marker, or an older hive's config.yaml, and no top-level entry hive-train does not write),
    otherwise refused with `ConfigError` and left intact. The run directory must not be, hold or lie
    inside `shards_dir`. Everything is checked before anything is deleted or written."""
    if shards_dir is not None:
        check_separate(out, [shards_dir], what="run directory", input_noun="shards directory")
    existing = out.is_dir() and any(out.iterdir())
    if resume:
        return
    if existing and not overwrite:
        raise TrainError(
            "run directory is not empty: pass --resume to continue it or --overwrite to start over",
            file=str(out),
        )
    if existing:
        check_replaceable(out, RUN_LAYOUT, "delete")
        clear_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, RUN_LAYOUT.kind)


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def train(
    cfg: TrainConfig,
    shards_dir: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    verify: str = "sha256",
    progress: bool = True,
    notes: list[str] | None = None,
) -> TrainResult:
    """Train an adapter on packed shards into `out_dir` (docs/training.md has the layout).

    `stop_after` stops after that many optimizer steps in total (saving a checkpoint) without
    changing the schedule, as an interruption would. Raises `HiveError` subclasses for bad input.

    Under torchrun every process calls this: each takes its share of every step's micro-batches
    and rank 0 alone writes `out_dir` (docs/distributed.md). The process group is started here
    and destroyed on the way out, unless the caller started it.
    """
    started = time.perf_counter()
    with distributed.process_group(cfg.device) as device:
        return _train(
            cfg,
            shards_dir,
            out_dir,
            device=device,
            started=started,
            resume=resume,
            overwrite=overwrite,
            stop_after=stop_after,
            verify=verify,
            progress=progress,
            notes=notes,
        )


def _train(
    cfg: TrainConfig,
    shards_dir: str | Path,
    out_dir: str | Path,
    *,
    device: torch.device,
    started: float,
    resume: bool,
    overwrite: bool,
    stop_after: int | None,
    verify: str,
    progress: bool,
    notes: list[str] | None,
) -> TrainResult:
    out = Path(out_dir)
    rank, world = distributed.rank(), distributed.world()
    main = rank == 0
    progress = progress and main  # one progress bar and one copy of each note, from rank 0
    log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
    for note in notes or []:
        log(f"note: {note}")

    # ---- data: shards, seq, fit with model and tokenizer ------------------------------------
    phases: dict[str, float] = {}  # seconds since `started` at each start-up milestone

    def mark(name: str) -> None:
        phases[name] = round(time.perf_counter() - started, 3)

    # Every rank runs the same checks; bad input is reported once, by rank 0 (`agreed`).
    with distributed.agreed():
        # the model's config only (no weights): every token id is checked against its embeddings too
        info = read_model_info(cfg.model, trust_remote_code=cfg.trust_remote_code)
        # rank 0 hashes the shards; the others check sizes (the same files; `agreed` stops them all)
        shards = open_shards(shards_dir, verify=verify if main else "size", model_vocab=info.vocab_size)
        mark("shards_opened")
        manifest_path = str(Path(shards_dir) / "manifest.json")
        if cfg.seq is not None and cfg.seq != shards.seq:
            raise ConfigError(
                f"seq {cfg.seq} disagrees with the shards, which were packed with seq {shards.seq} "
                "(the trainer takes max_seq_length from the manifest; drop --seq or re-pack)",
                file=manifest_path,
            )
        cfg = dataclasses.replace(cfg, seq=shards.seq)
        if shards.split("train") is None:
            raise TrainError("the shards hold no train rows", file=manifest_path)
        train_rows = RowTable.from_arrow(shards.split("train"))
        val_rows = RowTable.from_arrow(shards.split("val")) if shards.split("val") is not None else None
        max_id = max(int(t.ids.max()) for t in (train_rows, val_rows) if t is not None and len(t.ids))
        tok_meta = shards.manifest.get("tokenizer") or {}
        tokenizer_source, tokenizer = _find_tokenizer(cfg, tok_meta)
        for note in check_fit(
            info,
            shards.manifest,
            seq=shards.seq,
            manifest_path=manifest_path,
            max_token_id=max_id,
            tokenizer=tokenizer,
            tokenizer_source=tokenizer_source,
            tokenizer_sha256=tokenizer_sha256(tokenizer),
        ):
            log(f"warning: {note}")

        mark("tokenizer_checked")
        schedule = build_schedule(
            train_rows.row_tokens,
            seed=cfg.seed,
            epochs=cfg.epochs,
            max_steps=cfg.max_steps,
            batch_size=cfg.batch_size,
            grad_accum=cfg.grad_accum,
            tokens_per_micro=cfg.tokens_per_micro,
            tokens_per_step=cfg.tokens_per_step,
        )
        # ---- run directory: rank 0 prepares it; the other ranks only read checkpoints from it
        resolved = cfg.to_dict()
        base_model = None  # the base weights' fingerprint (rank 0 records and checks it)
        if main:
            base_model = model_fingerprint(cfg.model)
            _prepare_run_dir(out, resume, overwrite, shards_dir)
            checkpoint.clean_staging(out)
            _find_resume(  # before anything is rewritten
                out, resume, resolved, shards.manifest_sha256, schedule.total_steps, base_model
            )
    total_steps = schedule.total_steps
    resume_from = checkpoint.latest_checkpoint(out) if resume else None
    shards_info = {
        "path": str(Path(shards_dir).resolve()),
        "manifest_sha256": shards.manifest_sha256,
        "seq": shards.seq,
        "train_rows": train_rows.rows,
        "train_tokens": int(len(train_rows.ids)),
        "val_rows": val_rows.rows if val_rows else 0,
        "val_tokens": int(len(val_rows.ids)) if val_rows else 0,
    }
    # ---- resolved config and tokenizer first, so a failed run still says what it was
    if main:
        _write_run_config(out, resolved, shards_info, world, base_model)
        if not (out / "tokenizer").is_dir():
            staging = new_staging_dir(out / "tokenizer")
            tokenizer.save_pretrained(str(staging))
            commit_dir(staging, out / "tokenizer")
        _write_generation_config(out, cfg, tok_meta)

    # ---- model, optimizer, speed switches (all in one place) ---------------------------------
    mark("run_dir_written")
    dtype = compute_dtype(cfg, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats(device)
    backend = attention.choose_backend(cfg.attention, device)
    torch.manual_seed(cfg.seed)  # the same adapter initialisation on every rank
    try:
        model = load_model(cfg, device, dtype)
    except torch.OutOfMemoryError:
        raise TrainError(oom_message(0, cfg.vram, _gpu_total(device))) from None
    model.train()
    mark("model_loaded")
    if main and base_model is None:  # a hub id downloaded just now: fingerprint its snapshot
        base_model = model_fingerprint(cfg.model)
        if resume_from is not None:  # (re)downloaded for a resume: it must still be the same weights
            _check_base_model(checkpoint.read_state(resume_from), base_model, resume_from)
        _write_run_config(out, resolved, shards_info, world, base_model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda" or None
    )
    if model.hive_fast is not None:  # prepared adapter weights are refreshed after every step
        model.hive_fast.attach(optimizer)
    # Autocast only matters for layers outside the fast path: when it covers every adapter, the
    # frozen base is already in the compute dtype and autocast's per-op dispatch is pure overhead.
    fast_everywhere = model.hive_fast is not None and model.hive_fast.covers_all
    autocast = contextlib.nullcontext if fast_everywhere else _autocast(device, dtype)
    val_micro = (
        eval_batches(val_rows, batch_size=cfg.batch_size, tokens_per_micro=cfg.tokens_per_micro)
        if val_rows
        else []
    )

    # Compiled kernels (FlexAttention on CUDA, --compile) see one padded shape instead of
    # recompiling for every micro-batch length.
    every_micro = [m for plan in schedule.epochs for step in plan for m in step]
    pad_id = int(tok_meta.get("pad_id") or 0)
    pad: dict = {}
    if device.type == "cuda" and (backend == "flex" or cfg.compile):
        capacity = micro_capacity(train_rows, every_micro)
        if val_rows is not None and val_micro:
            capacity = max(capacity, micro_capacity(val_rows, val_micro))
        pad = {"pad_to": capacity, "pad_id": pad_id}

    graphed = None
    why_not = (
        "turned off"
        if cfg.cuda_graphs is False
        else graph_eligibility(
            device=device,
            fast=model.hive_fast,
            backend=backend,
            cfg=cfg,
            data_parallel=distributed.active(),
            schedule=schedule,
        )
    )
    if why_not is None:
        graphed = GraphedStep(
            model,
            backend,
            static_shape(train_rows, every_micro),
            pad_id,
            device,
            micro=micro_batches_per_step(schedule),
        )
    elif cfg.cuda_graphs:
        log(f"CUDA graphs off: {why_not}")

    start_step, tokens_seen = 0, 0
    last_good = None
    if resume_from is not None:
        state = checkpoint.load_checkpoint(resume_from, model, optimizer)
        if model.hive_fast is not None:
            model.hive_fast.mark_stale()
        start_step, tokens_seen, last_good = state["step"], state["tokens"], resume_from
        log(f"resuming from {resume_from} (step {start_step} of {total_steps})")
    if rank:
        # other ranks draw their own dropout masks (rank 0 keeps the single-process stream);
        # with dropout 0, the default, nothing draws from it
        torch.manual_seed(cfg.seed + 1_000_003 * rank + start_step)
    metrics = (
        MetricsLog(out / "metrics.jsonl", resume_step=start_step if resume_from else None) if main else None
    )
    if world > 1:
        log(f"data parallel: {world} processes ({torch.distributed.get_backend()})")

    loss_per_row = train_rows.row_loss_tokens()
    peak = peak_flops(device)
    peak = peak * world if peak else None  # MFU over all the ranks' GPUs
    losses: list[float] = []
    val_loss = None
    end_step = total_steps if stop_after is None else min(total_steps, stop_after)
    bar = _progress(total_steps, start_step, progress)
    step = start_step
    try:
        # ---- the loop ------------------------------------------------------------------------
        for step in range(start_step, end_step):
            t0 = time.perf_counter()
            lr = lr_at(step, total_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_rows = schedule.micro_batches(step)
            all_rows = np.concatenate(step_rows)
            # the whole step's loss tokens, over every rank: known from the schedule alone
            loss_tokens = int(loss_per_row[all_rows].sum())
            mine = shard_micro_batches(step_rows, rank, world)
            local = None
            if graphed is not None:
                local, graphed = _graphed(graphed, [flatten(train_rows, r) for r in mine], loss_tokens, log)
            if local is None:
                batches = [flatten(train_rows, rows, **pad).to(device) for rows in mine]
                local = accumulate(model, batches, backend, autocast, loss_tokens)
            loss = float(distributed.all_reduce_gradients(params, local))
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf")))
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                if not main:  # the loss and norm are summed over ranks: rank 0 sees it too
                    raise distributed.PeerFailed("rank 0 reports the non-finite step")
                what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
                kept = (
                    f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved before it"
                )
                raise TrainError(
                    f"{what} at step {step + 1}; stopped without applying it ({kept}; resume with --resume "
                    "and a lower --lr)",
                    file=str(out),
                )
            optimizer.step()
            if graphed is None:  # a graph's replay overwrites its gradients in place
                optimizer.zero_grad(set_to_none=True)

            done = step + 1
            step_tokens = int(train_rows.row_tokens[all_rows].sum())  # over all ranks
            tokens_seen += step_tokens
            elapsed = time.perf_counter() - t0
            losses.append(loss)
            flops = step_flops(info, step_tokens, loss_tokens, train_rows.doc_lengths_of(all_rows))
            record = {
                "step": done,
                "epoch": round(schedule.epoch_progress(step), 4),
                "loss": loss,
                "val_loss": None,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": tokens_seen,
                "step_tokens": step_tokens,
                "loss_tokens": loss_tokens,
                "tokens_per_s": step_tokens / elapsed,
                "step_time": elapsed,
                "nominal_flops": flops,
                "mfu": flops / elapsed / peak if peak else None,
                "peak_mem_gb": round(peak_memory_gb(device), 3),
                "elapsed_s": round(time.perf_counter() - started, 3),
                "wall_time": time.time(),
            }
            if step == start_step:
                mark("first_step")
                record["startup"] = dict(phases)
                log("start-up: " + ", ".join(f"{k} {v:.1f}s" for k, v in phases.items()))
            if (cfg.eval_every and done % cfg.eval_every == 0) or done == total_steps:
                record["val_loss"] = val_loss = evaluate(
                    model, val_rows, val_micro, device, backend, autocast, pad
                )
            if metrics and (done % cfg.log_every == 0 or record["val_loss"] is not None or done == end_step):
                metrics.write(record)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)
            bar.update(1)
            if (cfg.save_every and done % cfg.save_every == 0) or done == end_step:
                last_good = checkpoint.checkpoint_dir(out, done)  # rank 0 writes it
                if main:
                    checkpoint.save_checkpoint(
                        out,
                        done,
                        model,
                        optimizer,
                        {
                            "tokens": tokens_seen,
                            "cursor": _cursor(schedule, done),
                            "config": resolved,
                            "manifest_sha256": shards.manifest_sha256,
                            "scheduler": _scheduler_state(cfg, total_steps, done),
                            "loss": loss,
                            "world_size": world,  # for the record: a resume may use another
                            "base_model": base_model,  # a resume refuses changed base weights
                            "tokenizer_source": _source_path(tokenizer_source),  # a resume reads it
                        },
                        keep=cfg.keep_checkpoints,
                    )
    except torch.OutOfMemoryError:
        raise TrainError(oom_message(step + 1, cfg.vram, _gpu_total(device))) from None
    finally:
        bar.close()
        if metrics:
            metrics.close()

    completed = end_step == total_steps
    if completed and main:
        # ---- outputs: adapter (PEFT format), curves, report ------------------------------------
        remove_stale(out / "adapter")
        staging = new_staging_dir(out / "adapter")
        save_adapter(model, staging)
        commit_dir(staging, out / "adapter")
        records = read_metrics(out / "metrics.jsonl")
        plot_losses(records, out / "loss.png")
        summary = dict(
            shards_info,
            run_dir=str(out),
            shards=shards_info["path"],
            steps=total_steps,
            epochs=schedule.epoch_progress(total_steps - 1) if total_steps else 0.0,
            trainable_params=sum(p.numel() for p in params),
            device=str(device)
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
            + (f" x {world} data-parallel processes" if world > 1 else ""),
            dtype=str(dtype).replace("torch.", ""),
            attention=backend,
            batching=_batching(cfg),
            peak_memory_gb=peak_memory_gb(device),
            wall_s=time.perf_counter() - started,
        )
        write_report(out / "report.md", summary=summary, config=resolved, records=records)
        log(f"done: {out / 'adapter'} (report: {out / 'report.md'})")
    distributed.barrier()  # every rank returns once rank 0's outputs exist
    return TrainResult(
        run_dir=out,
        steps=end_step,
        total_steps=total_steps,
        losses=losses,
        final_val_loss=val_loss,
        checkpoint=last_good,
        completed=completed,
        cuda_graphs=graphed is not None,
        model=model,
    )


def _graphed(graphed: GraphedStep, batches, loss_tokens: int, log):
    """(loss, graphed) from a graph replay; (None, None) when capturing it failed, after which
    the run goes on eagerly (this step included) with the gradients and adapter state reset."""
    if graphed.graph is not None:  # captured: replays do not fail this way
        return graphed.run(batches, loss_tokens), graphed
    try:
        return graphed.run(batches, loss_tokens), graphed
    except torch.OutOfMemoryError:
        raise  # the loop turns it into the --vram advice
    except RuntimeError as err:  # an operation that cannot be captured (a host sync, say)
        torch.cuda.synchronize()
        for p in graphed.params:
            p.grad = None
        graphed.model.hive_fast.mark_stale()
        graphed.inputs, graphed.loss = [], None
        torch.cuda.empty_cache()
        first = err
        if "during capture" in str(err) and err.__context__ is not None:
            first = err.__context__  # what broke the capture, not the error that ended it
        log(f"CUDA graph capture failed, running without ({str(first).splitlines()[0][:200]})")
        return None, None


def _source_path(source: str) -> str:
    """A local directory as an absolute path (a resume may start elsewhere); a hub id as it is."""
    return str(Path(source).resolve()) if Path(source).is_dir() else source


def _write_run_config(out: Path, resolved: dict, shards_info: dict, world: int, base_model) -> None:
    with atomic_file(out / "config.yaml") as fh:
        fh.write("# resolved by hive-train; `--config` reads the train section back\n")
        yaml.safe_dump(
            {
                "train": resolved,
                "shards": shards_info,
                "versions": _versions(),
                "world_size": world,
                "base_model": base_model,
            },
            fh,
            sort_keys=False,
        )


def _find_tokenizer(cfg: TrainConfig, tok_meta: dict):
    """`--tokenizer` (on a resume: the source the run recorded); else the one the shards name when
    it is a local directory; else the model's own directory; else the named one as a hub id.
    Whichever it is, its vocabulary, special ids and content are then checked against the
    manifest. (The manifest may name a path relative to where `pack` ran, which does not resolve
    from here.)"""
    if cfg.tokenizer:
        return cfg.tokenizer, load_tokenizer(cfg.tokenizer, trust_remote_code=cfg.trust_remote_code)
    named = tok_meta.get("name_or_path")
    candidates = []
    if named and Path(named).is_dir():
        candidates.append(named)
    if has_tokenizer_files(cfg.model):
        candidates.append(cfg.model)
    for name in (named, cfg.model):
        if name and not Path(name).exists() and not name.startswith((".", "/")) and name.count("/") <= 1:
            candidates.append(name)  # a hub id
    for source in dict.fromkeys(candidates):
        try:
            return source, load_tokenizer(source, trust_remote_code=cfg.trust_remote_code)
        except TrainError:
            continue
    raise TrainError(
        f"cannot find the tokenizer the shards were packed with ({named or '?'}); pass --tokenizer",
        file=str(cfg.model),
    )


def _cursor(schedule, done: int) -> dict:
    """Where the data stands after `done` steps: the next step's epoch and index in that epoch."""
    if done >= schedule.total_steps:
        return {"epoch": len(schedule.epochs), "step_in_epoch": 0, "steps_done": done}
    epoch, index = schedule.locate(done)
    return {"epoch": epoch, "step_in_epoch": index, "steps_done": done}


def _scheduler_state(cfg: TrainConfig, total: int, done: int) -> dict:
    return {
        "kind": cfg.lr_scheduler,
        "warmup_steps": math.ceil(cfg.warmup_ratio * total),
        "total_steps": total,
        "steps_done": done,
        "next_lr": lr_at(done, total, cfg) if done < total else None,
    }


def _find_resume(
    out: Path,
    resume: bool,
    resolved: dict,
    manifest_sha256: str,
    total_steps: int | None = None,
    base_model: dict | None = None,
) -> Path | None:
    """The checkpoint to resume from (checked against this run's config, shards, total steps and
    base weights), or None."""
    if not resume:
        return None
    path = checkpoint.latest_checkpoint(out)
    if path is None:
        raise TrainError("nothing to resume: no complete checkpoint in the run directory", file=str(out))
    _check_resume(checkpoint.read_state(path), resolved, manifest_sha256, path, total_steps, base_model)
    return path


def _check_resume(
    state: dict,
    resolved: dict,
    manifest_sha256: str,
    path: Path,
    total_steps: int | None = None,
    base_model: dict | None = None,
) -> None:
    if state.get("manifest_sha256") != manifest_sha256:
        raise TrainError(
            "the shards differ from those this run was trained on (manifest sha256)", file=str(path)
        )
    _check_base_model(state, base_model, path)
    if total_steps is not None and total_steps < state["step"]:
        raise TrainError(
            f"this run already took {state['step']} steps; --max-steps/--epochs give only {total_steps} "
            "(a resume may extend a run, not shorten it)",
            file=str(path),
        )
    before = state.get("config", {})
    # a key the checkpoint predates counts as its default: older runs stay resumable
    defaults = TrainConfig().to_dict()
    changed = sorted(
        k
        for k in resolved
        if k not in RESUMABLE_CHANGES | EXTENDABLE and before.get(k, defaults.get(k)) != resolved[k]
    )
    if changed:
        raise TrainError(
            f"cannot resume with a different configuration ({', '.join(changed)} changed); "
            "resume with the original settings or start a new run",
            file=str(path),
        )


def _check_base_model(state: dict, base_model: dict | None, path: Path) -> None:
    """Refuse a resume whose base weights differ from those the checkpoint was trained on (when
    both fingerprints are known: checkpoints from before fingerprints are not checked)."""
    recorded = state.get("base_model")
    if recorded and base_model and recorded.get("sha256") != base_model.get("sha256"):
        raise TrainError(
            f"the base model's weights changed since this run started ({recorded.get('name')}: "
            f"fingerprint {str(recorded.get('sha256'))[:12]}, now {base_model['sha256'][:12]}); "
            "resume against the original weights or start a new run",
            file=str(path),
        )


def _batching(cfg: TrainConfig) -> str:
    micro = f"{cfg.tokens_per_micro} tokens" if cfg.tokens_per_micro else f"{cfg.batch_size} rows"
    step = (
        f"{cfg.tokens_per_step} tokens per step"
        if cfg.tokens_per_step
        else f"x {cfg.grad_accum} accumulation"
    )
    return f"{micro} {step}"


def _gpu_total(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, unit="step", file=sys.stderr, disable=not enabled, dynamic_ncols=True
    )


def _write_generation_config(out: Path, cfg: TrainConfig, tok_meta: dict) -> None:
    """Decoding settings of the recipe, in transformers' generation_config.json form, for inference."""
    import json

    settings = dict(cfg.decoding)
    temperature = settings.get("temperature")
    settings.setdefault("do_sample", bool(temperature) and temperature > 0)
    if tok_meta.get("eos_id") is not None:
        settings.setdefault("eos_token_id", tok_meta["eos_id"])
    if tok_meta.get("pad_id") is not None:
        settings.setdefault("pad_token_id", tok_meta["pad_id"])
    with atomic_file(out / "generation_config.json") as fh:
        fh.write(json.dumps(settings, indent=2, sort_keys=True) + "\n")
