"""Helpers for tests that pause, interrupt and kill real command processes (started in their own
process group, as a terminal would run them)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group, as the OOM killer or a lost machine does, and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=60)


def wait_paused(proc: subprocess.Popen, mark: Path, what: str = "command", timeout: float = 120) -> None:
    """Wait until the process has written `mark` (it reached its pause point); fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not mark.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(
                f"{what} ended (rc {proc.returncode}) before reaching its pause point:\n{err[-3000:]}"
            )
        if time.monotonic() > deadline:
            kill_group(proc)
            pytest.fail(f"{what}: pause point not reached in time")
        time.sleep(0.01)
