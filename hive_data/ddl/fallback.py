"""CREATE TABLE syntax sqlglot cannot read, made readable without losing a column or a key.

Used only when sqlglot cannot parse a CREATE TABLE (or reads it only as a raw command), so input it
reads is untouched. Clauses that do not change the table's columns and keys are blanked with spaces
of the same length (positions still map to the file) and counted:

- after the column list: `PARTITION BY ...` (PostgreSQL, MySQL with its partition list), `WITH (...)`,
  `WITH[OUT] OIDS`, `USING method`, `TABLESPACE t`, `ON COMMIT ...`, T-SQL `ON filegroup`,
  `TEXTIMAGE_ON`, MySQL table options (`ENGINE=`, `CHARSET=`, `ROW_FORMAT=`, ...); `INHERITS (...)`,
  `FOR VALUES ...` and `DEFAULT` (a partition's bounds) are kept;
- inside a column or key: PostgreSQL `VIRTUAL` (the column stays generated), identity options
  `AS IDENTITY (START WITH ...)`, `STORAGE`, `COMPRESSION`, `NO INHERIT`, `NOT VALID`,
  `[NOT] ENFORCED`, `WITHOUT OVERLAPS`, `PERIOD`; MySQL `COLUMN_FORMAT`, `SRID`, `[IN]VISIBLE`,
  `ENGINE_ATTRIBUTE`; T-SQL `SPARSE`, `MASKED WITH (...)`, `ENCRYPTED WITH (...)`, `HIDDEN`,
  `FILESTREAM`.

If sqlglot still cannot read the statement and the error lies in a part that cannot be represented
without reading it (a column's generation expression, CHECK or parenthesized DEFAULT, a table CHECK),
that part is dropped with a warning and the column stays (`drop_unreadable`). Anything else is left
alone: the caller rejects the statement where sqlglot stopped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sqlglot.tokens import Token, TokenType

from hive_data.ddl.alter import _CLOSE, _OPEN, _STRINGS, split_words

_KEY_WORDS = frozenset(
    ("CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE", "INDEX", "KEY", "FULLTEXT", "SPATIAL")
)
_BAL = "\0"  # in a pattern: a balanced parenthesized group follows here (matched by `_balanced`)

# Clauses inside a column definition or key (never its first word): label, pattern. Group 1, when the
# pattern has one, is the part blanked; otherwise the whole match.
_ELEMENT_CLAUSES = [
    ("VIRTUAL", r"\)\s*(VIRTUAL)\b"),
    ("identity options", r"\bAS\s+IDENTITY\s*(\()" + _BAL),
    ("STORAGE", r"\bSTORAGE\s+(?:PLAIN|EXTERNAL|EXTENDED|MAIN|DEFAULT|DISK|MEMORY)\b"),
    ("COMPRESSION", r"\bCOMPRESSION\s+[\w$]+"),
    ("NO INHERIT", r"\bNO\s+INHERIT\b"),
    ("NOT VALID", r"\bNOT\s+VALID\b"),
    ("NOT ENFORCED", r"\b(?:NOT\s+)?ENFORCED\b"),
    ("WITHOUT OVERLAPS", r"\bWITHOUT\s+OVERLAPS\b"),
    ("PERIOD", r"[(,]\s*(PERIOD)\s+(?=[\w$])"),
    ("COLUMN_FORMAT", r"\bCOLUMN_FORMAT\s+(?:FIXED|DYNAMIC|DEFAULT)\b"),
    ("SRID", r"\bSRID\s+\d+"),
    ("INVISIBLE", r"\b(?:VISIBLE|INVISIBLE)\b"),
    ("ENGINE_ATTRIBUTE", r"\b(?:SECONDARY_)?ENGINE_ATTRIBUTE\s*=?\s*[\w$]+"),
    ("SPARSE", r"\bSPARSE\b"),
    ("MASKED", r"\bMASKED\s+WITH\s*\(" + _BAL),
    ("ENCRYPTED", r"\bENCRYPTED\s+WITH\s*\(" + _BAL),
    ("HIDDEN", r"\bHIDDEN\b"),
    ("FILESTREAM", r"\bFILESTREAM\b"),
]
_MYSQL_OPTIONS = (
    r"ENGINE|AUTO_INCREMENT|CHARSET|CHARACTER\s+SET|COLLATE|COMMENT|ROW_FORMAT|KEY_BLOCK_SIZE|"
    r"STATS_PERSISTENT|STATS_AUTO_RECALC|STATS_SAMPLE_PAGES|PACK_KEYS|CHECKSUM|TABLE_CHECKSUM|"
    r"DELAY_KEY_WRITE|AVG_ROW_LENGTH|MAX_ROWS|MIN_ROWS|INSERT_METHOD|ENCRYPTION|COMPRESSION|"
    r"DATA\s+DIRECTORY|INDEX\s+DIRECTORY|STORAGE|SECONDARY_ENGINE_ATTRIBUTE|SECONDARY_ENGINE|"
    r"ENGINE_ATTRIBUTE|AUTOEXTEND_SIZE"
)
# Clauses after the column list: label ("" keeps it), pattern (anchored where the previous one ended).
_TAIL_CLAUSES = [
    ("", r"INHERITS\s*\(" + _BAL),
    ("", r"FOR\s+VALUES\s+FROM\s*\(" + _BAL + r"\s*TO\s*\(" + _BAL),
    ("", r"FOR\s+VALUES\s+(?:IN|WITH)\s*\(" + _BAL),
    ("", r"DEFAULT\b(?!\s*(?:CHARSET|CHARACTER|COLLATE)\b)"),
    ("PARTITION BY", r"PARTITION\s+BY\b"),
    ("WITH (...)", r"WITH\s*\(" + _BAL),
    ("WITH OIDS", r"WITH(?:OUT)?\s+OIDS\b"),
    ("USING", r"USING\s+[\w$]+"),
    ("TABLESPACE", r"TABLESPACE\s*=?\s*[\w$]+(?:\s+STORAGE\s+(?:DISK|MEMORY))?"),
    ("ON COMMIT", r"ON\s+COMMIT\s+(?:PRESERVE\s+ROWS|DELETE\s+ROWS|DROP)\b"),
    ("TEXTIMAGE_ON", r"(?:TEXTIMAGE_ON|FILESTREAM_ON)\s+[\w$]+"),
    ("ON filegroup", r"ON\s+[\w$]+\s*\(" + _BAL),
    ("ON filegroup", r"ON\s+[\w$]+"),
    ("table option", r"(?:DEFAULT\s+)?(?:" + _MYSQL_OPTIONS + r")\b\s*(?:=\s*)?(?:[\w$.]+)?"),
    ("table option", r"UNION\s*=?\s*\(" + _BAL),
    ("", r","),
]
# Where a PARTITION BY clause ends (PostgreSQL lets these follow it).
_AFTER_PARTITION = re.compile(r"USING\b|WITH\b|TABLESPACE\b|ON\s+COMMIT\b", re.I)
# Parts of a column that cannot be kept without reading them: label, pattern.
_UNREADABLE = [
    (
        "generation expression",
        r"\b(?:GENERATED\s+ALWAYS\s+)?AS\s*\(" + _BAL + r"(?:\s*(?:STORED|VIRTUAL|PERSISTED)\b)?",
    ),
    ("CHECK", r"\b(?:CONSTRAINT\s+[\w$]+\s+)?CHECK\s*\(" + _BAL + r"(?:\s*NO\s+INHERIT\b)?"),
    ("DEFAULT", r"\b(?:CONSTRAINT\s+[\w$]+\s+)?DEFAULT\s*\(" + _BAL),
]


@dataclass
class Layout:
    """Where a CREATE TABLE's column list and its elements are, in statement offsets."""

    masked: str  # the text with strings and quoted names as `x`, comments as spaces
    elements: list[tuple[int, int, list[Token]]] = field(default_factory=list)  # start, end, tokens
    tail: int = 0  # offset where the clauses after the column list start


