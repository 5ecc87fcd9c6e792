"""The training run: `train` sets it up from shards + config (`hive_train.setup`), then one loop.

Order of operations per optimizer step: set the learning rate, forward + backward every
micro-batch of this process's share (`hive_train.steps`, `hive_train.loss`: the step's gradient is
that of the mean over all its loss tokens, however it is split), get the next step's batches
ready on the host while the GPU runs this one (`prefetch`: graph replays only), sum the adapter
gradients over ranks, clip, read the loss and gradient norm back (one host sync), check both are
finite, step, zero the gradients, log, then evaluate and save on their cadence. An evaluation is
the validation loss and, with an evaluation hook (`eval_data`: `hive_eval.during_training`), the
live adapter's answers scored (EX); the adapter of the best evaluation by `select_by` is kept in
`best/` (`hive_train.best`).

Under torchrun (`hive_train.distributed`) every rank runs this same loop; rank 0 alone writes the
run directory and shows progress.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hive_core.errors import TrainError
from hive_train import checkpoint, distributed
from hive_train.best import BestAdapter
from hive_train.config import TrainConfig, oom_message
from hive_train.data import shard_micro_batches
from hive_train.loss import evaluate
from hive_train.metrics import MetricsLog, gpu_total_gib, log_record, peak_flops, step_flops
from hive_train.optim import lr_at, set_lr
from hive_train.resume import restore, save_checkpoint
from hive_train.run_dir import finish
from hive_train.setup import setup_model, setup_run, start_ranks, vram_cap
from hive_train.steps import make_step


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
    best: dict | None = None  # best/best.json: the step, metric and value of the best evaluation
    memory_plan: dict | None = None  # the --vram plan (`memory_plan.Plan.to_dict`), None without one


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
    eval_hook=None,
    explicit: Collection[str] = (),
) -> TrainResult:
    """Train an adapter on packed shards into `out_dir` (docs/training.md has the layout).

    `stop_after` stops after that many optimizer steps in total (saving a checkpoint) without
    changing the schedule, as an interruption would. Raises `HiveError` subclasses for bad input.

    `eval_hook(model, tokenizer, step) -> dict | None` runs at every evaluation, on every rank,
    after the validation loss; the dict rank 0 gets (`ex`, `valid`, ..., `rows`, `seconds`) goes
    into that step's metrics record as `eval_<key>`. Left out, `cfg.eval_data` gets
    `hive_eval.during_training`'s hook (imported only then), which `train` also closes.

    `cfg.vram` (a tier, or auto on a GPU) plans the memory once the shards are open
    (`hive_train.setup.plan_memory`): rows per micro-batch and accumulation (rows per step kept),
    checkpointed layers and loss chunk, except the fields named in `explicit` (the CLI passes the
    flags given; on a resume, every field). `vram=None` plans nothing. A tier smaller than the GPU
    also caps this process's GPU memory at the tier's size for the run (`setup.vram_cap`).

    Under torchrun every process calls this: each takes its share of every step's micro-batches
    and rank 0 alone writes `out_dir` (docs/distributed.md). The process group is started here
    and destroyed on the way out, unless the caller started it.
    """
    started = time.perf_counter()
    with distributed.process_group(cfg.device) as device:
        progress = progress and distributed.rank() == 0  # one progress bar and copy of each note
        log = (lambda msg: print(msg, file=sys.stderr)) if progress else (lambda msg: None)
        for note in notes or []:
            log(f"note: {note}")
        owned = eval_hook is None and cfg.eval_data is not None
        if owned:
            with distributed.agreed():  # bad evaluation data stops every rank before anything is written
                eval_hook = _default_eval_hook(cfg, shards_dir, out_dir)
        try:
            with vram_cap(cfg.vram, device, log):
                run, data = setup_run(
                    cfg, shards_dir, Path(out_dir), device, started=started, log=log, resume=resume,
                    overwrite=overwrite, verify=verify, explicit=explicit,
                )  # fmt: skip
                return _loop(run, data, stop_after, progress, eval_hook)
        finally:
            if owned:
                eval_hook.close()


def _default_eval_hook(cfg: TrainConfig, shards_dir, out_dir):
    """`hive_eval.during_training`'s hook for `cfg.eval_data`; imported here, at run time, because
    data flows from the trainer to the evaluator and never back at import."""
    from hive_eval.during_training import make_eval_hook

    return make_eval_hook(cfg, shards_dir, out_dir)


def _loop(run, data, stop_after: int | None, progress: bool, eval_hook=None) -> TrainResult:
    """Optimizer steps from the resume point (or 0) to `stop_after` or the end; then the outputs."""
    cfg, schedule, rows = run.cfg, data.schedule, data.train_rows
    parts = setup_model(run, data)
    model, optimizer, params = parts.model, parts.optimizer, parts.params
    step_fn = make_step(cfg, parts, rows, schedule, run.device, run.log)
    start_step, tokens_seen = restore(run, parts, schedule.total_steps)
    start_ranks(run, start_step)
    resume_step = start_step if run.resume_from else None
    metrics = MetricsLog(run.out / "metrics.jsonl", resume_step=resume_step) if run.main else None
    total_steps, loss_per_row, peak = schedule.total_steps, rows.row_loss_tokens(), peak_flops(run.device)
    end_step = total_steps if stop_after is None else min(total_steps, stop_after)
    losses, val_loss, last_good, step = [], None, run.resume_from, start_step
    best = _best_keeper(run, data)
    bar = _progress(total_steps, start_step, progress)
    say = (lambda msg: bar.write(msg, file=sys.stderr)) if progress else (lambda msg: None)
    try:
        for step in range(start_step, end_step):
            t0 = time.perf_counter()
            lr = lr_at(step, total_steps, cfg)
            set_lr(optimizer, lr)
            step_rows = schedule.micro_batches(step)
            all_rows = np.concatenate(step_rows)
            loss_tokens = int(loss_per_row[all_rows].sum())  # the whole step's, over every rank
            local = step_fn.run(shard_micro_batches(step_rows, run.rank, run.world), loss_tokens)
            if step + 1 < end_step:  # before the sync below, while the GPU runs this step
                step_fn.prefetch(shard_micro_batches(schedule.micro_batches(step + 1), run.rank, run.world))
            loss, grad_norm = reduce_and_clip(params, local, cfg.max_grad_norm)
            check_finite(loss, grad_norm, step + 1, last_good, run)
            optimizer.step()
            step_fn.zero_grad(optimizer)

            done = step + 1
            step_tokens = int(rows.row_tokens[all_rows].sum())  # over all ranks
            tokens_seen += step_tokens
            losses.append(loss)
            record = log_record(
                step=done, epoch=schedule.epoch_progress(step), loss=loss, lr=lr, grad_norm=grad_norm,
                tokens=tokens_seen, step_tokens=step_tokens, loss_tokens=loss_tokens,
                step_time=time.perf_counter() - t0, device=run.device, started=run.started,
                flops=step_flops(data.info, step_tokens, loss_tokens, rows.doc_lengths_of(all_rows)),
                peak=peak * run.world if peak else None,  # MFU over all the ranks' GPUs
            )  # fmt: skip
            if step == start_step:
                _note_startup(run, record)
            evaluated = bool(cfg.eval_every and done % cfg.eval_every == 0) or done == total_steps
            if evaluated:
                record["val_loss"] = val_loss = evaluate(
                    model, data.val_rows, data.val_micro, run.device, parts.backend, parts.autocast, parts.pad
                )
                scores = _score(eval_hook, model, data.tokenizer, done, record)
                improved = best is not None and best.offer(done, record, model)
                if scores is not None:
                    say(eval_line(done, scores) + _best_note(best, scores, improved))
            if metrics and (done % cfg.log_every == 0 or evaluated or done == end_step):
                metrics.write(record)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:,.0f}", refresh=False)
            bar.update(1)
            if (cfg.save_every and done % cfg.save_every == 0) or done == end_step:
                last_good = checkpoint.checkpoint_dir(run.out, done)  # rank 0 writes it
                if run.main:
                    save_checkpoint(run, data, parts, done, tokens_seen, loss)
    except torch.OutOfMemoryError:
        raise TrainError(oom_message(step + 1, cfg.vram, gpu_total_gib(run.device))) from None
    finally:
        bar.close()
        if metrics:
            metrics.close()

    completed = end_step == total_steps
    if completed and run.main:
        finish(run, data, parts)
    distributed.barrier()  # every rank returns once rank 0's outputs exist
    return TrainResult(
        run_dir=run.out, steps=end_step, total_steps=total_steps, losses=losses, final_val_loss=val_loss,
        checkpoint=last_good, completed=completed, cuda_graphs=step_fn.graphed, model=model,
        best=best.record if best else None, memory_plan=run.plan.to_dict() if run.plan else None,
    )  # fmt: skip


def _best_keeper(run, data) -> BestAdapter | None:
    """What keeps best/ on rank 0 (None elsewhere, and when the metric can never be measured)."""
    cfg = run.cfg
    if not run.main:
        return None
    if cfg.selection == "val_loss" and data.val_rows is None:
        if cfg.select_by == "val_loss":
            run.log("note: the shards hold no val split, so no validation loss: best/ is not kept")
        return None
    scope = {}
    if cfg.selection == "ex":  # EX values compare only over the same rows
        scope = {"eval_data": str(Path(cfg.eval_data).resolve()), "eval_rows": cfg.eval_rows}
    return BestAdapter(run.out, cfg.selection, scope, resume=run.resume_from is not None)


def _score(eval_hook, model, tokenizer, step: int, record: dict) -> dict | None:
    """Run the evaluation hook (every rank: it gathers the ranks' answers); rank 0's scores go into
    `record` as `eval_<key>` and are returned. Its end is a barrier that also agrees on failure:
    the other ranks wait there while rank 0 scores."""
    if eval_hook is None:
        return None
    with distributed.agreed():
        scores = eval_hook(model, tokenizer, step)
    if scores:
        record.update({f"eval_{key}": value for key, value in scores.items()})
    return scores or None


def _best_note(best: BestAdapter | None, scores: dict, improved: bool) -> str:
    """What an evaluation's line adds about best/."""
    if improved:
        return "; best so far, saved to best/"
    if best is not None and best.selection == "ex" and scores.get("ex") is None:
        return "; no EX (no SQL rows?), so best/ is not kept: --select-by val_loss selects by val loss"
    return ""


def eval_line(step: int, scores: dict) -> str:
    """The one stderr line of an evaluation: `step 200: EX 41.0% (valid 88%, 200 rows, 12.3 s)`;
    data without SQL has no EX: its exact-match rate stands in."""
    if scores.get("ex") is not None:
        head = f"EX {scores['ex']:.1%}"
    elif scores.get("exact_text") is not None:
        head = f"EX n/a, exact match {scores['exact_text']:.1%}"
    else:
        head = "EX n/a"
    details = [f"valid {scores['valid']:.0%}"] if scores.get("valid") is not None else []
    details += [f"{scores.get('rows', '?')} rows", f"{scores.get('seconds', 0.0):.1f} s"]
    return f"step {step}: {head} ({', '.join(details)})"


def _note_startup(run, record: dict) -> None:
    """The start-up phases go into the first step's record and onto stderr."""
    run.mark("first_step")
    record["startup"] = dict(run.phases)
    run.log("start-up: " + ", ".join(f"{k} {v:.1f}s" for k, v in run.phases.items()))


def reduce_and_clip(
    params: list[torch.Tensor], local: torch.Tensor, max_norm: float | None
) -> tuple[float, float]:
    """The step's loss summed over ranks (`distributed.all_reduce_gradients`, which sums the
    gradients too) and the gradient norm, the gradients clipped to `max_norm` in place (a
    non-finite step is clipped too, then refused by `check_finite`, never applied). Both numbers
    come back in one read: each read waits for the GPU to finish all it was given, and the host
    has nothing to queue for it between the two."""
    loss = distributed.all_reduce_gradients(params, local)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm or float("inf"))
    both = torch.stack([loss.reshape(()).double(), norm.to(loss.device, torch.float64)])
    loss_value, norm_value = both.tolist()
    return loss_value, norm_value


def check_finite(loss: float, grad_norm: float, step: int, last_good: Path | None, run) -> None:
    """Stop before a non-finite loss or gradient norm is applied (at 1-based `step`), naming the
    last good checkpoint. The loss and norm are summed over ranks: every rank sees it, rank 0 says it."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    if not run.main:
        raise distributed.PeerFailed("rank 0 reports the non-finite step")
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
    kept = f"last good checkpoint: {last_good}" if last_good else "no checkpoint was saved before it"
    raise TrainError(
        f"{what} at step {step}; stopped without applying it ({kept}; resume with --resume and a lower --lr)",
        file=str(run.out),
    )


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, unit="step", file=sys.stderr, disable=not enabled, dynamic_ncols=True
    )
