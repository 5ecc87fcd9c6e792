"""One way to run the data commands' batches in worker processes: `ordered_map` and `batched`.

`hive-data normalize` and `hive-data pack` both map a function over batches of rows in `procs`
processes and consume the results in input order, so their output never depends on the number of
processes. Every worker follows the same policy:

- Ctrl-C: a terminal sends SIGINT to the whole process group. Workers ignore it; the parent alone
  gets the `KeyboardInterrupt`, cancels the work not yet started, lets the running batches finish
  and shuts the pool down, so the workers end with the command. SIGINT stays blocked while workers
  start (they inherit the mask), so a Ctrl-C cannot kill one mid-start-up with a traceback; the
  parent receives such a Ctrl-C as soon as it unblocks.
- the parent dies (SIGKILL, out of memory): a worker notices within half a second and exits instead
  of waiting for work forever.
- a worker dies: the run stops with a one-line `HiveError` (nothing has been written under a final
  name by then; the callers write through temporary files).
- bounded memory: at most two batches per worker are in flight.
- one worker per core already: libraries must not start thread pools of their own in a worker
  (`TOKENIZERS_PARALLELISM=false`).

With `procs <= 1` everything runs in the calling process (the initializer too), with no pool.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from hive_core.errors import HiveError

T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT_PER_WORKER = 2
WORKER_DIED = "a worker process died (out of memory, killed, or it could not start); nothing was written"


def batched(iterable: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of `n` consecutive items (the last one shorter), in order."""
    batch: list[T] = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch


def ordered_map(
    fn: Callable[[T], R],
    batches: Iterable[T],
    procs: int,
    *,
    start_method: str,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
) -> Iterator[R]:
    """`fn(batch)` for every batch, yielded in input order, computed in `procs` worker processes.

    `start_method` is "spawn" or "fork" ("fork" falls back to "spawn" where the platform has no
    fork). `initializer(*initargs)` runs once in every worker before its first batch, and in this
    process when `procs <= 1`; with "spawn", `fn`, `initializer` and `initargs` are pickled, so they
    must be module-level functions and picklable values. Raises `HiveError` when a worker dies;
    any exception `fn` raises reaches the caller as it is.
    """
    if procs <= 1:
        if initializer is not None:
            initializer(*initargs)
        for batch in batches:
            yield fn(batch)
        return
    yield from _pool_map(fn, batches, procs, start_method, initializer, initargs)


def _pool_map(fn, batches, procs: int, start_method: str, initializer, initargs: tuple) -> Iterator:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if start_method not in multiprocessing.get_all_start_methods():
        start_method = "spawn"
    ctx = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(
        procs, mp_context=ctx, initializer=_start_worker, initargs=(initializer, initargs)
    ) as pool:
        pending: deque = deque()
        try:
            if start_method == "fork":
                # fork every worker now, before the first batch is read: a copy of this process as the
                # caller set it up, not of one in the middle of reading (reader threads, open files)
                _submit(pool, _nothing, None).result()
            for batch in batches:
                pending.append(_submit(pool, fn, batch))
                while len(pending) >= IN_FLIGHT_PER_WORKER * procs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise HiveError(WORKER_DIED) from None
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _submit(pool, fn, batch):
    # Workers start inside submit() (spawn: on demand; fork: all at the first call). Until their
    # initializer ignores SIGINT a Ctrl-C would kill them mid-start-up, so SIGINT stays blocked here.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(fn, batch)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _nothing(_) -> None:
    return None


def _start_worker(initializer, initargs: tuple) -> None:
    """Every worker's first act: the Ctrl-C and parent-death policy, then the caller's initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent alone handles Ctrl-C
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one process per core already
    _exit_with_parent()
    if initializer is not None:
        initializer(*initargs)


def _exit_with_parent() -> None:
    """A worker whose parent was killed (SIGKILL, OOM) would wait for work forever: leave instead."""
    import multiprocessing

    spawner = multiprocessing.parent_process()
    parent = spawner.pid if spawner is not None else os.getppid()  # it may be gone already

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="hive-parent-watch", daemon=True).start()


# ------------------------------------------------------------------------------- spawn and __main__


def main_reruns_in_spawned_workers() -> bool:
    """True when the caller runs in the top-level code of a `__main__` script outside an
    `if __name__ == "__main__":` block: a spawned worker imports the script again (as `__mp_main__`)
    and would run the call itself, failing as it starts. False when unsure (no script file, source
    unreadable, called from a thread)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    name = getattr(getattr(main, "__spec__", None), "name", None)
    # as multiprocessing.spawn decides: a package's __main__ (`python -m pkg`) is not imported again
    if main is None or not path or (name is not None and name.split(".")[-1] == "__main__"):
        return False
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:
        return False
    import ast

    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    line = frame.f_lineno
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_test(node.test):
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                return False
    return True


def _is_main_test(test) -> bool:
    import ast

    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s.id for s in sides if isinstance(s, ast.Name)]
    consts = [s.value for s in sides if isinstance(s, ast.Constant)]
    return names == ["__name__"] and consts == ["__main__"]
