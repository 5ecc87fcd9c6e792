"""`.sql` files and directories -> canonical schema files: `normalize_ddl` over the file system.

`normalize_sql_path` is what `hive-data normalize` runs for a `.sql` input (a file or a directory of
them): it reads each file (UTF-8 or UTF-16, errors located), writes each result atomically and says
on its log which dialect was detected, the warnings, and the statements dropped.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from hive_core.atomic import atomic_file, check_separate
from hive_core.errors import ConfigError, DDLError
from hive_data.ddl import normalize_ddl

SQL_SUFFIXES = (".sql", ".ddl")


def is_sql_input(path: str) -> bool:
    """A `.sql` file, or a directory holding `.sql` files."""
    p = Path(path)
    if p.is_dir():
        return any(f.suffix.lower() in SQL_SUFFIXES for f in p.rglob("*") if f.is_file())
    return p.suffix.lower() in SQL_SUFFIXES


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DDLError("not UTF-8 or UTF-16 text", file=str(path), line=line, col=col) from None


def normalize_sql_path(
    input_path: str | Path,
    output: str | Path | None = "-",
    read: str = "auto",
    dialect: str = "postgres",
    log=None,
) -> dict[str, Counter]:
    """Normalize one `.sql` file (to `output`, a file or "-" for stdout) or a directory of them (to
    `output`, a directory mirroring it). Says on `log` which dialect `--read auto` chose for each file,
    warnings, and a summary of dropped statements by kind. Returns dropped counts per input file.

    Any file that cannot be normalized faithfully raises `DDLError` naming it, before anything is
    written for a single file; in directory mode, completed files are intact (each is written
    atomically) and the first failure stops the run. An `output` that is the input, lies inside the
    input directory or holds the input raises `ConfigError` before anything is written.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    src = Path(input_path)
    if not src.exists():
        raise DDLError("no such file or directory", file=str(src))
    if src.is_dir():
        if output in (None, "-"):
            raise ConfigError("a directory input needs -o DIRECTORY (the output mirrors the input tree)")
        files = sorted(f for f in src.rglob("*") if f.is_file() and f.suffix.lower() in SQL_SUFFIXES)
        if not files:
            raise DDLError("no .sql files in this directory", file=str(src))
        check_separate(output, [src], what="output directory")
        targets = [(f, Path(output) / f.relative_to(src)) for f in files]
    else:
        if output not in (None, "-"):
            check_separate(output, [src])
        targets = [(src, None if output in (None, "-") else Path(output))]

    per_file: dict[str, Counter] = {}
    total: Counter = Counter()
    applied = clauses = 0
    progress = _progress(len(targets))
    for path, dest in targets:
        res = normalize_ddl(_read_text(path), read=read, dialect=dialect, source=str(path))
        if read == "auto":
            log(f"{path}: read as {res.read} (detected)")
        for warning in res.warnings:
            log(f"warning: {path}: {warning}")
        if dest is None:
            sys.stdout.write(res.text)
            sys.stdout.flush()
        else:
            with atomic_file(dest, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(res.text)
        per_file[str(path)] = res.dropped
        total.update(res.dropped)
        applied += sum(res.applied.values())
        clauses += sum(res.clauses.values())
        progress.update(1)
    progress.close()
    log(_summary(total, len(targets), applied, clauses))
    return per_file


def _progress(n: int):
    from tqdm import tqdm

    return tqdm(total=n, unit="file", desc="normalize", file=sys.stderr, disable=n < 20, leave=False)


def _summary(dropped: Counter, files: int, applied: int = 0, clauses: int = 0) -> str:
    """One line: files, statements dropped by kind, then ALTER TABLE actions applied and CREATE TABLE
    clauses the fallback dropped (when there are any)."""
    if not dropped:
        line = f"normalized {files} file(s); no statement dropped"
    else:
        kinds = ", ".join(
            f"{kind} {n}" for kind, n in sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        line = (
            f"normalized {files} file(s); dropped {sum(dropped.values())} statement(s) that are not table "
            f"structure: {kinds}"
        )
    if applied or clauses:
        line += f"; {applied} ALTER action(s) applied, {clauses} clause(s) dropped"
    return line
