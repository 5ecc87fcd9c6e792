"""Crash-safe writes: nothing appears under its final name until it is complete.

Files are written to a temporary sibling, flushed and fsynced, then renamed over the target
(`os.replace` is atomic on POSIX). Directories are built beside the target and swapped in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it to `path`, on any error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:  # mkstemp makes the file private (0600); the result gets the mode of an ordinary new file
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        with open(tmp, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def new_staging_dir(target: str | os.PathLike) -> Path:
    """A fresh empty directory beside `target`, for building its replacement."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".staging", dir=target.parent))


def commit_dir(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Swap a finished staging directory in as `target`.

    Between the two renames `target` briefly does not exist, so a crash leaves either the old
    complete directory, the new complete one, or the old one renamed aside, which the next
    `remove_stale(target)` puts back.
    """
    staging, target = Path(staging), Path(target)
    for child in staging.rglob("*"):
        if child.is_file():
            with open(child, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(staging)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(staging, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale(target: str | os.PathLike) -> None:
    """Delete leftovers of interrupted writes next to `target` (staging dirs, temp files). A previous
    complete directory that `commit_dir` had moved aside when it was interrupted, with no `target`
    in its place, is put back first."""
    target = Path(target)
    if not target.parent.exists():
        return
    if not target.exists():
        aside = sorted(
            (p for p in target.parent.glob(f".{target.name}.old-*") if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
        )
        if aside:
            os.replace(aside[-1], target)
            _fsync_dir(target.parent)
    for child in target.parent.glob(f".{target.name}.*"):
        if child.name.endswith((".staging", ".tmp")) or ".old-" in child.name:
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    child.unlink()
