"""Setting a run up, one component per job: the shards and their fit with model and tokenizer,
and the `--vram` memory plan (`setup_data`), the run directory (`setup_run`), the model, optimizer
and speed switches (`setup_model`), the GPU memory cap of a `--vram` tier (`vram_cap`). Every rank
runs the same setup; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hive_core.errors import ConfigError, TrainError
from hive_data.shards import Shards, ShardTokenizer, open_shards
from hive_train import attention, checkpoint, distributed
from hive_train.config import TIERS, TrainConfig, apply_vram_plan, largest_tier, oom_message, tier_bytes
from hive_train.data import RowTable, build_schedule, eval_batches, micro_capacity
from hive_train.memory_plan import GB, Plan, usable_bytes
from hive_train.metrics import gpu_total_gib
from hive_train.model import (
    ModelInfo,
    check_fit,
    compute_dtype,
    has_tokenizer_files,
    load_model,
    load_tokenizer,
    model_fingerprint,
    read_model_info,
    tokenizer_sha256,
)
from hive_train.optim import make_optimizer
from hive_train.resume import check_base_model, find_resume
from hive_train.run_dir import prepare_run_dir, write_generation_config, write_run_config, write_tokenizer


@dataclass
class Run:
    """Where a run stands: its settings, directory, device and process, and its start-up clock."""

    cfg: TrainConfig  # `seq` taken from the shards by `setup_run`
    out: Path
    device: torch.device
    started: float  # time.perf_counter() when `train` was called
    log: Callable[[str], None]  # a note on stderr (rank 0, unless --quiet)
    resolved: dict = field(default_factory=dict)  # cfg.to_dict(): what config.yaml and checkpoints record
    base_model: dict | None = None  # the base weights' fingerprint (rank 0 records and checks it)
    resume_from: Path | None = None  # the checkpoint this run continues
    phases: dict[str, float] = field(default_factory=dict)  # seconds since `started` per milestone
    explicit: frozenset[str] = frozenset()  # fields the user set: the --vram plan leaves them alone
    plan: Plan | None = None  # the --vram memory plan `setup_data` applied (None: no plan)
    rank: int = field(default_factory=distributed.rank)
    world: int = field(default_factory=distributed.world)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mark(self, name: str) -> None:
        """Record a start-up milestone (written with the first step's metrics)."""
        self.phases[name] = round(time.perf_counter() - self.started, 3)


@dataclass
class Data:
    """The opened shards, the row tables, the step schedule and the tokenizer they were packed with."""

    shards: Shards
    info: ModelInfo  # the model's config (no weights)
    train_rows: RowTable
    val_rows: RowTable | None
    val_micro: list[np.ndarray]  # validation micro-batches (row indices)
    schedule: object  # hive_train.data.Schedule
    tokenizer: object
    tokenizer_source: str

    @property
    def packed_with(self) -> ShardTokenizer:
        """The tokenizer the manifest says the shards were packed with."""
        return self.shards.meta.tokenizer

    @property
    def shards_info(self) -> dict:
        """The shards as config.yaml and the report describe them."""
        train_rows, val_rows = self.train_rows, self.val_rows
        return {
            "path": str(self.shards.root.resolve()),
            "manifest_sha256": self.shards.manifest_sha256,
            "seq": self.shards.meta.seq,
            "train_rows": train_rows.rows,
            "train_tokens": int(len(train_rows.ids)),
            "val_rows": val_rows.rows if val_rows else 0,
            "val_tokens": int(len(val_rows.ids)) if val_rows else 0,
        }


@dataclass
class ModelParts:
    """The model being trained and what runs it."""

    model: object  # the peft model (`model.hive_fast`: the fast adapter path, or None)
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]  # the trainable ones
    dtype: torch.dtype
    backend: str  # attention backend
    autocast: Callable  # a context manager factory
    pad: dict  # `flatten` padding for compiled kernels (empty: none)
    pad_id: int


