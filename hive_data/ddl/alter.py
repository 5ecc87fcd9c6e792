"""ALTER TABLE, replayed in file order on the schema being built (`apply_alter`).

A statement is tokenized once with the source dialect's tokenizer (strings, quoted names and comments
are never mistaken for keywords). Its header `ALTER [ONLINE|IGNORE] TABLE [IF EXISTS] [ONLY] name [*]`
names the table; the rest is split at top-level commas into actions, each recognized by its leading
words:

    ADD [COLUMN] [IF NOT EXISTS] def [FIRST | AFTER c]    ADD (def, ...)    ADD [CONSTRAINT n] key
    DROP [COLUMN] [IF EXISTS] c [CASCADE]    DROP CONSTRAINT [IF EXISTS] n    DROP PRIMARY KEY
    DROP FOREIGN KEY n    DROP INDEX | KEY | CHECK n
    RENAME [COLUMN] a TO b    RENAME [TO | AS] t    RENAME CONSTRAINT | INDEX | KEY a TO b    SET SCHEMA s
    ALTER [COLUMN] c  TYPE t [USING e] | SET DATA TYPE t | SET DEFAULT e | DROP DEFAULT | SET NOT NULL |
                      DROP NOT NULL | ADD GENERATED ... AS IDENTITY | DROP IDENTITY | DROP EXPRESSION
    ALTER COLUMN c t [NULL | NOT NULL]                                         (T-SQL)
    MODIFY [COLUMN] def [FIRST | AFTER c]    CHANGE [COLUMN] old def [FIRST | AFTER c]    (MySQL)
    ADD [CONSTRAINT n] DEFAULT e FOR c                                         (T-SQL)

The SQL inside an action (a column definition, a key, a type, a default) is parsed by sqlglot as a
fragment of a CREATE TABLE (or a SELECT) whose positions map back to the file, so errors point at the
right line and column. Table options (OWNER TO, ENGINE=, SET TABLESPACE, partitions, triggers,
REPLICA IDENTITY, ...) change nothing the schema shows: each is counted in `dropped` as
`ALTER TABLE <option>`. An action that is neither is rejected where it starts.

What goes with a dropped or renamed object follows PostgreSQL (CASCADE where other objects depend on
it, so the schema stays consistent; a warning says what went):
- DROP COLUMN drops the keys, foreign keys and checks that use the column (MySQL instead shrinks
  primary and unique keys to their other columns, as it does), and other tables' foreign keys that
  reference it; a generated column computed from it goes too with CASCADE, and is an error without.
- Dropping a key drops other tables' foreign keys that relied on it.
- RENAME COLUMN renames the column in keys, checks, generated columns and in other tables' foreign
  keys; RENAME TO renames the table in every reference to it.
- DROP CONSTRAINT finds the constraint by the name the input gave it, or by the name PostgreSQL or
  MySQL would have generated (`t_pkey`, `t_a_fkey`, `t_ibfk_1`, ...); a name that matches nothing is
  an error (without IF EXISTS): the database would have refused the statement.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from hive_core.errors import DDLError
from hive_data.ddl.model import Column, ForeignKey, QualifiedName, Table
from hive_data.ddl.split import Statement

_STRINGS = frozenset(
    getattr(TokenType, n)
    for n in (
        "STRING",
        "BIT_STRING",
        "HEX_STRING",
        "BYTE_STRING",
        "NATIONAL_RAW_STRING",
        "NATIONAL_STRING",
        "RAW_STRING",
        "HEREDOC_STRING",
        "UNICODE_STRING",
    )
)
_OPEN = frozenset((TokenType.L_PAREN, TokenType.L_BRACKET, TokenType.L_BRACE))
_CLOSE = frozenset((TokenType.R_PAREN, TokenType.R_BRACKET, TokenType.R_BRACE))
_NAME_TEXT = re.compile(r"[\w$#@]+")
# Dialects whose ALTER TABLE behaves like MySQL's: MODIFY/CHANGE restate the whole column, and dropping
# a column shrinks the keys it was part of.
MYSQL_LIKE = frozenset(("mysql", "mariadb", "singlestore", "doris", "starrocks", "tidb"))
_CONSTRAINT_WORDS = frozenset(
    ("CONSTRAINT", "PRIMARY", "UNIQUE", "FOREIGN", "CHECK", "EXCLUDE", "INDEX", "KEY", "FULLTEXT", "SPATIAL")
)
_ACTIONS = frozenset(("ADD", "DROP", "ALTER", "MODIFY", "CHANGE", "RENAME"))

# Table options: the leading words of actions that change nothing the schema shows. Counted in
# `dropped` as "ALTER TABLE <words>" (a trailing "(" is not part of the label).
_OPTIONS = tuple(
    tuple(p.split())
    for p in (
        # PostgreSQL
        "OWNER TO",
        "SET TABLESPACE",
        "SET LOGGED",
        "SET UNLOGGED",
        "SET WITHOUT CLUSTER",
        "SET WITHOUT OIDS",
        "SET WITH OIDS",
        "SET ACCESS METHOD",
        "SET (",
        "RESET (",
        "CLUSTER ON",
        "REPLICA IDENTITY",
        "ENABLE TRIGGER",
        "ENABLE ALWAYS TRIGGER",
        "ENABLE REPLICA TRIGGER",
        "ENABLE RULE",
        "ENABLE ALWAYS RULE",
        "ENABLE REPLICA RULE",
        "ENABLE ROW LEVEL SECURITY",
        "DISABLE TRIGGER",
        "DISABLE RULE",
        "DISABLE ROW LEVEL SECURITY",
        "FORCE ROW LEVEL SECURITY",
        "NO FORCE ROW LEVEL SECURITY",
        "ATTACH PARTITION",
        "DETACH PARTITION",
        "INHERIT",
        "NO INHERIT",
        "OF",
        "NOT OF",
        "VALIDATE CONSTRAINT",
        "ALTER CONSTRAINT",
        # T-SQL
        "CHECK CONSTRAINT",
        "NOCHECK CONSTRAINT",
        "WITH CHECK CHECK CONSTRAINT",
        "WITH NOCHECK CHECK CONSTRAINT",
        "WITH CHECK NOCHECK CONSTRAINT",
        "WITH NOCHECK NOCHECK CONSTRAINT",
        "ENABLE CHANGE_TRACKING",
        "DISABLE CHANGE_TRACKING",
        "SWITCH",
        "REBUILD",
        # MySQL
        "ENGINE",
        "AUTO_INCREMENT",
        "DEFAULT CHARSET",
        "DEFAULT CHARACTER SET",
        "DEFAULT COLLATE",
        "CHARSET",
        "CHARACTER SET",
        "COLLATE",
        "COMMENT",
        "ROW_FORMAT",
        "KEY_BLOCK_SIZE",
        "STATS_PERSISTENT",
        "STATS_AUTO_RECALC",
        "STATS_SAMPLE_PAGES",
        "PACK_KEYS",
        "CHECKSUM",
        "DELAY_KEY_WRITE",
        "AVG_ROW_LENGTH",
        "MAX_ROWS",
        "MIN_ROWS",
        "INSERT_METHOD",
        "UNION",
        "ENCRYPTION",
        "COMPRESSION",
        "DATA DIRECTORY",
        "INDEX DIRECTORY",
        "TABLESPACE",
        "SECONDARY_ENGINE",
        "SECONDARY_ENGINE_ATTRIBUTE",
        "ENGINE_ATTRIBUTE",
        "AUTOEXTEND_SIZE",
        "SECONDARY_LOAD",
        "SECONDARY_UNLOAD",
        "ALGORITHM",
        "LOCK",
        "FORCE",
        "CONVERT TO",
        "ENABLE KEYS",
        "DISABLE KEYS",
        "ORDER BY",
        "DISCARD TABLESPACE",
        "IMPORT TABLESPACE",
        "PARTITION BY",
        "REMOVE PARTITIONING",
        "UPGRADE PARTITIONING",
        "ADD PARTITION",
        "DROP PARTITION",
        "DISCARD PARTITION",
        "IMPORT PARTITION",
        "TRUNCATE PARTITION",
        "COALESCE PARTITION",
        "REORGANIZE PARTITION",
        "EXCHANGE PARTITION",
        "ANALYZE PARTITION",
        "CHECK PARTITION",
        "OPTIMIZE PARTITION",
        "REBUILD PARTITION",
        "REPAIR PARTITION",
        "ALTER INDEX",
        "ALTER CHECK",
        "ALTER PARTITION",
        # T-SQL system-versioning periods; PostgreSQL 18 temporal periods
        "ADD PERIOD",
        "DROP PERIOD",
    )
)
# Per-column options of ALTER [COLUMN] c ...: storage, statistics, visibility, identity sequence options.
_COLUMN_OPTIONS = tuple(
    tuple(p.split())
    for p in (
        "SET STATISTICS",
        "SET STORAGE",
        "SET COMPRESSION",
        "SET (",
        "RESET (",
        "OPTIONS (",
        "SET VISIBLE",
        "SET INVISIBLE",
        "SET GENERATED",
        "SET INCREMENT",
        "SET START",
        "SET MINVALUE",
        "SET MAXVALUE",
        "SET NO",
        "SET CACHE",
        "SET CYCLE",
        "SET SEQUENCE",
        "RESTART",
        "ADD ROWGUIDCOL",
        "DROP ROWGUIDCOL",
        "ADD PERSISTED",
        "DROP PERSISTED",
        "ADD NOT FOR REPLICATION",
        "DROP NOT FOR REPLICATION",
        "ADD SPARSE",
        "DROP SPARSE",
        "ADD MASKED",
        "DROP MASKED",
        "ADD HIDDEN",
        "DROP HIDDEN",
    )
)


@dataclass
class _Action:
    """One comma-separated action: its tokens and its span in the statement text."""

    tokens: list[Token]
    start: int  # offset of its first character
    end: int  # offset of the comma after it, or the end of the statement

    def word(self, i: int) -> str:
        """Token i as an upper-case keyword ("" past the end, for strings and quoted names)."""
        if i >= len(self.tokens):
            return ""
        tok = self.tokens[i]
        if tok.token_type == TokenType.IDENTIFIER or tok.token_type in _STRINGS:
            return ""
        return tok.text.upper()

    def starts(self, words: tuple[str, ...], at: int = 0) -> bool:
        return all(self.word(at + i) == w for i, w in enumerate(words))


def _is_name(tok: Token | None) -> bool:
    if tok is None:
        return False
    if tok.token_type == TokenType.IDENTIFIER:
        return True
    return tok.token_type not in _STRINGS and bool(_NAME_TEXT.fullmatch(tok.text))


def split_words(text: str, tokens: list[Token]) -> list[Token]:
    """The tokens, with keywords the tokenizer reads as one token (`PRIMARY KEY`, `FOREIGN KEY`,
    `ORDER BY`, ...) split into one token per word, so actions can be read word by word."""
    out = []
    for tok in tokens:
        raw = text[tok.start : tok.end + 1]
        if tok.token_type in _STRINGS or tok.token_type == TokenType.IDENTIFIER or not re.search(r"\s", raw):
            out.append(tok)
            continue
        for m in re.finditer(r"\S+", raw):
            start = tok.start + m.start()
            out.append(
                Token(TokenType.VAR, m.group(), tok.line, tok.col, start, start + len(m.group()) - 1, [])
            )
    return out


def _depth_split(tokens: list[Token]) -> list[list[Token]]:
    """Split tokens at commas outside parentheses; separators are kept as the last token of a part."""
    parts: list[list[Token]] = [[]]
    depth = 0
    for tok in tokens:
        if tok.token_type in _OPEN:
            depth += 1
        elif tok.token_type in _CLOSE:
            depth -= 1
        if tok.token_type == TokenType.COMMA and depth == 0:
            parts[-1].append(tok)
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


def offset_position(stmt: Statement, offset: int) -> tuple[int, int]:
    """File line and column of a character offset in `stmt.text`."""
    before = stmt.text[:offset]
    line = stmt.line + before.count("\n")
    if "\n" in before:
        return line, offset - before.rfind("\n")
    return line, stmt.col + offset


def fragment(
    stmt: Statement, text: str, start: int, end: int, prefix: str = "", suffix: str = ""
) -> Statement:
    """`text[start:end]` as a statement of its own, `prefix` and `suffix` (one line each) added
    around it; positions inside the original part still map to the file."""
    line, col = offset_position(stmt, start)
    return Statement(prefix + text[start:end] + suffix, line, col - len(prefix), schema=stmt.schema)


def apply_alter(b, stmt: Statement) -> None:
    """Replay one ALTER TABLE statement on the schema `b` (a `build._Builder`) is building (see the
    module docstring). Raises `DDLError` at the offending action for what cannot be applied
    faithfully."""
    text = b.prepare(stmt.text)
    _Alter(b, stmt, text, split_words(text, b.tokens(stmt, text))).run()


class _Alter:
    def __init__(self, b, stmt: Statement, text: str, tokens: list[Token]):
        self.b = b
        self.stmt = stmt
        self.text = text
        self.tokens = tokens
        self.schema = b.out.schema
        self.mysql = b.read in MYSQL_LIKE
        self.table: Table | None = None

    # ---- errors and parsing -------------------------------------------------------------------
    def fail(self, reason: str, offset: int) -> DDLError:
        line, col = offset_position(self.stmt, offset)
        return DDLError(reason, file=self.b.source, line=line, col=col)

    def part(self, act: _Action, i: int, j: int | None = None) -> tuple[int, int]:
        """Text span from token i of the action to token j (exclusive; None: the action's end)."""
        start = act.tokens[i].start if i < len(act.tokens) else act.end
        end = act.end if j is None or j >= len(act.tokens) else act.tokens[j].start
        return start, end

    def parse_table_part(self, start: int, end: int, prefix: str = "CREATE TABLE _ (", suffix: str = ")"):
        """Parse `text[start:end]` as the inside of a CREATE TABLE column list: its elements (column
        definitions, keys) and the statement positions map through."""
        sub = fragment(self.stmt, self.text, start, end, prefix, suffix)
        with self.located(sub, start):
            tree = self.b.read_create(sub, owner=str(self.table.name))  # with the CREATE TABLE fallback
        schema = tree.this
        if not isinstance(schema, exp.Schema) or not schema.expressions:
            raise self.fail(
                "cannot read this part of ALTER TABLE (sqlglot fell back to a raw command)", start
            )
        return sub, schema.expressions

    def parse_expression(self, start: int, end: int) -> exp.Expr:
        sub = fragment(self.stmt, self.text, start, end, "SELECT ")
        with self.located(sub, start):
            tree = self.b.parse(sub, sub.text)
        if not isinstance(tree, exp.Select) or len(tree.expressions) != 1 or tree.args.get("from_"):
            raise self.fail("cannot read this expression", start)
        return tree.expressions[0]

    @contextlib.contextmanager
    def located(self, sub: Statement, start: int):
        """An error a fragment's parser places at the fragment's own start (that is, on the synthetic
        prefix) is moved to where the part starts in the statement."""
        try:
            yield
        except DDLError as err:
            if (err.line, err.col) != (sub.line, sub.col):
                raise
            raise self.fail(err.reason, start) from None

    def name_at(self, act: _Action, i: int, what: str = "a name") -> tuple[str, bool]:
        tok = act.tokens[i] if i < len(act.tokens) else None
        if not _is_name(tok):
            raise self.fail(f"expected {what} here", tok.start if tok else act.end)
        return tok.text, tok.token_type == TokenType.IDENTIFIER

    def qualified_at(self, act: _Action, i: int) -> tuple[QualifiedName, int]:
        """A possibly qualified table name starting at token i, and the index after it."""
        parts = [self.name_at(act, i, "a table name")]
        i += 1
        while i < len(act.tokens) and act.tokens[i].token_type == TokenType.DOT:
            parts.append(self.name_at(act, i + 1, "a table name"))
            i += 2
        (name, quoted), schema = parts[-1], (parts[-2][0] if len(parts) > 1 else None)
        return QualifiedName(name, schema, quoted), i

    def column_of(self, act: _Action, i: int) -> Column:
        name, _ = self.name_at(act, i, "a column name")
        column = self.table.column(name)
        if column is None:
            raise self.fail(f"table {self.table.name} has no column {name!r}", act.tokens[i].start)
        return column

    # ---- the statement ------------------------------------------------------------------------
    def run(self) -> None:
        header = _Action(self.tokens, 0, len(self.text))
        i = 1
        while header.word(i) in ("ONLINE", "OFFLINE", "IGNORE"):
            i += 1
        if header.word(0) != "ALTER" or header.word(i) != "TABLE":
            raise self.fail("cannot read this ALTER TABLE", 0)
        i += 1
        if_exists = header.starts(("IF", "EXISTS"), i)
        i += 2 if if_exists else 0
        if header.word(i) == "ONLY" and _is_name(self.tokens[i + 1] if i + 1 < len(self.tokens) else None):
            if header.word(i + 1) not in _ACTIONS or header.word(i + 2) in ("", "."):
                i += 1
        name, i = self.qualified_at(header, i)
        name = QualifiedName(name.name, name.schema or self.stmt.schema, name.quoted)
        if i < len(self.tokens) and self.tokens[i].token_type == TokenType.STAR:
            i += 1  # PostgreSQL: the table and its descendants
        actions = self.split(i)
        if not actions:
            raise self.fail("ALTER TABLE without an action", len(self.text.rstrip()))
        if all(self.option_label(a) for a in actions):
            for a in actions:  # options only: the table need not be in the input (pg_dump's sequences)
                self.b.out.dropped[self.option_label(a)] += 1
            return
        if if_exists and self.schema.find(name) is None:
            self.b.out.dropped["ALTER TABLE IF EXISTS of a table not in the input"] += 1
            return
        self.table = self.b.table_for(self.stmt, name)
        prev = ""
        for act in actions:
            prev = self.action(act, prev)
        self.b.check_table(self.stmt, self.table)

    def split(self, i: int) -> list[_Action]:
        """The actions after the header, split at top-level commas (an empty one is an error)."""
        actions = []
        for part in _depth_split(self.tokens[i:]):
            sep = part[-1] if part and part[-1].token_type == TokenType.COMMA else None
            toks = part[:-1] if sep is not None else part
            if not toks:
                if sep is None and not actions:
                    break  # nothing after the header
                at = sep.start if sep is not None else len(self.text.rstrip())
                raise self.fail("empty element in a list of ALTER TABLE actions", at)
            actions.append(_Action(toks, toks[0].start, sep.start if sep is not None else len(self.text)))
        return actions

    def option_label(self, act: _Action) -> str | None:
        """`ALTER TABLE <words>` when the action is a table option, else None."""
        for words in _OPTIONS:
            if act.starts(words):
                return "ALTER TABLE " + " ".join(w for w in words if w != "(")
        return None

    def action(self, act: _Action, prev: str) -> str:
        """Apply one action; returns its kind, which a T-SQL continuation (`ADD a int, b int`,
        `DROP COLUMN a, b`) repeats."""
        head = act.word(0)
        label = self.option_label(act)
        if label is not None:
            self.b.out.dropped[label] += 1
            return "option"
        if head == "ADD":
            return self.add(act, 1)
        if head == "DROP":
            return self.drop(act, 1)
        if head == "ALTER":
            self.alter_column(act)
        elif head == "MODIFY":
            self.modify(act)
        elif head == "CHANGE":
            self.change(act)
        elif head == "RENAME":
            self.rename(act)
        elif act.starts(("SET", "SCHEMA")):
            new = QualifiedName(self.table.name.name, self.name_at(act, 2)[0], self.table.name.quoted)
            self.rename_table(new, act)
            self.applied("SET SCHEMA")
        elif self.b.read == "tsql" and prev in ("ADD COLUMN", "ADD CONSTRAINT") and _is_name(act.tokens[0]):
            return self.add(act, 0)
        elif self.b.read == "tsql" and prev in ("DROP COLUMN", "DROP CONSTRAINT") and _is_name(act.tokens[0]):
            return self.drop(act, 0, bare=prev)
        else:
            raise self.fail(
                "ALTER TABLE action this normalizer cannot read (sqlglot fell back to a raw command): "
                f"{self.text[act.start : act.end].strip()[:60]!r}",
                act.start,
            )
        return head

    def applied(self, kind: str) -> None:
        self.b.out.applied[kind] += 1

    # ---- ADD ----------------------------------------------------------------------------------
    def add(self, act: _Action, i: int) -> str:
        """ADD COLUMN / ADD (defs) / ADD constraint / T-SQL ADD DEFAULT ... FOR c, from token i."""
        w = act.word(i)
        if w == "CONSTRAINT" and act.word(i + 2) == "DEFAULT" or w == "DEFAULT":
            self.default_for(act, i)
            return "ADD CONSTRAINT"
        if w in _CONSTRAINT_WORDS:
            words = [act.word(k) for k in range(i, len(act.tokens))]
            if any(
                words[k : k + 2] == ["USING", "INDEX"] and words[k + 2 : k + 3] != ["TABLESPACE"]
                for k in range(len(words))
            ):
                raise self.fail(
                    "a key built on an existing index (USING INDEX): its columns are not stated here",
                    act.tokens[i].start,
                )
            start, end = self.part(act, i)
            sub, items = self.parse_table_part(start, end)
            for item in items:
                self.add_constraint(sub, item)
            if not all(isinstance(item, exp.IndexColumnConstraint) for item in items):
                self.applied("ADD CONSTRAINT")
            return "ADD CONSTRAINT"
        if w == "COLUMN":
            i += 1
        if act.word(i) == "(":  # MySQL / Oracle: ADD [COLUMN] (a int, b int)
            start, end = self.part(act, i)
            sub, items = self.parse_table_part(start, end, prefix="CREATE TABLE _ ", suffix="")
            for item in items:
                if isinstance(item, (exp.ColumnDef, exp.Identifier)):
                    self.add_column(sub, item, False, None)
                else:
                    self.add_constraint(sub, item)
            return "ADD COLUMN"
        if_not_exists = act.starts(("IF", "NOT", "EXISTS"), i)
        if if_not_exists:
            i += 3
        j, position = self.position(act)
        start, end = self.part(act, i, j)
        sub, items = self.parse_table_part(start, end)
        if len(items) != 1 or not isinstance(items[0], (exp.ColumnDef, exp.Identifier)):
            raise self.fail("expected one column definition", start)
        self.add_column(sub, items[0], if_not_exists, position)
        return "ADD COLUMN"

    def add_column(self, sub: Statement, item: exp.Expr, if_not_exists: bool, position) -> None:
        name = item.name if isinstance(item, exp.Identifier) else item.this.name
        if any(c.name == name for c in self.table.columns):
            if if_not_exists:
                self.applied("ADD COLUMN")
                return
            node = item if isinstance(item, exp.Identifier) else item.this
            raise self.b.error_at(f"duplicate column {name!r} in table {self.table.name}", sub, node)
        column = self.b.column(sub, self.table, item)
        self.table.columns.append(column)
        self.place(column, position)
        self.applied("ADD COLUMN")

    def add_constraint(self, sub: Statement, item: exp.Expr) -> None:
        if isinstance(item, exp.IndexColumnConstraint):  # a plain index: not part of the schema text
            self.b.out.dropped["ALTER TABLE ADD INDEX"] += 1
            return
        self.b.table_constraint(sub, self.table, item)

    def default_for(self, act: _Action, i: int) -> None:
        """T-SQL `ADD [CONSTRAINT n] DEFAULT expr FOR column`."""
        name = None
        if act.word(i) == "CONSTRAINT":
            name = self.name_at(act, i + 1, "a constraint name")[0]
            i += 2
        fors = [k for k in range(i + 1, len(act.tokens)) if act.word(k) == "FOR"]
        if not fors or fors[-1] != len(act.tokens) - 2:
            raise self.fail("expected DEFAULT expression FOR column", act.tokens[i].start)
        column = self.column_of(act, fors[-1] + 1)
        start, end = self.part(act, i + 1, fors[-1])
        self.b.set_default(column, self.parse_expression(start, end))
        if name:
            self.table.constraint_names[name.lower()] = ("default", column)
        self.applied("SET DEFAULT")

    def position(self, act: _Action) -> tuple[int | None, object]:
        """MySQL's trailing `FIRST` / `AFTER c`: (index of its first token or None, "first" | column)."""
        n = len(act.tokens)
        if act.word(n - 1) == "FIRST":
            return n - 1, "first"
        if n >= 2 and act.word(n - 2) == "AFTER":
            return n - 2, self.column_of(act, n - 1)
        return None, None

    def place(self, column: Column, position) -> None:
        if position is None:
            return
        del self.table.columns[_index(self.table.columns, column)]
        at = 0 if position == "first" else _index(self.table.columns, position) + 1
        self.table.columns.insert(at, column)

    # ---- DROP ---------------------------------------------------------------------------------
    def drop(self, act: _Action, i: int, bare: str = "DROP COLUMN") -> str:
        """DROP ... from token i; `bare` says what a bare name is (T-SQL `DROP CONSTRAINT a, b`)."""
        w = act.word(i)
        if w == "CONSTRAINT" or (bare == "DROP CONSTRAINT" and w != "COLUMN"):
            i += 1 if w == "CONSTRAINT" else 0
            if_exists = act.starts(("IF", "EXISTS"), i)
            i += 2 if if_exists else 0
            name, _ = self.name_at(act, i, "a constraint name")
            self.drop_named(name, None, if_exists, act.tokens[i].start)
            return "DROP CONSTRAINT"
        if act.starts(("PRIMARY", "KEY"), i):
            if not self.table.primary_key:
                raise self.fail(f"table {self.table.name} has no primary key to drop", act.start)
            self.drop_primary_key()
            self.applied("DROP CONSTRAINT")
            return "DROP CONSTRAINT"
        if act.starts(("FOREIGN", "KEY"), i):
            name, _ = self.name_at(act, i + 2, "a constraint name")
            self.drop_named(name, "foreign key", False, act.tokens[i + 2].start)
            return "DROP CONSTRAINT"
        if w in ("INDEX", "KEY", "CHECK") and _is_name(_at(act, i + 1)) and len(act.tokens) == i + 2:
            name, _ = self.name_at(act, i + 1)
            found = self.find_constraint(name)
            if w == "CHECK":
                self.drop_named(name, "check", False, act.tokens[i + 1].start)
            elif found is not None and found[0] in ("unique", "primary key"):
                self.drop_named(name, None, False, act.tokens[i + 1].start)
            else:  # a plain index: never part of the schema text
                self.b.out.dropped["ALTER TABLE DROP INDEX"] += 1
            return "DROP CONSTRAINT"
        i += 1 if w == "COLUMN" else 0
        if act.word(i) == "(":  # Oracle: DROP (a, b) [CASCADE CONSTRAINTS]
            close = next((k for k in range(i, len(act.tokens)) if act.word(k) == ")"), len(act.tokens))
            for k in range(i + 1, close, 2):
                self.drop_column(
                    self.column_of(act, k), act.word(close + 1) == "CASCADE", act.tokens[k].start
                )
                self.applied("DROP COLUMN")
            return "DROP COLUMN"
        if_exists = act.starts(("IF", "EXISTS"), i)
        i += 2 if if_exists else 0
        name, _ = self.name_at(act, i, "a column name")
        rest = act.word(i + 1)
        if rest not in ("", "CASCADE", "RESTRICT") or i + 2 < len(act.tokens):
            raise self.fail(
                f"cannot read this DROP action: {self.text[act.start : act.end].strip()[:60]!r}", act.start
            )
        column = self.table.column(name)
        if column is None and not if_exists:
            raise self.fail(
                f"DROP COLUMN of unknown column {name!r} of {self.table.name}", act.tokens[i].start
            )
        if column is not None:
            self.drop_column(column, rest == "CASCADE", act.tokens[i].start)
        self.applied("DROP COLUMN")
        return "DROP COLUMN"

    def drop_column(self, column: Column, cascade: bool, at: int) -> None:
        """Drop a column and what depends on it (see the module docstring)."""
        table = self.table
        dependents = [
            c
            for c in table.columns
            if c is not column and c.computed is not None and self.mentions(c.computed, column)
        ]
        if dependents and not cascade:
            raise self.fail(
                f"cannot drop column {column.name!r} of {table.name}: generated column "
                f"{dependents[0].name!r} is computed from it (CASCADE would drop that too)",
                at,
            )
        for dep in dependents:
            if _holds(table.columns, dep):
                self.drop_column(dep, cascade, at)
        before = self.keyed()
        self.freeze_references()
        for other, fk in self.references():
            if _holds(self.referenced(fk), column):
                self.remove_fk(other, fk, f"it references {table.name}.{column.name}, which is dropped")
        if _holds(self.resolve(table.primary_key), column):
            if self.mysql:
                table.primary_key = [n for n in table.primary_key if table.column(n) is not column]
            else:
                self.key_columns_stay_not_null()
                table.primary_key = []
                self.forget("primary key")
        kept = []
        for u in table.uniques:
            if not _holds(self.resolve(u), column):
                kept.append(u)
            elif self.mysql:
                u[:] = [n for n in u if table.column(n) is not column]
                if u:
                    kept.append(u)
        table.uniques = kept
        table.foreign_keys = [fk for fk in table.foreign_keys if not _holds(self.resolve(fk.columns), column)]
        table.checks = [c for c in table.checks if not self.mentions(c, column)]
        for c in table.columns:
            c.checks = [x for x in c.checks if not self.mentions(x, column)]
        del table.columns[_index(table.columns, column)]
        if not table.columns:
            raise self.fail(f"dropping column {column.name!r} leaves table {table.name} without columns", at)
        self.release_keys(before)
        self.prune()

    def drop_named(self, name: str, kind: str | None, if_exists: bool, at: int) -> None:
        """Drop the constraint `name` denotes (of `kind` when given; see `find_constraint`)."""
        found = self.find_constraint(name)
        if found is None or (kind is not None and found[0] != kind):
            if if_exists:
                self.applied("DROP CONSTRAINT")
                return
            raise self.fail(
                f"DROP CONSTRAINT {name}: table {self.table.name} has no {kind or 'constraint'} of that name "
                "(a name the database chose itself cannot be known here)",
                at,
            )
        what, obj = found
        table = self.table
        before = self.keyed()
        if what == "primary key":
            self.drop_primary_key()
        elif what == "unique" and isinstance(obj, Column):
            obj.unique = False
        elif what == "unique":
            table.uniques = [u for u in table.uniques if u is not obj]
        elif what == "foreign key":
            table.foreign_keys = [fk for fk in table.foreign_keys if fk is not obj]
        elif what == "check":
            table.checks = [c for c in table.checks if c is not obj]
            for c in table.columns:
                c.checks = [x for x in c.checks if x is not obj]
        elif what == "default":
            obj.default = None
        elif what == "not null":
            obj.not_null = False
        table.constraint_names.pop(name.lower(), None)
        self.release_keys(before)
        self.prune()
        self.applied("DROP CONSTRAINT")

    def drop_primary_key(self) -> None:
        before = self.keyed()
        self.freeze_references()
        self.key_columns_stay_not_null()
        self.table.primary_key = []
        self.forget("primary key")
        self.release_keys(before)

    # ---- RENAME -------------------------------------------------------------------------------
    def rename(self, act: _Action) -> None:
        w = act.word(1)
        if w in ("CONSTRAINT", "INDEX", "KEY"):
            old, _ = self.name_at(act, 2)
            new, _ = self.name_at(act, 4)
            if act.word(3) != "TO" or len(act.tokens) != 5:
                raise self.fail("expected RENAME CONSTRAINT old TO new", act.start)
            found = self.find_constraint(old)
            if found is None and w == "CONSTRAINT":
                raise self.fail(
                    f"RENAME CONSTRAINT {old}: table {self.table.name} has no such constraint", act.start
                )
            if found is None:  # a plain index
                self.b.out.dropped["ALTER TABLE RENAME INDEX"] += 1
                return
            self.table.constraint_names.pop(old.lower(), None)
            self.table.constraint_names[new.lower()] = found
            self.applied("RENAME CONSTRAINT")
            return
        if w == "COLUMN" or (act.word(2) == "TO" and len(act.tokens) == 4 and w not in ("TO", "AS")):
            i = 2 if w == "COLUMN" else 1
            column = self.column_of(act, i)
            if act.word(i + 1) != "TO" or len(act.tokens) != i + 3:
                raise self.fail("expected RENAME COLUMN old TO new", act.start)
            new, quoted = self.name_at(act, i + 2, "a column name")
            self.rename_column(column, new, quoted, act.tokens[i + 2].start)
            self.applied("RENAME COLUMN")
            return
        i = 2 if w in ("TO", "AS") else 1
        new, end = self.qualified_at(act, i)
        if end != len(act.tokens):
            raise self.fail("expected RENAME TO new_name", act.tokens[end].start)
        schema = new.schema if new.schema is not None else self.table.name.schema
        self.rename_table(QualifiedName(new.name, schema, new.quoted), act)
        self.applied("RENAME TO")

    def rename_column(self, column: Column, new: str, quoted: bool, at: int) -> None:
        """Rename a column everywhere it is named: keys, checks, generated columns, references."""
        table = self.table
        clash = table.column(new)
        if clash is not None and clash is not column and clash.name == new:
            raise self.fail(f"table {table.name} already has a column {new!r}", at)

        def renamed(names: list[str]) -> list[str]:
            return [new if table.column(n) is column else n for n in names]

        refs = [fk for _, fk in self.references() if _holds(self.referenced(fk), column) and fk.ref_columns]
        for fk in refs:
            fk.ref_columns[:] = renamed(fk.ref_columns)
        table.primary_key = renamed(table.primary_key)
        for u in table.uniques:
            u[:] = renamed(u)
        for fk in table.foreign_keys:
            fk.columns[:] = renamed(fk.columns)
        exprs = [*table.checks, *(x for c in table.columns for x in c.checks)]
        exprs += [c.computed for c in table.columns if c.computed is not None]
        for expr in exprs:
            for ref in list(expr.find_all(exp.Column)):
                if table.column(ref.name) is column and ref.table in ("", table.name.name):
                    ref.set("this", exp.to_identifier(new, quoted=quoted))
        column.name, column.quoted = new, quoted

    def rename_table(self, new: QualifiedName, act: _Action) -> None:
        """Rename the table, and every reference to it (foreign keys, INHERITS / PARTITION OF)."""
        table = self.table
        other = self.schema.find(new)
        if other is not None and other is not table and other.name.name == new.name:
            raise self.fail(f"RENAME TO {new}: that table already exists", act.start)
        refs = [fk for _, fk in self.references()]
        children = [
            t for t in self.schema.tables if t.parent is not None and self.schema.find(t.parent) is table
        ]
        for fk in refs:
            fk.ref_table = new
        for child in children:
            child.parent = new
        seen = self.b.seen
        for key, value in list(seen.items()):
            if value is table:
                del seen[key]
        seen[(new.schema, new.name)] = table
        table.name = new

    # ---- ALTER COLUMN, MODIFY, CHANGE ---------------------------------------------------------
    def alter_column(self, act: _Action) -> None:
        i = 2 if act.word(1) == "COLUMN" else 1
        column = self.column_of(act, i)
        i += 1
        for words in _COLUMN_OPTIONS:
            if act.starts(words, i):
                label = " ".join(w for w in words if w != "(")
                self.b.out.dropped[f"ALTER TABLE ALTER COLUMN {label}"] += 1
                return
        if act.word(i) == "TYPE" or act.starts(("SET", "DATA", "TYPE"), i):
            i += 1 if act.word(i) == "TYPE" else 3
            using = next((k for k in range(i, len(act.tokens)) if act.word(k) == "USING"), None)
            self.retype(column, act, i, using)
            self.applied("ALTER COLUMN TYPE")
        elif act.starts(("SET", "DEFAULT"), i):
            start, end = self.part(act, i + 2)
            self.b.set_default(column, self.parse_expression(start, end))
            self.applied("SET DEFAULT")
        elif act.starts(("DROP", "DEFAULT"), i):
            column.default = None
            self.applied("DROP DEFAULT")
        elif act.starts(("SET", "NOT", "NULL"), i):
            column.not_null = True
            self.applied("SET NOT NULL")
        elif act.starts(("DROP", "NOT", "NULL"), i):
            column.not_null = False
            self.applied("DROP NOT NULL")
        elif act.starts(("ADD", "GENERATED"), i) and "IDENTITY" in (
            act.word(k) for k in range(i, len(act.tokens))
        ):
            column.identity = True
            self.applied("ADD IDENTITY")
        elif act.starts(("DROP", "IDENTITY"), i):
            column.identity = False
            self.applied("DROP IDENTITY")
        elif act.starts(("DROP", "EXPRESSION"), i):
            column.computed = None
            self.applied("DROP EXPRESSION")
        elif i < len(act.tokens) and act.word(i) not in ("SET", "DROP", "ADD"):
            self.redefine(act, column, i - 1, None, "tsql")  # T-SQL: ALTER COLUMN c type [NULL | NOT NULL]
            self.applied("ALTER COLUMN TYPE")
        else:
            raise self.fail(
                f"cannot read this ALTER COLUMN action: {self.text[act.start : act.end].strip()[:60]!r}",
                act.start,
            )

    def retype(self, column: Column, act: _Action, i: int, using: int | None) -> None:
        """PostgreSQL `TYPE t [COLLATE c] [USING e]`: the type, read as a column definition's would be
        (enum and domain names resolve)."""
        start, end = self.part(act, i, using)
        name = exp.to_identifier(column.name, quoted=True).sql(dialect=self.b.read)
        sub, items = self.parse_table_part(start, end, prefix=f"CREATE TABLE _ ({name} ")
        probe = self.b.column(sub, Table(self.table.name, []), items[0])
        if probe.dtype is None:
            raise self.fail("expected a type", start)
        column.dtype = probe.dtype
        column.not_null = column.not_null or probe.not_null  # a domain's NOT NULL
        column.checks += [c for c in probe.checks if c not in column.checks]

    def modify(self, act: _Action) -> None:
        """MODIFY [COLUMN] def | MODIFY (def, ...) (Oracle)."""
        i = 2 if act.word(1) == "COLUMN" else 1
        if act.word(i) == "(":
            start, end = self.part(act, i)
            sub, items = self.parse_table_part(start, end, prefix="CREATE TABLE _ ", suffix="")
            for item in items:
                column = self.table.column(item.name if isinstance(item, exp.Identifier) else item.this.name)
                if column is None or not isinstance(item, (exp.ColumnDef, exp.Identifier)):
                    raise self.b.error_at("MODIFY of an unknown column", sub, item)
                self.apply_definition(sub, column, item, "partial")
            self.applied("MODIFY")
            return
        column = self.column_of(act, i)
        self.redefine(act, column, i, self.position(act), "mysql" if self.mysql else "partial")
        self.applied("MODIFY")

    def change(self, act: _Action) -> None:
        """MySQL CHANGE [COLUMN] old new_def [FIRST | AFTER c]: rename, then restate."""
        i = 2 if act.word(1) == "COLUMN" else 1
        column = self.column_of(act, i)
        new, quoted = self.name_at(act, i + 1, "a column name")
        if new != column.name:
            self.rename_column(column, new, quoted, act.tokens[i + 1].start)
        self.redefine(act, column, i + 1, self.position(act), "mysql")
        self.applied("CHANGE")

    def redefine(self, act: _Action, column: Column, i: int, position, how: str) -> None:
        """Restate `column` from the definition that starts at token i (its name)."""
        j, where = position if position is not None else (None, None)
        start, end = self.part(act, i, j)
        sub, items = self.parse_table_part(start, end)
        if len(items) != 1 or not isinstance(items[0], (exp.ColumnDef, exp.Identifier)):
            raise self.fail("expected one column definition", start)
        self.apply_definition(sub, column, items[0], how)
        self.place(column, where)

    def apply_definition(self, sub: Statement, column: Column, item: exp.Expr, how: str) -> None:
        """Apply a restated column definition. "mysql": it replaces the old one (keys and checks,
        which are table objects, stay); "tsql": type and nullability; "partial" (Oracle): what it
        states."""
        new = self.b.column(sub, self.table, item)
        stated = {type(c.args.get("kind")) for c in (item.args.get("constraints") or [])}
        if how == "partial":
            if new.dtype is not None:
                column.dtype = new.dtype
            if exp.NotNullColumnConstraint in stated:
                column.not_null = new.not_null
            if exp.DefaultColumnConstraint in stated:
                column.default = new.default
            column.checks += [c for c in new.checks if c not in column.checks]
            return
        if new.dtype is None:
            raise self.b.error_at(f"the new definition of {column.name!r} has no type", sub, item)
        column.dtype, column.not_null = new.dtype, new.not_null
        if how == "mysql":
            column.default, column.identity, column.computed = new.default, new.identity, new.computed
            column.comment = new.comment
            column.unique = column.unique or new.unique
            column.checks += [c for c in new.checks if c not in column.checks]

    def key_columns_stay_not_null(self) -> None:
        """A primary key made its columns NOT NULL; dropping the key leaves them so (PostgreSQL,
        MySQL)."""
        for c in self.resolve(self.table.primary_key):
            if c is not None:
                c.not_null = True

    # ---- what depends on what -----------------------------------------------------------------
    def resolve(self, names: list[str], table: Table | None = None) -> list[Column | None]:
        table = table or self.table
        return [table.column(n) for n in names]

    def mentions(self, expr: exp.Expr, column: Column) -> bool:
        return any(self.table.column(ref.name) is column for ref in expr.find_all(exp.Column))

    def references(self) -> list[tuple[Table, ForeignKey]]:
        """Every foreign key (of any table, this one included) that references this table."""
        return [
            (t, fk)
            for t in self.schema.tables
            for fk in t.foreign_keys
            if self.schema.find(fk.ref_table) is self.table
        ]

    def referenced(self, fk: ForeignKey) -> list[Column | None]:
        """The columns of this table a foreign key references (its primary key when unnamed)."""
        return self.resolve(fk.ref_columns or self.table.primary_key)

    def freeze_references(self) -> None:
        """`REFERENCES t` without columns means t's primary key *now*: name the columns before the key
        changes (the printed result is the same, the reference resolves to them later anyway)."""
        for _, fk in self.references():
            if not fk.ref_columns and len(self.table.primary_key) == len(fk.columns):
                fk.ref_columns = list(self.table.primary_key)

    def keyed(self) -> list[set[int]]:
        """The column sets of this table a key makes unique (what a foreign key can reference)."""
        table = self.table
        keys = [self.resolve(table.primary_key), *(self.resolve(u) for u in table.uniques)]
        keys += [[c] for c in table.columns if c.unique]
        return [{id(c) for c in k} for k in keys if k]

    def release_keys(self, before: list[set]) -> None:
        """Drop other tables' foreign keys that referenced a key of this table that is gone (the
        database drops them with CASCADE, or refuses). Foreign keys that never referenced a key
        (MySQL allows any indexed columns) are left alone."""
        after = self.keyed()
        for other, fk in self.references():
            cols = self.referenced(fk)
            ids = {id(c) for c in cols}
            if cols and None not in cols and ids in before and ids not in after:
                self.remove_fk(other, fk, f"the key of {self.table.name} it references is dropped")

    def remove_fk(self, other: Table, fk: ForeignKey, why: str) -> None:
        other.foreign_keys = [f for f in other.foreign_keys if f is not fk]
        self.schema.warnings.append(
            f"{other.name}: foreign key ({', '.join(fk.columns)}) dropped: {why} (CASCADE semantics)"
        )
        for name, (_, obj) in list(other.constraint_names.items()):
            if obj is fk:
                del other.constraint_names[name]

    def forget(self, kind: str) -> None:
        for name, (k, _) in list(self.table.constraint_names.items()):
            if k == kind:
                del self.table.constraint_names[name]

    def prune(self) -> None:
        """Forget names of constraints that are gone."""
        table = self.table
        checks = [*table.checks, *(x for c in table.columns for x in c.checks)]

        def alive(kind: str, obj) -> bool:
            if kind == "primary key":
                return bool(table.primary_key)
            if kind == "foreign key":
                return any(fk is obj for fk in table.foreign_keys)
            if kind == "check":
                return any(c is obj for c in checks)
            if isinstance(obj, Column):
                return any(c is obj for c in table.columns) and (kind != "unique" or obj.unique)
            return any(u is obj for u in table.uniques)

        table.constraint_names = {n: v for n, v in table.constraint_names.items() if alive(*v)}

    # ---- constraint names ---------------------------------------------------------------------
    def find_constraint(self, name: str) -> tuple[str, object] | None:
        """The constraint a name denotes: one the input named, else one the database would have
        named so (PostgreSQL `t_pkey`, `t_a_b_key`, `t_a_fkey`, `t_a_check`, `t_a_not_null`; MySQL
        `PRIMARY`, `t_ibfk_N`, `t_chk_N`, a unique key named after its first column)."""
        found = self.table.constraint_names.get(name.lower())
        if found is not None:
            return found
        return self.generated_names().get(name.lower())

    def generated_names(self) -> dict[str, tuple[str, object]]:
        table = self.table
        named = {id(obj) for _, obj in table.constraint_names.values()}
        t = table.name.name.lower()
        out: dict[str, tuple[str, object]] = {}
        checks = [(x, c) for c in table.columns for x in c.checks] + [(x, None) for x in table.checks]
        if self.mysql:
            if table.primary_key:
                out["primary"] = ("primary key", None)
            unnamed = [fk for fk in table.foreign_keys if id(fk) not in named]
            for n, fk in enumerate(unnamed, 1):
                out[f"{t}_ibfk_{n}"] = ("foreign key", fk)
            for u in table.uniques:
                if id(u) not in named:
                    out.setdefault(u[0].lower(), ("unique", u))
            for c in table.columns:
                if c.unique and id(c) not in named:
                    out.setdefault(c.name.lower(), ("unique", c))
            for n, (x, _) in enumerate([(x, c) for x, c in checks if id(x) not in named], 1):
                out[f"{t}_chk_{n}"] = ("check", x)
            return out
        if table.primary_key:
            out[f"{t}_pkey"] = ("primary key", None)
        for u in table.uniques:
            out.setdefault(f"{t}_{'_'.join(u)}_key".lower(), ("unique", u))
        for c in table.columns:
            if c.unique:
                out.setdefault(f"{t}_{c.name}_key".lower(), ("unique", c))
            if c.not_null:
                out.setdefault(f"{t}_{c.name}_not_null".lower(), ("not null", c))
        for fk in table.foreign_keys:
            out.setdefault(f"{t}_{'_'.join(fk.columns)}_fkey".lower(), ("foreign key", fk))
        for x, c in checks:
            first = c.name if c is not None else next((r.name for r in x.find_all(exp.Column)), "")
            out.setdefault(f"{t}_{first}_check".lower() if first else f"{t}_check", ("check", x))
        return {k: v for k, v in out.items() if v[1] is None or id(v[1]) not in named}


def _holds(items: list, obj) -> bool:
    """Whether `obj` itself (not an equal copy) is in `items`."""
    return any(x is obj for x in items)


def _index(items: list, obj) -> int:
    return next(n for n, x in enumerate(items) if x is obj)


def _at(act: _Action, i: int) -> Token | None:
    return act.tokens[i] if i < len(act.tokens) else None
