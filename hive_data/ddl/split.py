"""Split a SQL script into statements, with the line and column where each one starts.

sqlglot parses one statement at a time here, so one unsupported statement cannot take the rest
down. The splitter knows the script-level conventions that are not SQL: a byte-order mark, CRLF line
ends, T-SQL `GO` batch lines, SQL*Plus `/` lines, MySQL `DELIMITER` blocks and `/*! ... */`
conditional comments, psql backslash meta-commands and `COPY ... FROM stdin` data blocks, and
procedural bodies (`BEGIN ... END;`, `$$ ... $$`, a T-SQL procedure up to its `GO`) whose semicolons
do not end the statement.

It also recognizes what dump tools write that is never table structure, and labels it (`kind`) so
that it is counted without being parsed: COPY data blocks, statements wholly inside MySQL versioned
comments (`/*!40101 SET ... */`, `/*!40000 ALTER TABLE t DISABLE KEYS */`, `/*!50001 CREATE VIEW`),
table options in versioned comments after a CREATE TABLE's column list (`/*!50100 PARTITION BY ...*/`)
and statements on SQLite's internal tables (`sqlite_sequence`, `sqlite_stat1`).

Positions are kept exact: markers that are removed (`/*!40101`, its `*/`) become spaces of the same
length, so an offset into a statement maps back to the original file line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Statement:
    """One statement: its text (terminator excluded) and where it starts in the file (1-based).

    `meta` statements are never parsed: client directives (psql `\\connect`, MySQL `source f;`) and
    whatever the splitter has already recognized as not structure, named by `kind` for the summary of
    dropped statements."""

    text: str
    line: int
    col: int
    meta: bool = False  # a client directive or a recognized non-structure statement, not to be parsed
    schema: str | None = None  # set for tables created inside a `CREATE SCHEMA x ...` body
    kind: str | None = None  # the splitter's name for a meta statement it recognized (see module doc)

    def locate(self, line: int, col: int) -> tuple[int, int]:
        """Map a 1-based (line, col) inside `text` to the file."""
        if line <= 1:
            return self.line, self.col + col - 1
        return self.line + line - 1, col


COPY_DATA = "COPY ... FROM stdin data block"
TABLE_OPTION = "table option in /*!...*/"
VERSIONED = "in /*!...*/"

_GO = re.compile(r"[ \t]*GO(?:[ \t]+\d+)?[ \t]*(?:--[^\n]*)?(?=\n|$)", re.I)
_GO_LINE = re.compile("^" + _GO.pattern, re.I | re.M)  # is there any GO line at all?
_SLASH = re.compile(r"[ \t]*/[ \t]*(?=\n|$)")
_DELIMITER = re.compile(r"[ \t]*DELIMITER[ \t]+(\S+)[ \t]*(?=\n|$)", re.I)
_META = re.compile(r"[ \t]*\\[^\n]*")
_SOURCE = re.compile(r"[ \t]*(?:source|\\\.)[ \t]+[^\n;]*;?[ \t]*(?=\n|$)", re.I)
# `BEGIN` alone or with these words starts a transaction (SQLite `.dump`, T-SQL), not a body.
_NOT_BLOCK = r"(?!\s*(?:;|$|TRANSACTION\b|TRAN\b|WORK\b|DEFERRED\b|IMMEDIATE\b|EXCLUSIVE\b|DISTRIBUTED\b))"
_BODY_HEAD = re.compile(
    r"\s*(?:CREATE\s+(?:OR\s+(?:REPLACE|ALTER)\s+)?(?:DEFINER\s*=\s*\S+\s+)?(?:EDITIONABLE\s+)?"
    r"(?:TRIGGER|PROCEDURE|PROC|FUNCTION|PACKAGE|TYPE\s+BODY)\b|BEGIN\b" + _NOT_BLOCK + r"|DECLARE\b)",
    re.I,
)
_BLOCK_BEGIN = re.compile(_NOT_BLOCK, re.I)
# T-SQL: these must be alone in their batch, so with `GO` lines they run to the next `GO` whatever
# their body holds (`CREATE PROCEDURE p AS SET NOCOUNT ON; CREATE TABLE #t ...`).
_TSQL_BATCH_HEAD = re.compile(
    r"\s*(?:CREATE\s+(?:OR\s+ALTER\s+)?|ALTER\s+)(?:PROC|PROCEDURE|FUNCTION|TRIGGER|VIEW|DEFAULT|RULE)\b",
    re.I,
)
# T-SQL needs no separators: a statement keyword at the start of a line, outside parentheses and
# procedural bodies, starts the next statement.
_TSQL_NEXT = re.compile(
    r"[ \t]*(?:CREATE|ALTER|DROP|INSERT|EXEC|EXECUTE|USE|SET|PRINT|GRANT|DECLARE)\b", re.I
)
_END_FOLLOW = re.compile(r"\s+(IF|LOOP|WHILE|REPEAT|FOR)\b", re.I)
_COPY_STDIN = re.compile(r"COPY\b.*?\bFROM\s+STDIN\b", re.I | re.S)
_COPY_END = re.compile(r"^\\\.[ \t]*$", re.M)
_CREATE_TABLE = re.compile(r"CREATE\s+(?:\w+\s+){0,2}TABLE\b", re.I)
_LEAD = re.compile(
    r"(CREATE|ALTER|DROP)(?:\s+(?:OR\s+REPLACE|ALGORITHM\s*=\s*\w+|DEFINER\s*=\s*\S+|SQL\s+SECURITY\s+\w+))*"
    r"\s+(\w+)|(\w+)",
    re.I,
)
_SQLITE_INTERNAL = re.compile(
    r"(CREATE\s+TABLE(?:\s+IF\s+NOT\s+EXISTS)?|INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|DELETE\s+FROM|"
    r"UPDATE)\s+[\"`\[]?(sqlite_\w+)",
    re.I,
)


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
        r"(?P<cond>/\*M?!\d*)",  # MySQL `/*!40101 ... */`, MariaDB `/*M!100100 ... */`
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
    comments (MySQL), `[bracketed]` identifiers and `GO` batches (T-SQL), SQLite's internal tables.
    Statements that hold only comments are left out. Statements come in file order; a table option
    cut out of a versioned comment comes right after its CREATE TABLE.
    """
    text = clean_text(text)
    mysql = read in ("mysql", "mariadb", "singlestore", "doris", "starrocks", "")
    brackets = read in ("tsql", "fabric")
    go_batches = brackets and _GO_LINE.search(text) is not None
    buf = list(text)  # conditional-comment markers are blanked in place, keeping offsets
    out: list[Statement] = []
    pending: list[Statement] = []  # table options cut out of the current statement
    delimiter = ";"
    pattern = _scanner(delimiter, mysql, brackets, read in ("mysql", "mariadb"))
    n = len(text)
    start = 0  # start of the current statement
    pos = 0
    depth = 0  # BEGIN/CASE nesting inside procedural bodies
    body = None  # whether the current statement has a procedural body; decided at its first word
    batch = False  # a T-SQL statement that runs to the end of its GO batch
    versioned = False  # the statement's code starts inside a versioned comment
    cond_at = -1  # where the open versioned comment starts (-1: none open)
    cond_option = False  # the open versioned comment holds a table option, to be cut out
    closed_body = False  # a parenthesized list (a CREATE TABLE's columns) has closed at depth 0
    line_starts = _line_starts(text)

    def emit(end: int, meta: bool = False) -> Statement | None:
        nonlocal has_code, depth, parens, body, batch, versioned, closed_body
        stmt = None
        if has_code or meta:
            first = start if meta else code_start
            chunk = "".join(buf[first : end if meta else code_end]).rstrip()
            lead = len(chunk) - len(chunk.lstrip())
            line, col = _line_col(line_starts, first + lead)
            kind = _directive_kind(chunk.strip()) if meta else _dump_kind(chunk.strip(), read, versioned)
            if chunk.strip():
                stmt = Statement(chunk.strip(), line, col, meta=meta or kind is not None, kind=kind)
                out.append(stmt)
        out.extend(pending)
        pending.clear()
        has_code = versioned = closed_body = batch = False
        depth = parens = 0
        body = None
        return stmt

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
            if (
                brackets
                and has_code
                and parens == 0
                and depth == 0
                and not batch
                and _TSQL_NEXT.match(text, pos)
            ):
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
                versioned = kind == "cond"
            code_end = end if kind != "dollar" else _dollar_end(text, m.group(), end, n)
        if kind == "nl":
            at_line_start = True
        elif kind == "word":
            if body is None:
                body = delimiter == ";" and bool(_BODY_HEAD.match(text, pos, pos + 200))
                batch = go_batches and bool(_TSQL_BATCH_HEAD.match(text, pos, pos + 200))
            if body:
                word = m.group().upper()
                if (word == "BEGIN" and _BLOCK_BEGIN.match(text, end)) or word == "CASE":
                    depth += 1
                elif word == "END" and depth > 0 and not _END_FOLLOW.match(text, end):
                    depth -= 1
        elif kind == "dollar":
            end = _dollar_end(text, m.group(), end, n)
        elif kind == "cond" and code_start == pos and text.startswith("\\", end):
            # MariaDB's first line, `/*M!999999\\- enable the sandbox mode */`: a client command
            close = text.find("*/", end)
            end = n if close < 0 else close + 2
            start = pos
            emit(end, meta=True)
            start = end
        elif kind == "cond":
            _blank(buf, pos, end)
            cond_at = pos
            cond_option = closed_body and parens == 0 and bool(_CREATE_TABLE.match(text, code_start))
        elif kind == "condend" and cond_at >= 0:
            if cond_option:  # MySQL would apply it; a table option says nothing about structure
                pending.append(_cut(text, buf, cond_at, end, line_starts))
            else:  # the content is SQL MySQL runs: keep it
                _blank(buf, pos, end)
            cond_at = -1
        elif kind == "delim" and depth == 0 and not batch:
            stmt = emit(pos)
            start = end
            if stmt is not None and stmt.kind == COPY_DATA:  # psql reads the rows that follow
                end = start = _copy_data_end(text, end)
        elif kind == "other":
            g = m.group()
            parens += g.count("(") - g.count(")")
            closed_body = closed_body or (parens == 0 and ")" in g)
        pos = end
    emit(n)
    return out