def setup_run(
    cfg: TrainConfig,
    shards_dir: str | Path,
    out: Path,
    device: torch.device,
    *,
    started: float,
    log: Callable[[str], None],
    resume: bool,
    overwrite: bool,
    verify: str,
    explicit: Collection[str] = (),
) -> tuple[Run, Data]:
    """Open and check the shards and plan the memory, then (rank 0) prepare the run directory and
    write config.yaml (the resolved configuration, plan included), the tokenizer and
    generation_config.json first, so a failed run still says what it was. Bad input is reported
    once, by rank 0 (`distributed.agreed`). `explicit`: fields the `--vram` plan leaves alone."""
    run = Run(cfg=cfg, out=out, device=device, started=started, log=log, explicit=frozenset(explicit))
    with distributed.agreed():
        data = setup_data(run, shards_dir, verify=verify if run.main else "size")
        run.resolved = run.cfg.to_dict()
        if run.main:
            run.base_model = model_fingerprint(run.cfg.model)
            prepare_run_dir(out, resume, overwrite, shards_dir)
            checkpoint.clean_staging(out)
            find_resume(  # before anything is rewritten
                out,
                resume,
                run.resolved,
                data.shards.manifest_sha256,
                data.schedule.total_steps,
                run.base_model,
            )
    run.resume_from = checkpoint.latest_checkpoint(out) if resume else None
    if run.main:
        write_run_config(out, run.resolved, data.shards_info, run.world, run.base_model)
        write_tokenizer(out, data.tokenizer)
        write_generation_config(out, run.cfg, data.packed_with.eos_id, data.packed_with.pad_id)
    run.mark("run_dir_written")
    return run, data


def setup_data(run: Run, shards_dir: str | Path, verify: str) -> Data:
    """Open the shards (hashing them with `verify="sha256"`), take `seq` from them into `run.cfg`,
    check shards, tokenizer and model fit together (warnings logged), plan the memory (`--vram`:
    `plan_memory`) and the steps."""
    cfg = run.cfg
    # first: under torchrun every rank reads its free memory here, before a check can stop one rank
    budget = vram_budget(cfg.vram, run.device)
    # the model's config only (no weights): every token id is checked against its embeddings too
    info = read_model_info(cfg.model, trust_remote_code=cfg.trust_remote_code)
    shards = open_shards(shards_dir, verify=verify, model_vocab=info.vocab_size)
    run.mark("shards_opened")
    manifest_path = str(Path(shards_dir) / "manifest.json")
    manifest = shards.meta
    if cfg.seq is not None and cfg.seq != manifest.seq:
        raise ConfigError(
            f"seq {cfg.seq} disagrees with the shards, which were packed with seq {manifest.seq} "
            "(the trainer takes max_seq_length from the manifest; drop --seq or re-pack)",
            file=manifest_path,
        )
    cfg = run.cfg = dataclasses.replace(cfg, seq=manifest.seq)
    if shards.split("train") is None:
        raise TrainError("the shards hold no train rows", file=manifest_path)
    train_rows = RowTable.from_arrow(shards.split("train"))
    val_rows = RowTable.from_arrow(shards.split("val")) if shards.split("val") is not None else None
    max_id = max(int(t.ids.max()) for t in (train_rows, val_rows) if t is not None and len(t.ids))
    tokenizer_source, tokenizer = find_tokenizer(cfg, manifest.tokenizer)
    for note in check_fit(
        info,
        manifest,
        seq=manifest.seq,
        manifest_path=manifest_path,
        max_token_id=max_id,
        tokenizer=tokenizer,
        tokenizer_source=tokenizer_source,
        tokenizer_sha256=tokenizer_sha256(tokenizer),
    ):
        run.log(f"warning: {note}")
    run.mark("tokenizer_checked")
    if budget is not None:
        tables = [t for t in (train_rows, val_rows) if t is not None and t.rows]
        most_loss = max((int(t.row_loss_tokens().max()) for t in tables), default=0)
        cfg = plan_memory(run, info, budget, most_loss)
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
    val_micro = (
        eval_batches(val_rows, batch_size=cfg.batch_size, tokens_per_micro=cfg.tokens_per_micro)
        if val_rows
        else []
    )
    return Data(shards, info, train_rows, val_rows, val_micro, schedule, tokenizer, tokenizer_source)


