"""Resuming a run: which checkpoint, whether this run may continue it, restoring it, and what a
checkpoint records so that a resume reproduces the uninterrupted run bit for bit."""

from __future__ import annotations

from pathlib import Path

from hive_core.errors import TrainError
from hive_train import checkpoint
from hive_train.config import TrainConfig
from hive_train.optim import scheduler_state

# Config fields that may change between a run and its resumption (they do not change the math).
RESUMABLE_CHANGES = {
    "eval_every",
    "save_every",
    "log_every",
    "keep_checkpoints",
    "eval_data",  # evaluation during training reads the adapter, never changes it
    "eval_rows",
    "eval_max_new_tokens",
    "select_by",
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


def find_resume(
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
    check_resume(checkpoint.read_state(path), resolved, manifest_sha256, path, total_steps, base_model)
    return path


def check_resume(
    state: dict,
    resolved: dict,
    manifest_sha256: str,
    path: Path,
    total_steps: int | None = None,
    base_model: dict | None = None,
) -> None:
    """Raise `TrainError` when the checkpoint's `state` cannot be continued by this run."""
    if state.get("manifest_sha256") != manifest_sha256:
        raise TrainError(
            "the shards differ from those this run was trained on (manifest sha256)", file=str(path)
        )
    check_base_model(state, base_model, path)
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


def check_base_model(state: dict, base_model: dict | None, path: Path) -> None:
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


def restore(run, parts, total_steps: int) -> tuple[int, int]:
    """Load `run.resume_from` (when resuming) into the model and optimizer; return (steps done,
    tokens seen), (0, 0) for a new run; `total_steps` is for the note. `run` and `parts` are what `hive_train.setup` made."""
    if run.resume_from is None:
        return 0, 0
    state = checkpoint.load_checkpoint(run.resume_from, parts.model, parts.optimizer)
    if parts.model.hive_fast is not None:
        parts.model.hive_fast.mark_stale()
    run.log(f"resuming from {run.resume_from} (step {state['step']} of {total_steps})")
    return state["step"], state["tokens"]


def save_checkpoint(run, data, parts, done: int, tokens: int, loss: float) -> None:
    """Checkpoint `done` steps (rank 0): adapter, optimizer, RNG and where the data stands."""
    cfg, total_steps = run.cfg, data.schedule.total_steps
    state = {
        "tokens": tokens,
        "cursor": cursor(data.schedule, done),
        "config": run.resolved,
        "manifest_sha256": data.shards.manifest_sha256,
        "scheduler": scheduler_state(cfg, total_steps, done),
        "loss": loss,
        "world_size": run.world,  # for the record: a resume may use another
        "base_model": run.base_model,  # a resume refuses changed base weights
        "tokenizer_source": source_path(data.tokenizer_source),  # a resume reads it
    }
    checkpoint.save_checkpoint(run.out, done, parts.model, parts.optimizer, state, keep=cfg.keep_checkpoints)


def cursor(schedule, done: int) -> dict:
    """Where the data stands after `done` steps: the next step's epoch and index in that epoch."""
    if done >= schedule.total_steps:
        return {"epoch": len(schedule.epochs), "step_in_epoch": 0, "steps_done": done}
    epoch, index = schedule.locate(done)
    return {"epoch": epoch, "step_in_epoch": index, "steps_done": done}


def source_path(source: str) -> str:
    """A local directory as an absolute path (a resume may start elsewhere); a hub id as it is."""
    return str(Path(source).resolve()) if Path(source).is_dir() else source
