"""Crash-safe writes: nothing appears under its final name until it is complete.

Files are written to a temporary sibling, flushed and fsynced, then renamed over the target
(`os.replace` is atomic on POSIX). Directories are built beside the target and swapped in.

Safety of what is not ours: every output directory hive creates (pack's shard directory,
hive-train's run directory) carries an ownership marker, `.hive-owned` (JSON with its `kind`).
`check_replaceable` allows deleting or replacing a directory only when it is missing or empty, or
carries hive's marker of the same kind (or is recognisably the work of an older hive, see `Layout`)
and holds nothing at its top level that hive does not write there. `check_separate` refuses an
output that is, holds or lies inside an input (resolved real paths, so also through symlinks).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hive_core.errors import ConfigError

MARKER = ".hive-owned"
# noun of each kind of hive output directory, for messages
KIND_NOUNS = {"shards": "shard directory", "run": "run directory"}


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
    `remove_stale(target)` puts back. The old `target` is deleted whatever it holds: a caller that
    replaces a directory a user names checks `check_replaceable` first.
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


# ---------------------------------------------------------------------------------------- ownership


def write_marker(directory: str | os.PathLike, kind: str) -> None:
    """Mark `directory` as an output directory hive created, of `kind` ("shards" or "run")."""
    from hive_core import __version__

    with atomic_file(Path(directory) / MARKER, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"kind": kind, "hive_version": __version__}) + "\n")


def read_marker(directory: str | os.PathLike) -> str | None:
    """The kind written in `directory`'s marker; None when it has none; "" when it cannot be read."""
    path = Path(directory) / MARKER
    if not path.is_file():
        return None
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return ""
    return kind if isinstance(kind, str) else ""


@dataclass(frozen=True)
class Layout:
    """What hive writes at the top level of one kind of output directory.

    `names` are the glob patterns of the entries hive writes there; the marker and the leftovers of
    hive's own atomic writes of those entries (`.NAME.*.tmp`, `.NAME.*.staging`, `.NAME.old-PID`) are
    hive's too. `legacy(path)` says whether a directory without a marker was written by an older hive
    (which wrote no marker); None: no such directory is recognised.
    """

    kind: str
    names: tuple[str, ...]
    legacy: Callable[[Path], bool] | None = None

    @property
    def noun(self) -> str:
        return KIND_NOUNS.get(self.kind, f"{self.kind} directory")

    def owns(self, name: str) -> bool:
        """Whether a top-level entry called `name` is one hive writes in this kind of directory."""
        patterns = (MARKER, *self.names)
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return True
        if name.startswith(".") and (name.endswith((".tmp", ".staging")) or ".old-" in name):
            return any(fnmatch.fnmatchcase(name, f".{p}.*") for p in patterns)
        return False


def check_replaceable(directory: str | os.PathLike, layout: Layout, action: str = "replace") -> None:
    """Raise `ConfigError` naming `directory` unless hive may delete what it holds.

    Allowed: a path that does not exist, an empty directory, or a directory carrying hive's marker
    of `layout.kind` (or, without a marker, one `layout.legacy` recognises) whose top-level entries
    are all ones hive writes there. Refused, with the reason: a file, a directory of another kind or
    of nobody's, and a hive directory holding an entry hive did not write (the first one is named),
    so that a user's file dropped into an output directory is never deleted. `action` ("replace",
    "delete") words the message.
    """
    path = Path(directory)
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise ConfigError(f"exists and is not a directory; refusing to {action} it", file=str(path))
    entries = sorted(os.listdir(path))
    if not entries:
        return
    kind = read_marker(path)
    if kind is None:
        if layout.legacy is None or not layout.legacy(path):
            raise ConfigError(
                f"not a hive {layout.noun} (no {MARKER} marker); refusing to {action} it", file=str(path)
            )
    elif kind == "":
        raise ConfigError(f"its {MARKER} marker cannot be read; refusing to {action} it", file=str(path))
    elif kind != layout.kind:
        other = f"a hive {KIND_NOUNS[kind]}" if kind in KIND_NOUNS else f"marked {kind!r} in {MARKER}"
        raise ConfigError(f"is {other}, not a {layout.noun}; refusing to {action} it", file=str(path))
    foreign = next((name for name in entries if not layout.owns(name)), None)
    if foreign is not None:
        raise ConfigError(
            f"holds {foreign!r}, which hive does not write in a {layout.noun}; refusing to {action} it "
            "(move that away or choose another output)",
            file=str(path),
        )


def clear_dir(directory: str | os.PathLike) -> None:
    """Delete everything inside `directory` (not the directory itself, which may be a symlink).
    Call `check_replaceable` first."""
    for child in Path(directory).iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def check_separate(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike],
    what: str = "output",
    input_noun: str = "input",
) -> None:
    """Raise `ConfigError` naming `output` when it is one of `inputs`, lies inside an input directory,
    or holds an input (real paths compared, so symlinks and hard links do not hide it). Inputs that
    are not local paths (hub ids) are skipped. Called before anything is written; `what` and
    `input_noun` word the message."""
    out = Path(os.path.realpath(output))
    for src in inputs:
        if not os.path.lexists(src):
            continue
        inp = Path(os.path.realpath(src))
        if _same(out, inp):
            raise ConfigError(f"{what} is the {input_noun} {src}; refusing to overwrite it", file=str(output))
        if inp.is_dir() and out.is_relative_to(inp):
            raise ConfigError(
                f"{what} is inside the {input_noun} {src}, which it would change; choose another output",
                file=str(output),
            )
        if inp.is_relative_to(out):
            raise ConfigError(
                f"the {input_noun} {src} is inside this {what}; writing it would overwrite or delete it",
                file=str(output),
            )