def _dump_kind(text: str, read: str, versioned: bool) -> str | None:
    """The name of a statement dump tools write that is never structure, or None to parse it."""
    if versioned:  # mysqldump's SET, DISABLE KEYS, views, triggers and view placeholder tables
        m = _LEAD.match(text)
        lead = f"{m.group(1)} {m.group(2)}" if m and m.group(1) else (m.group(3) if m else "statement")
        return f"{lead.upper()} {VERSIONED}"
    if _COPY_STDIN.match(text):
        return COPY_DATA
    if read == "sqlite":
        m = _SQLITE_INTERNAL.match(text)
        if m:
            verb = " ".join(m.group(1).upper().split()[:2])
            return f"{verb} {m.group(2)} (SQLite internal table)"
    return None


def _directive_kind(text: str) -> str:
    return "psql meta-command" if text.startswith("\\") else "client command"


def _cut(text: str, buf: list[str], begin: int, end: int, line_starts: list[int]) -> Statement:
    """Blank a versioned comment out of the statement (newlines stay) and return its content as a
    meta statement, counted as a dropped table option."""
    body = re.match(r"/\*M?!\d*", text[begin:end])
    inner = text[begin + body.end() : end - 2]
    lead = len(inner) - len(inner.lstrip())
    line, col = _line_col(line_starts, begin + body.end() + lead)
    for i in range(begin, end):
        if buf[i] != "\n":
            buf[i] = " "
    return Statement(inner.strip(), line, col, meta=True, kind=TABLE_OPTION)


def _blank(buf: list[str], begin: int, end: int) -> None:
    for i in range(begin, end):
        buf[i] = " "


def _copy_data_end(text: str, pos: int) -> int:
    """The offset just past the `\\.` line that ends the COPY data starting on the line after `pos`
    (the end of the text when the line is missing)."""
    nl = text.find("\n", pos)
    if nl < 0:
        return len(text)
    m = _COPY_END.search(text, nl + 1)
    return len(text) if m is None else m.end()


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
