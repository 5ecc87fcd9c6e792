"""One optimizer step's forward and backward, behind one interface: eager, or replayed as a CUDA graph.

`make_step` picks the kind. Either way `step.run(micro_rows, loss_tokens)` leaves in every
trainable parameter's `.grad` the gradient of this process's share of the step (loss sums divided
by the whole step's `loss_tokens`) and returns that loss as a float64 tensor on the device;
`step.zero_grad(optimizer)` clears the gradients after the optimizer has applied them.
`step.prefetch(micro_rows)` may get the next step's batches ready on the host while the GPU still
runs this one (a graph replay); `run` uses them when it is given the same rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from hive_train import distributed
from hive_train.cuda_graphs import (
    GraphedStep,
    Prepared,
    graph_eligibility,
    micro_batches_per_step,
    static_shape,
)
from hive_train.data import MicroBatch, RowTable, flatten
from hive_train.loss import accumulate


class EagerStep:
    """Each micro-batch flattened, moved to the device and run forward and backward (`accumulate`)."""

    graphed = False

    def __init__(self, model, table: RowTable, backend: str, autocast, device: torch.device, pad: dict):
        self.model, self.table, self.backend, self.autocast = model, table, backend, autocast
        self.device, self.pad = device, pad

    def run(self, micro_rows: list[np.ndarray], loss_tokens: int) -> torch.Tensor:
        batches = [flatten(self.table, rows, **self.pad).to(self.device) for rows in micro_rows]
        return accumulate(self.model, batches, self.backend, self.autocast, loss_tokens)

    def prefetch(self, micro_rows: list[np.ndarray]) -> None:
        """Nothing: an eager step's host work is launching kernels, which cannot start early."""

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)


class CudaGraphStep:
    """A `GraphedStep` captured at the first step and replayed after. When the capture fails the
    run goes on with `fallback` (that step included), the graph's state reset."""

    def __init__(
        self, graphed: GraphedStep, table: RowTable, fallback: EagerStep, log: Callable[[str], None]
    ):
        self.graphed_step, self.table, self.fallback, self.log = graphed, table, fallback, log
        self.eager: EagerStep | None = None  # set once a capture failed
        self.ahead: tuple[list[np.ndarray], Prepared] | None = None  # `prefetch`ed: rows, batches

    @property
    def graphed(self) -> bool:
        return self.eager is None

    def run(self, micro_rows: list[np.ndarray], loss_tokens: int) -> torch.Tensor:
        if self.eager is None:
            loss = try_graphed(self.graphed_step, self.prepared(micro_rows), loss_tokens, self.log)
            if loss is not None:
                return loss
            self.eager = self.fallback
        return self.eager.run(micro_rows, loss_tokens)

    def prefetch(self, micro_rows: list[np.ndarray]) -> None:
        """Flatten and pad the next step's batches now: called while the GPU replays this step,
        it takes that host work off the time between replays."""
        if self.eager is not None:
            return
        try:
            self.ahead = (list(micro_rows), self._prepare(micro_rows))
        except ValueError:
            self.ahead = None  # a batch that does not fit: `run` raises it, at its own step

    def prepared(self, micro_rows: list[np.ndarray]) -> Prepared:
        """The batches of `micro_rows`: the prefetched ones when they were made from these very
        arrays (the schedule hands out the same array objects every time), else made now."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None and _same_arrays(ahead[0], micro_rows):
            return ahead[1]
        return self._prepare(micro_rows)

    def _prepare(self, micro_rows: list[np.ndarray]) -> Prepared:
        return self.graphed_step.prepare([flatten(self.table, rows) for rows in micro_rows])

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        if self.eager is not None:  # a graph's replay overwrites its gradients in place
            self.eager.zero_grad(optimizer)


def _same_arrays(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    # identity, not equality: cheap, and `a` is held, so no other array can have taken its id
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def try_graphed(
    graphed: GraphedStep, batches: list[MicroBatch] | Prepared, loss_tokens: int, log
) -> torch.Tensor | None:
    """The loss of a graph replay; None when capturing the graph failed (the graph is then reset:
    gradients and adapter state as before the attempt)."""
    if graphed.graph is not None:  # captured: replays do not fail this way
        return graphed.run(batches, loss_tokens)
    try:
        return graphed.run(batches, loss_tokens)
    except torch.OutOfMemoryError:
        raise  # the loop turns it into the --vram advice
    except RuntimeError as err:  # an operation that cannot be captured (a host sync, say)
        graphed.reset()
        first = err
        if "during capture" in str(err) and err.__context__ is not None:
            first = err.__context__  # what broke the capture, not the error that ended it
        log(f"CUDA graph capture failed, running without ({str(first).splitlines()[0][:200]})")
        return None


def make_step(cfg, parts, table: RowTable, schedule, device: torch.device, log: Callable[[str], None]):
    """The step a run takes (`parts`: `hive_train.setup.ModelParts`): replayed as a CUDA graph where
    that holds (`graph_eligibility`; `cfg.cuda_graphs` False turns it off, True says why when it
    cannot), eager otherwise."""
    model, backend = parts.model, parts.backend
    eager = EagerStep(model, table, backend, parts.autocast, device, parts.pad)
    if cfg.cuda_graphs is False:
        return eager
    why_not = graph_eligibility(
        device=device,
        fast=model.hive_fast,
        backend=backend,
        cfg=cfg,
        data_parallel=distributed.active(),
        schedule=schedule,
    )
    if why_not is not None:
        if cfg.cuda_graphs:
            log(f"CUDA graphs off: {why_not}")
        return eager
    every_micro = [m for plan in schedule.epochs for step in plan for m in step]
    shape = static_shape(table, every_micro)
    graphed = GraphedStep(model, backend, shape, parts.pad_id, device, micro=micro_batches_per_step(schedule))
    return CudaGraphStep(graphed, table, eager, log)
