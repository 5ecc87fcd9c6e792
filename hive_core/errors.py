"""Errors that carry where they happened.

Every error a user can cause is a `HiveError` with as much location as is known (file, row, line,
column). `str(err)` is the one-line message the CLI prints; nothing else reaches the user.
"""

from __future__ import annotations


class HiveError(Exception):
    """Base class: `file:line:col: row N: reason`, leaving out the parts that are unknown."""

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        row: int | None = None,
        line: int | None = None,
        col: int | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.file = file
        self.row = row
        self.line = line
        self.col = col

    def location(self) -> str:
        parts = [str(self.file) if self.file else "<input>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        loc = ":".join(parts)
        if self.row is not None:
            loc += f": row {self.row}"
        return loc

    def __str__(self) -> str:
        return f"{self.location()}: {self.reason}"

    def with_location(self, **where) -> HiveError:
        """Fill in location fields that are still unknown (callers higher up know the file)."""
        for key, value in where.items():
            if getattr(self, key, None) is None:
                setattr(self, key, value)
        return self


class DDLError(HiveError):
    """A schema that cannot be normalized faithfully."""


class RecordError(HiveError):
    """A dataset row that cannot be read or lacks what its format needs."""


class SQLError(HiveError):
    """An SQL answer that does not parse, transpile or verify."""


class PackError(HiveError):
    """Packing cannot proceed (overlong rows under --overlong error, tokenizer problems...)."""


class ShardError(HiveError):
    """Shards that are missing, incomplete, corrupted or disagree with their manifest."""


class ConfigError(HiveError):
    """A recipe, manifest or flag combination that is invalid."""


class TrainError(HiveError):
    """A training run that cannot start or must stop (NaN loss, out of memory...)."""
