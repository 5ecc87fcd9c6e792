"""Data parallelism under torchrun: the process group, who is rank 0, one all-reduce per step,
and the `--gpus N` launcher.

Started by `torchrun --nproc-per-node N -m hive_train ...` (or `hive-train --gpus N`), every
process trains the same model on its own share of each optimizer step's micro-batches
(`hive_train.data.shard_micro_batches`). Only adapter gradients travel: the NF4 base is frozen and
identical everywhere, so there is no DDP wrapper, just one flat all-reduce after backward.

Outside torchrun (no `WORLD_SIZE`/`RANK` in the environment) nothing here starts a process group:
rank 0 of a world of 1, and every collective is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

from hive_core.errors import ConfigError, HiveError, TrainError

# NVLink multicast (NCCL's NVLS, PyTorch's symmetric-memory multicast, NVSHMEM's NVLS) stays off:
# on the shared GPU hosts a program using it can take the host's GPUs out of service.
LAUNCH_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def launched() -> bool:
    """True in a process started by torchrun (or anything setting its environment variables)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active():
        dist.barrier()


class PeerFailed(TrainError):
    """Another rank failed and reports why; this rank stops without a message of its own."""


@contextlib.contextmanager
def agreed() -> Iterator[None]:
    """Run a block on every rank, then `settle`: a `HiveError` or `OSError` raised in it stops
    every rank, and the block's end is a barrier."""
    try:
        yield
    except (HiveError, OSError) as err:
        settle(err)
        raise
    settle(None)


def settle(error: Exception | None) -> None:
    """A barrier that also agrees on failure: every rank raises when any rank failed.

    The failing ranks raise their own error, except that when rank 0 failed the others stay
    quiet (`PeerFailed`): the checks before training are the same on every rank, so rank 0's
    one-line message is the one to show, once.
    """
    if not active():
        if error is not None:
            raise error
        return
    failed = [0] * world()
    dist.all_gather_object(failed, error is not None)
    if failed[0] and rank() != 0:
        raise PeerFailed("rank 0 failed")
    if error is not None:
        raise error
    if any(failed):
        raise PeerFailed(f"rank {failed.index(True)} failed")


def pick_device(name: str) -> torch.device:
    """The device of this process for `--device NAME` (auto, cpu, cuda, cuda:N).

    Under torchrun every process takes `cuda:LOCAL_RANK` for `auto` and `cuda`; an explicit
    `cuda:N` is refused when there is more than one process (they would share one GPU).
    """
    if launched():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        many = int(os.environ["WORLD_SIZE"]) > 1
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda" or (name.startswith("cuda:") and not many):
            if not torch.cuda.is_available():
                raise ConfigError(f"--device {name}: no CUDA device is available")
            if local >= torch.cuda.device_count():
                raise ConfigError(
                    f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices: "
                    "start at most that many processes per node"
                )
            return torch.device("cuda", local if name == "cuda" else int(name.split(":")[1]))
        if name.startswith("cuda:"):
            raise ConfigError(
                f"--device {name} with {os.environ['WORLD_SIZE']} processes: each process takes "
                "cuda:LOCAL_RANK; pass --device cuda (or auto)"
            )
        return torch.device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available")
    return device


@contextlib.contextmanager
def process_group(device_name: str) -> Iterator[torch.device]:
    """Yield this process's device; under torchrun, inside a process group (NCCL on CUDA, gloo on
    CPU) that is destroyed on the way out, errors included. A group the caller already started is
    used and left alone."""
    device = pick_device(device_name)
    if not launched() or active():
        yield device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def all_reduce_gradients(params: list[torch.Tensor], loss: torch.Tensor) -> torch.Tensor:
    """Sum the gradients of `params` and `loss` over all ranks in one flat collective.

    Gradients are replaced by views into the summed buffer; a parameter without a gradient on
    this rank (a rank with no micro-batch this step) contributes zeros. Adapter parameters are
    float32 master weights, so the buffer is float32. Returns the summed loss. In a single
    process nothing moves and `loss` is returned as is.
    """
    if not active():
        return loss
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        + [loss.reshape(1).to(params[0].device, torch.float32)]
    )
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
    return flat[-1].double()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few numbers over all ranks (float64, on the collective's device)."""
    if not active():
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather(obj) -> list:
    """Every rank's `obj` (picklable, small: pickled through the collective), in rank order, on
    every rank; `[obj]` in a single process."""
    if not active():
        return [obj]
    gathered = [None] * world()
    dist.all_gather_object(gathered, obj)
    return gathered


def strip_gpus(argv: list[str]) -> list[str]:
    """`argv` without its `--gpus N` / `--gpus=N` option (what the launched processes get)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--gpus":
            skip = True
        elif not arg.startswith("--gpus="):
            out.append(arg)
    return out


def launch(processes: int, argv: list[str]) -> int:
    """Run what `torchrun --standalone --nproc-per-node N -m hive_train ARGV` runs, from this
    process, and return the exit status (0; 1 when a rank failed; 130 when interrupted).

    `--standalone` gives the group a free local port, so several runs can share a host. NVLink
    multicast is switched off in the launched environment (LAUNCH_ENV). Without CUDA (or with
    `--device cpu`) the processes train on CPU with gloo, which is how the tests run it. The
    ranks print their own one-line errors; torchrun's failure report (a traceback) is left out.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if launched():
        raise ConfigError("--gpus starts torchrun itself; leave it out when launching with torchrun")
    if torch.cuda.is_available() and "cpu" not in _device_args(argv):
        available = torch.cuda.device_count()
        if processes > available:
            raise ConfigError(f"--gpus {processes}: only {available} CUDA devices are visible")
    os.environ.update(LAUNCH_ENV)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    # torchrun's agent logs each failure and signal as a warning; the ranks already said why
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    args = parse_args(
        ["--standalone", "--nproc-per-node", str(processes), "-m", "hive_train", *strip_gpus(argv)]
    )
    try:
        run(args)
    except ChildFailedError:
        return 1
    except SignalException:  # Ctrl-C or SIGTERM: the agent stopped the ranks, which said so
        return 130
    return 0


def _device_args(argv: list[str]) -> list[str]:
    values = [b for a, b in zip(argv, argv[1:]) if a == "--device"]
    return values + [a.split("=", 1)[1] for a in argv if a.startswith("--device=")]
