"""`hive_data.parallel`: batches in worker processes, results in input order, one failure policy.
(Ctrl-C and a killed parent are exercised on the real commands in test_reliability_crash.py.)"""

from __future__ import annotations

import os
import time

import pytest

from hive_core.errors import HiveError
from hive_data.parallel import WORKER_DIED, batched, ordered_map

_OFFSET: int | None = None  # set by `_init` in each process


def _init(offset: int) -> None:
    global _OFFSET
    _OFFSET = offset


def _shift(batch: list[int]) -> tuple[int, list[int]]:
    if batch[0] % 3 == 0:
        time.sleep(0.05)  # later batches finish first: the order must still be the input's
    return os.getpid(), [x + _OFFSET for x in batch]


def _die(batch: list[int]) -> list[int]:
    if 6 in batch:
        os._exit(3)  # as the OOM killer would end it
    return batch


def _same(batch: list[int]) -> list[int]:
    return batch


def test_batched_keeps_order_and_the_short_tail():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
    assert list(batched(iter("ab"), 5)) == [["a", "b"]]


def test_one_process_runs_the_initializer_here():
    out = list(
        ordered_map(_shift, batched(range(5), 2), 1, start_method="spawn", initializer=_init, initargs=(10,))
    )
    assert [rows for _, rows in out] == [[10, 11], [12, 13], [14]]
    assert {pid for pid, _ in out} == {os.getpid()}


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_workers_return_results_in_input_order(start_method):
    out = list(
        ordered_map(
            _shift,
            batched(range(40), 3),
            2,
            start_method=start_method,
            initializer=_init,
            initargs=(100,),
        )
    )
    assert [x for _, rows in out for x in rows] == list(range(100, 140))
    assert os.getpid() not in {pid for pid, _ in out}


def test_a_dead_worker_stops_the_run_with_one_error():
    with pytest.raises(HiveError) as err:
        list(ordered_map(_die, batched(range(20), 2), 2, start_method="fork"))
    assert str(err.value).endswith(WORKER_DIED)


def test_in_flight_work_is_bounded():
    pulled = []

    def batches():
        for i in range(50):
            pulled.append(i)
            yield [i]

    it = ordered_map(_same, batches(), 2, start_method="fork")
    assert next(it) == [0]
    assert len(pulled) <= 2 * 2  # two batches per worker, not the whole input
    assert [b[0] for b in it] == list(range(1, 50))
