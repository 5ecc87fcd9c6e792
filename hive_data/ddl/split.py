"""Split a SQL script into statements, with the line and column where each one starts.

sqlglot parses one statement at a time here, so one unsupported statement cannot take the rest
down. The splitter knows the script-level conventions that are not SQL: a byte-order mark, CRLF line
ends, T-SQL `GO` batch lines, SQL*Plus `/` lines, MySQL `DELIMITER` blocks and `/*! ... */`
conditional comments, psql backslash meta-commands, and procedural bodies (`BEGIN ... END;`,
`$$ ... $$`) whose semicolons do not end the statement.

Positions are kept exact: markers that are removed (`/*!40101`, its `*/`) become spaces of the same
length, so an offset into a statement maps back to the original file line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Statement:
    """One statement: its text (terminator excluded) and where it starts in the file (1-based)."""

    text: str
    line: int
    col: int
    meta: bool = False  # a client directive (psql `\\connect`, MySQL `source f;`), not SQL
    schema: str | None = None  # set for tables created inside a `CREATE SCHEMA x ...` body

    def locate(self, line: int, col: int) -> tuple[int, int]:
        """Map a 1-based (line, col) inside `text` to the file."""
        if line <= 1:
            return self.line, self.col + col - 1
        return self.line + line - 1, col


_GO = re.compile(r"[ \t]*GO(?:[ \t]+\d+)?[ \t]*(?:--[^\n]*)?(?=\n|$)", re.I)
_SLASH = re.compile(r"[ \t]*/[ \t]*(?=\n|$)")
_DELIMITER = re.compile(r"[ \t]*DELIMITER[ \t]+(\S+)[ \t]*(?=\n|$)", re.I)
_META = re.compile(r"[ \t]*\\[^\n]*")
_SOURCE = re.compile(r"[ \t]*(?:source|\\\.)[ \t]+[^\n;]*;?[ \t]*(?=\n|$)", re.I)
_BODY_HEAD = re.compile(
    r"\s*(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:DEFINER\s*=\s*\S+\s+)?(?:EDITIONABLE\s+)?"
    r"(?:TRIGGER|PROCEDURE|FUNCTION|PACKAGE|TYPE\s+BODY)\b|BEGIN\b|DECLARE\b)",
    re.I,
)
# T-SQL needs no separators: a statement keyword at the start of a line, outside parentheses and
# procedural bodies, starts the next statement.
_TSQL_NEXT = re.compile(
    r"[ \t]*(?:CREATE|ALTER|DROP|INSERT|EXEC|EXECUTE|USE|SET|PRINT|GRANT|DECLARE)\b", re.I
)
_END_FOLLOW = re.compile(r"\s+(IF|LOOP|WHILE|REPEAT|FOR)\b", re.I)


@lru_cache(maxsize=32)
def _scanner(delimiter: str, backslash: bool, brackets: bool, hash_comments: bool) -> re.Pattern:
    single = r"'(?:[^'\\]|\\.|'')*'" if backslash else r"'(?:[^']|'')*'"
    parts = [
        r"(?P<nl>\n)",
        r"(?P<ws>[ \t\f\v]+)",
        r"(?P<str>"
        + single
        + r"|\"(?:[^\"]|\"\")*\"|`(?:[^`]|``)*`"
        + (r"|\[[^\]\n]*\]" if brackets else "")
        + ")",
        r"(?P<cond>/\*!\d*)",
        r"(?P<cmt>--[^\n]*|/\*.*?\*/" + (r"|\#[^\n]*" if hash_comments else "") + ")",
        r"(?P<dollar>\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$)",
        r"(?P<delim>" + re.escape(delimiter) + ")",
        r"(?P<condend>\*/)",
        r"(?P<word>[A-Za-z_][A-Za-z_0-9$]*)",
        r"(?P<other>[^\s'\"`\[\-/#$;*A-Za-z_]+|.)",
    ]
    return re.compile("|".join(parts), re.S)


def clean_text(text: str) -> str:
    """Drop a byte-order mark and turn CRLF / CR line ends into LF (line numbers are unchanged)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def split_statements(text: str, read: str = "") -> list[Statement]:  # long: one lexer pass, shared cursor
    """Split a script into statements (see the module docstring for the conventions understood).

    `read` tunes the lexical details that differ by dialect: backslash escapes in strings and `#`
    comments (MySQL), `[bracketed]` identifiers (T-SQL). Statements that hold only comments are
    left out.
    """
    text = clean_text(text)
    mysql = read in ("mysql", "mariadb", "singlestore", "doris", "starrocks", "")
    brackets = read in ("tsql", "fabric")
    buf = list(text)  # conditional-comment markers are blanked in place, keeping offsets
    out: list[Statement] = []
    delimiter = ";"
    pattern = _scanner(delimiter, mysql, brackets, read in ("mysql", "mariadb"))
    n = len(text)
    start = 0  # start of the current statement
    pos = 0
    depth = 0  # BEGIN/CASE nesting inside procedural bodies
    body = None  # whether the current statement has a procedural body; decided at its first word
    in_cond = False
    line_starts = _line_starts(text)

    def emit(end: int, meta: bool = False) -> None:
        nonlocal start, depth, body, has_code, code_start, parens
        if has_code or meta:
            first = start if meta else code_start
            chunk = "".join(buf[first : end if meta else code_end]).rstrip()
            lead = len(chunk) - len(chunk.lstrip())
            line, col = _line_col(line_starts, first + lead)
            out.append(Statement(chunk.strip(), line, col, meta=meta))
        has_code = False
        depth = 0
        parens = 0
        body = None

    has_code = False
    parens = 0
    code_start = code_end = 0
    at_line_start = True
    while pos < n:
        if at_line_start:
            at_line_start = False
            m = _GO.match(text, pos) or _SLASH.match(text, pos)
            if m:
                emit(pos)
                pos = m.end()
                start = pos
                continue
            if brackets and has_code and parens == 0 and depth == 0 and _TSQL_NEXT.match(text, pos):
                emit(pos)
                start = pos
            if not has_code:
                m = _DELIMITER.match(text, pos)
                if m:
                    emit(pos)
                    delimiter = m.group(1)
                    pattern = _scanner(delimiter, mysql, brackets, read in ("mysql", "mariadb"))
                    pos = m.end()
                    start = pos
                    continue
                m = _META.match(text, pos) or _SOURCE.match(text, pos)
                if m:
                    emit(pos)
                    start = pos
                    pos = m.end()
                    emit(pos, meta=True)
                    start = pos
                    continue
        m = pattern.match(text, pos)
        kind = m.lastgroup
        end = m.end()
        if kind not in ("nl", "ws", "cmt", "delim"):
            if not has_code:
                has_code = True
                code_start = pos
            code_end = end if kind != "dollar" else _dollar_end(text, m.group(), end, n)
        if kind == "nl":
            at_line_start = True
        elif kind == "word":
            if body is None:
                body = delimiter == ";" and bool(_BODY_HEAD.match(text, pos, pos + 200))
            if body:
                word = m.group().upper()
                if word in ("BEGIN", "CASE"):
                    depth += 1
                elif word == "END" and depth > 0 and not _END_FOLLOW.match(text, end):
                    depth -= 1
        elif kind == "dollar":
            end = _dollar_end(text, m.group(), end, n)
        elif kind == "cond":
            for i in range(pos, end):
                buf[i] = " "
            in_cond = True
        elif kind == "condend" and in_cond:
            buf[pos] = buf[pos + 1] = " "
            in_cond = False
        elif kind == "delim" and depth == 0:
            emit(pos)
            start = end
        elif kind == "other":
            g = m.group()
            parens += g.count("(") - g.count(")")
        pos = end
    emit(n)
    return out


def _dollar_end(text: str, tag: str, pos: int, n: int) -> int:
    close = text.find(tag, pos)
    return n if close < 0 else close + len(tag)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    find = text.find
    i = find("\n")
    while i >= 0:
        starts.append(i + 1)
        i = find("\n", i + 1)
    return starts


def _line_col(starts: list[int], offset: int) -> tuple[int, int]:
    import bisect

    i = bisect.bisect_right(starts, offset) - 1
    return i + 1, offset - starts[i] + 1