def layout(text: str, tokens: list[Token]) -> Layout:
    """Find the column list (the first parenthesis right after the table name, or after
    `PARTITION OF parent`) and split it into elements at top-level commas."""
    masked = _mask(text, tokens)
    tokens = split_words(text, tokens)
    out = Layout(masked)
    words = [t.text.upper() if t.token_type not in _STRINGS else "" for t in tokens]
    try:
        i = words.index("TABLE") + 1
    except ValueError:
        return out
    if words[i : i + 3] == ["IF", "NOT", "EXISTS"]:
        i += 3
    i = _skip_name(tokens, i)
    if words[i : i + 2] == ["PARTITION", "OF"]:
        i = _skip_name(tokens, i + 2)
    out.tail = tokens[i].start if i < len(tokens) else len(text)
    if i >= len(tokens) or tokens[i].token_type != TokenType.L_PAREN:
        return out
    depth, part = 0, []
    for j in range(i, len(tokens)):
        tok = tokens[j]
        if tok.token_type in _OPEN:
            depth += 1
            if depth == 1:
                continue
        elif tok.token_type in _CLOSE:
            depth -= 1
            if depth == 0:
                if part:
                    out.elements.append((part[0].start, tok.start, part))
                out.tail = tok.end + 1
                return out
        if depth == 1 and tok.token_type == TokenType.COMMA:
            if part:
                out.elements.append((part[0].start, tok.start, part))
            part = []
        else:
            part.append(tok)
    return Layout(masked, tail=len(text))  # unbalanced: leave it to the parser's error


def relax(text: str, tokens: list[Token]) -> tuple[str, list[str]]:
    """Blank the non-structural clauses sqlglot may not read (see the module docstring); returns the
    new text (same length) and a label for each clause blanked."""
    lay = layout(text, tokens)
    spans: list[tuple[int, int, str]] = []
    for _, end, toks in lay.elements:
        body_from = toks[1].start if len(toks) > 1 else end
        for label, pattern in _ELEMENT_CLAUSES:
            for a, b in _find(lay.masked, pattern, body_from, end):
                spans.append((a, b, label))
    spans += _tail_spans(lay.masked, lay.tail)
    return _blank_spans(text, spans), [label for _, _, label in sorted(spans)]