@dataclass(frozen=True)
class VramBudget:
    """The GPU memory a run plans for."""

    tier: str  # the tier whose rules apply (`config.TIER_RULES`)
    memory_bytes: int  # the tier's size, or (auto) the GPU's free memory
    label: str  # how notes name it: "12", "auto (139.2 GB free)"


def vram_budget(vram: str | None, device: torch.device) -> VramBudget | None:
    """What `--vram` plans for: a tier's size; auto: the free memory of this process's GPU (the
    least over the ranks of a data-parallel run, which must all plan the same batching), nothing
    off CUDA; None: nothing."""
    if vram is None:
        return None
    if vram != "auto":
        return VramBudget(vram, tier_bytes(vram), vram)
    if device.type != "cuda":
        return None
    free = min(distributed.all_gather(int(torch.cuda.mem_get_info(_index(device))[0])))
    return VramBudget(largest_tier(free), free, f"auto ({free / GB:.1f} GB free)")


def expandable_segments(device: torch.device) -> bool:
    """Turn on the CUDA caching allocator's expandable segments (each pool one range of pages that
    grows, instead of fixed segments whose unused ends strand memory), unless the user's
    PYTORCH_CUDA_ALLOC_CONF / PYTORCH_ALLOC_CONF already says otherwise. Whether they are on after
    this: the `--vram` plan leaves more room for fragmentation without them
    (`memory_plan.usable_bytes`). Nothing off CUDA."""
    if device.type != "cuda":
        return False
    conf = ",".join(os.environ.get(name, "") for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"))
    conf = conf.replace(" ", "").lower()
    if "cudamallocasync" in conf:  # another allocator altogether
        return False
    if "expandable_segments:" in conf:
        return "expandable_segments:true" in conf
    try:
        with warnings.catch_warnings():  # newer torch warns that this private entry point moves
            warnings.simplefilter("ignore")
            torch.cuda.memory._set_allocator_settings("expandable_segments:True")
    except (AttributeError, RuntimeError):  # an allocator without the setting
        return False
    return True


def plan_memory(run: Run, info: ModelInfo, budget: VramBudget, loss_tokens_per_row: int) -> TrainConfig:
    """Apply the `--vram` plan to `run.cfg` (`config.apply_vram_plan`, the fields in `run.explicit`
    left alone), keep it in `run.plan` and say it in one line; returns the new config."""
    cfg, plan, notes = apply_vram_plan(
        run.cfg,
        info,
        tier=budget.tier,
        budget_bytes=usable_bytes(budget.memory_bytes, expandable_segments(run.device)),
        explicit=run.explicit,
        loss_tokens_per_row=loss_tokens_per_row,
    )
    run.cfg, run.plan = cfg, plan
    changes = [n for n in notes if not n.startswith("warning:")]
    run.log(f"note: --vram {budget.label}: " + "; ".join([plan.describe(), *changes]))
    for warning in (n for n in notes if n.startswith("warning:")):
        run.log(f"warning: --vram {budget.label}: {warning.removeprefix('warning: ')}")
    return cfg


# a capped run's allocator returns cached blocks it does not need above this fraction of the cap
CACHE_TRIM_FRACTION = 0.85


@contextlib.contextmanager
def vram_cap(vram: str | None, device: torch.device, log: Callable[[str], None]) -> Iterator[None]:
    """Hold this process to a `--vram` tier's size on a bigger GPU, as on a card of that size:
    PyTorch's allocator then never takes more than the plan was made for (an out-of-memory error
    instead of borrowing memory the card the run is sized for would not have). Lifted on the way
    out (the fraction goes back to 1.0). Nothing for auto, off CUDA, or on a card no bigger."""
    if device.type != "cuda" or vram not in TIERS:
        yield
        return
    index = _index(device)
    total = torch.cuda.get_device_properties(index).total_memory
    limit = tier_bytes(vram)
    if limit >= total:
        yield
        return
    torch.cuda.set_per_process_memory_fraction(limit / total, index)
    # Without this the allocator keeps freed blocks cached until it reaches the cap, so a run's
    # reserved memory creeps up to the whole tier; with it, cached blocks it does not need are
    # handed back once more than this fraction of the cap is reserved. It is relative to the cap,
    # so once the cap is lifted it stays harmless (and cannot be unset: 0 is not accepted).
    try:
        with warnings.catch_warnings():  # newer torch warns that this private entry point moves
            warnings.simplefilter("ignore")
            torch.cuda.memory._set_allocator_settings(f"garbage_collection_threshold:{CACHE_TRIM_FRACTION}")
    except (AttributeError, RuntimeError):  # an allocator without the setting: the cap alone
        pass
    log(f"note: --vram {vram}: GPU memory capped at {limit / GB:.0f} GB of {total / GB:.0f} GB")
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, index)


