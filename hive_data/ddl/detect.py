"""Guess the SQL dialect a DDL script was written in, from marks only one dialect leaves.

Each dialect has a few weighted patterns (backquotes and `ENGINE=` for MySQL, `GO` lines and
`[brackets]` for T-SQL, `::casts` and `nextval` for Postgres...). The highest total wins; with no
marks at all the answer is Postgres, whose grammar is the closest to the SQL standard.
"""

from __future__ import annotations

import re

_MARKS: dict[str, list[tuple[str, float]]] = {
    "mysql": [
        (r"`[^`\n]+`", 1.0),
        (r"\bAUTO_INCREMENT\b", 3.0),
        (r"\bENGINE\s*=", 3.0),
        (r"\bUNSIGNED\b", 1.0),
        (r"\bDEFAULT\s+CHARSET\b", 3.0),
        (r"^\s*DELIMITER\s", 3.0),
        (r"/\*M?!\d+", 3.0),
        (r"^\s*(?:UN)?LOCK\s+TABLES\b", 3.0),
        (r"\bTINYINT\s*\(", 1.0),
        (r"\bINT\s*\(\s*\d+\s*\)", 1.0),
        (r"\bENUM\s*\(", 1.0),
    ],
    "tsql": [
        (r"^\s*GO\s*$", 3.0),
        (r"\[dbo\]", 3.0),
        (r"\[[A-Za-z_][^\]\n]*\]", 0.5),
        (r"\bIDENTITY\s*\(\s*\d+\s*,\s*\d+\s*\)", 3.0),
        (r"\bNVARCHAR\s*\(\s*MAX\s*\)", 3.0),
        (r"\bNONCLUSTERED\b|\bCLUSTERED\b", 3.0),
        (r"(?<!AS )\bIDENTITY\b", 1.0),
        (r"\bGETDATE\s*\(", 2.0),
        (r"\bsp_addextendedproperty\b", 3.0),
        (r"^\s*SET\s+(?:ANSI_NULLS|QUOTED_IDENTIFIER|ANSI_PADDING|NOCOUNT)\b", 3.0),
    ],
    "postgres": [
        (r"::\s*[A-Za-z_]", 2.0),
        (r"\bnextval\s*\(", 3.0),
        (r"\bBIGSERIAL\b|\bSERIAL\b", 3.0),
        (r"^\s*\\[a-z]", 3.0),
        (r"\bOWNER\s+TO\b", 3.0),
        (r"\bcharacter\s+varying\b", 2.0),
        (r"\btimestamp\s+with(?:out)?\s+time\s+zone\b", 2.0),
        (r"\bpg_catalog\b", 3.0),
        (r"^\s*COPY\b[^;\n]*\bFROM\s+stdin\b", 3.0),
        (r"\bJSONB\b|\bBYTEA\b|\bTSVECTOR\b", 2.0),
        (r"\$\$", 1.0),
        (r"\bGENERATED\s+(?:ALWAYS|BY\s+DEFAULT)\s+AS\s+IDENTITY\b", 1.0),
    ],
    "oracle": [
        (r"\bVARCHAR2\b|\bNVARCHAR2\b", 3.0),
        (r"\bNUMBER\s*\(|\bNUMBER\s+(?:NOT\b|NULL\b|,)", 1.5),
        (r"^\s*/\s*$", 2.0),
        (r"\bFROM\s+DUAL\b", 2.0),
        (r"\bnextval\b(?!\s*\()", 1.0),
        (r"^\s*CONNECT\s+\w+/", 3.0),
    ],
    "sqlite": [
        (r"\bAUTOINCREMENT\b", 3.0),
        (r"\bWITHOUT\s+ROWID\b", 3.0),
        (r"^\s*PRAGMA\b", 3.0),
        (r"\bON\s+CONFLICT\s+(?:REPLACE|IGNORE|ABORT|FAIL|ROLLBACK)\b", 2.0),
        (r"\bDATETIME\s*\(\s*'NOW'\s*\)", 3.0),
        (r"\browid\b", 1.0),
        (r"\bSTRICT\s*;", 2.0),
        (r"\bsqlite_(?:sequence|stat\d|master|schema)\b", 3.0),
    ],
}

_COMPILED = {
    dialect: [(re.compile(p, re.I | re.M), w) for p, w in marks] for dialect, marks in _MARKS.items()
}
_SAMPLE = 100_000  # schemas come first in dumps; the data after them says nothing about dialect
# String literals and comments say nothing about the dialect ('[Disc 1]' is not T-SQL).
_NOISE = re.compile(r"'(?:[^'\\\n]|\\.|'')*'|--[^\n]*|/\*(?!M?!).*?\*/", re.S)
# psql COPY rows (up to their `\.` line) are data, whatever words they hold.
_COPY_DATA = re.compile(r"^(COPY\b[^;]*?\bFROM\s+stdin\b[^\n]*)\n.*?(?:^\\\.[ \t]*$|\Z)", re.I | re.M | re.S)


def detect_dialect(text: str) -> str:
    """Return the sqlglot dialect name that best explains `text` (see the module docstring)."""
    sample = _NOISE.sub("''", _COPY_DATA.sub(r"\1", text[:_SAMPLE]))
    scores = {
        dialect: sum(w * min(len(p.findall(sample)), 20) for p, w in marks)
        for dialect, marks in _COMPILED.items()
    }
    best = max(scores, key=lambda d: (scores[d], d == "postgres"))
    return best if scores[best] > 0 else "postgres"