def drop_unreadable(text: str, tokens: list[Token], offset: int) -> tuple[str, str, str] | None:
    """Blank the unreadable part of a column (or a table CHECK) that holds the parse error at
    `offset`: returns (new text, what was dropped, the column or "table CHECK"), or None."""
    lay = layout(text, tokens)
    for start, end, toks in lay.elements:
        if not start <= offset <= end:
            continue
        first = toks[0].text.upper() if toks[0].token_type not in _STRINGS else ""
        if first in _KEY_WORDS:
            if first == "CHECK" or (
                first == "CONSTRAINT" and len(toks) > 2 and toks[2].text.upper() == "CHECK"
            ):
                return _blank_element(text, lay, start, end), "CHECK", "table CHECK"
            return None
        body_from = toks[1].start if len(toks) > 1 else end
        for label, pattern in _UNREADABLE:
            for a, b in _find(lay.masked, pattern, body_from, end):
                if a <= offset <= b:
                    return _blank_spans(text, [(a, b, label)]), label, toks[0].text
        return None
    return None


# ---- helpers ----------------------------------------------------------------------------------
def _mask(text: str, tokens: list[Token]) -> str:
    out = [c if c == "\n" else " " for c in text]
    for tok in tokens:
        span = text[tok.start : tok.end + 1]
        quoted = tok.token_type in _STRINGS or tok.token_type == TokenType.IDENTIFIER
        for k, c in enumerate(span):
            if c != "\n":
                out[tok.start + k] = "x" if quoted else c
    return "".join(out)


def _skip_name(tokens: list[Token], i: int) -> int:
    i += 1
    while i + 1 < len(tokens) and tokens[i].token_type == TokenType.DOT:
        i += 2
    return i


def _balanced(masked: str, open_at: int) -> int:
    """Offset just past the parenthesis closing the one at `open_at` (-1 when unbalanced)."""
    depth = 0
    for k in range(open_at, len(masked)):
        c = masked[k]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return k + 1
    return -1


def _match(masked: str, pattern: str, pos: int, end: int) -> tuple[int, int, int] | None:
    """The first match of `pattern` in masked[pos:end], where each `_BAL` mark stands for the
    balanced parenthesized group opened by the character just before it: (start, end, start of
    group 1 or -1), or None."""
    pieces = pattern.split(_BAL)
    m = re.compile(pieces[0], re.I).search(masked, pos, end)
    if m is None:
        return None
    start, at = m.start(), m.end()
    g1 = m.start(1) if m.re.groups and m.group(1) is not None else -1
    for piece in pieces[1:]:
        close = _balanced(masked, at - 1)
        if close < 0 or close > end:
            return None
        m = re.compile(piece, re.I).match(masked, close, end)
        if m is None:
            return None
        at = m.end()
    return start, at, g1


def _find(masked: str, pattern: str, pos: int, end: int) -> list[tuple[int, int]]:
    """Every non-overlapping match of `pattern` in masked[pos:end], as the span to blank."""
    out = []
    while pos < end:
        hit = _match(masked, pattern, pos, end)
        if hit is None:
            break
        start, stop, g1 = hit
        out.append((g1 if g1 >= 0 else start, stop))
        pos = max(stop, start + 1)
    return out


def _tail_spans(masked: str, pos: int) -> list[tuple[int, int, str]]:
    """Blank the known clauses after the column list, in order, until one is not known."""
    spans = []
    n = len(masked)
    while True:
        while pos < n and masked[pos].isspace():
            pos += 1
        if pos >= n:
            return spans
        for label, pattern in _TAIL_CLAUSES:
            hit = _match(masked, pattern, pos, n)
            if hit is not None and hit[0] == pos:
                stop = _partition_end(masked, hit[1]) if label == "PARTITION BY" else hit[1]
                if label:
                    spans.append((pos, stop, label))
                pos = stop
                break
        else:
            return spans


def _partition_end(masked: str, pos: int) -> int:
    """A PARTITION BY clause runs through words and parenthesized groups until a clause PostgreSQL
    allows after it, or the end."""
    n = len(masked)
    while pos < n:
        while pos < n and masked[pos].isspace():
            pos += 1
        if pos >= n or _AFTER_PARTITION.match(masked, pos):
            break
        if masked[pos] == "(":
            close = _balanced(masked, pos)
            pos = close if close > 0 else n
        else:
            m = re.compile(r"[^\s(]+").match(masked, pos)
            pos = m.end()
    return pos


def _blank_spans(text: str, spans) -> str:
    chars = list(text)
    for a, b, _ in spans:
        for k in range(a, b):
            if chars[k] != "\n":
                chars[k] = " "
    return "".join(chars)


def _blank_element(text: str, lay: Layout, start: int, end: int) -> str:
    """Blank one element of the column list and the comma that separates it from a neighbour."""
    k = next(n for n, e in enumerate(lay.elements) if e[0] == start)
    if k > 0:
        start = lay.elements[k - 1][1]  # the comma before it
    elif end < len(text) and lay.masked[end] == ",":
        end += 1
    return _blank_spans(text, [(start, end, "")])