def _index(device: torch.device) -> int:
    """The CUDA device index of `device` ("cuda" alone: the current device)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def find_tokenizer(cfg: TrainConfig, packed_with: ShardTokenizer):
    """`--tokenizer` (on a resume: the source the run recorded); else the one the shards name when
    it is a local directory; else the model's own directory; else the named one as a hub id.
    Whichever it is, its vocabulary, special ids and content are then checked against the
    manifest. (The manifest may name a path relative to where `pack` ran, which does not resolve
    from here.)"""
    if cfg.tokenizer:
        return cfg.tokenizer, load_tokenizer(cfg.tokenizer, trust_remote_code=cfg.trust_remote_code)
    named = packed_with.name_or_path
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


def setup_model(run: Run, data: Data) -> ModelParts:
    """Load the model with its adapter and make the optimizer; every speed switch is set here."""
    cfg, device = run.cfg, run.device
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
        raise TrainError(oom_message(0, cfg.vram, gpu_total_gib(device))) from None
    model.train()
    run.mark("model_loaded")
    if run.main and run.base_model is None:  # a hub id downloaded just now: fingerprint its snapshot
        _record_downloaded_base(run, data)
    optimizer, params = make_optimizer(model, cfg, device)
    # Autocast only matters for layers outside the fast path: when it covers every adapter, the
    # frozen base is already in the compute dtype and autocast's per-op dispatch is pure overhead.
    fast_everywhere = model.hive_fast is not None and model.hive_fast.covers_all
    autocast = contextlib.nullcontext if fast_everywhere else _autocast(device, dtype)
    pad_id = int(data.packed_with.pad_id or 0)
    return ModelParts(
        model, optimizer, params, dtype, backend, autocast, _padding(run, data, backend, pad_id), pad_id
    )


def _record_downloaded_base(run: Run, data: Data) -> None:
    run.base_model = model_fingerprint(run.cfg.model)
    if run.resume_from is not None:  # (re)downloaded for a resume: it must still be the same weights
        check_base_model(checkpoint.read_state(run.resume_from), run.base_model, run.resume_from)
    write_run_config(run.out, run.resolved, data.shards_info, run.world, run.base_model)


def _padding(run: Run, data: Data, backend: str, pad_id: int) -> dict:
    """Compiled kernels (FlexAttention on CUDA, --compile) see one padded shape instead of
    recompiling for every micro-batch length."""
    if not (run.device.type == "cuda" and (backend == "flex" or run.cfg.compile)):
        return {}
    every_micro = [m for plan in data.schedule.epochs for step in plan for m in step]
    capacity = micro_capacity(data.train_rows, every_micro)
    if data.val_rows is not None and data.val_micro:
        capacity = max(capacity, micro_capacity(data.val_rows, data.val_micro))
    return {"pad_to": capacity, "pad_id": pad_id}


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def start_ranks(run: Run, start_step: int) -> None:
    """Ranks other than 0 draw their own dropout masks (rank 0 keeps the single-process stream;
    with dropout 0, the default, nothing draws from it); rank 0 notes the process count."""
    if run.rank:
        torch.manual_seed(run.cfg.seed + 1_000_003 * run.rank + start_step)
    if run.world > 1:
        run.log(f"data parallel: {run.world} processes ({torch.distributed.get_backend()})")
