"""Read statements into the table model: parse what is structure, count what is not.

Only statements that can change table structure are parsed (CREATE TABLE, ALTER TABLE, COMMENT ON,
CREATE TYPE ... AS ENUM, CREATE DOMAIN, sp_addextendedproperty); everything else is classified by
its leading words and counted, which keeps data-heavy dumps fast. Anything that would be lost or
misread raises `DDLError` with the file line and column. ALTER TABLE is replayed by `alter`; a CREATE
TABLE sqlglot cannot read goes through `fallback` before it is rejected.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.tokens import TokenType

from hive_core.errors import DDLError
from hive_data.ddl import fallback
from hive_data.ddl.alter import apply_alter
from hive_data.ddl.model import Column, ForeignKey, QualifiedName, Schema, Table
from hive_data.ddl.split import Statement

_CREATE_TABLE = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL|LOCAL)\s+)?"
    r"(?:(?:TEMPORARY|TEMP|UNLOGGED|TRANSIENT|VOLATILE)\s+)?TABLE\b",
    re.I,
)
_ALTER_TABLE = re.compile(r"ALTER\s+(?:(?:ONLINE|OFFLINE|IGNORE)\s+)*TABLE\b", re.I)
_COMMENT_ON = re.compile(r"COMMENT\s+ON\s+(\w+)", re.I)
_CREATE_SCHEMA_BODY = re.compile(
    r"CREATE\s+SCHEMA\s+(?:IF\s+NOT\s+EXISTS\s+)?(\"[^\"]+\"|`[^`]+`|\[[^\]]+\]|[\w$]+)"
    r"(?:\s+AUTHORIZATION\s+\S+)?\s+(?=(?:CREATE|GRANT)\b)",
    re.I,
)
_SCHEMA_BODY_PART = re.compile(r"\b(?:CREATE|GRANT)\b", re.I)
_ENUM_TYPE = re.compile(r"CREATE\s+TYPE\s+(\S+)\s+AS\s+ENUM\s*\((.*)\)\s*$", re.I | re.S)
_DOMAIN = re.compile(r"CREATE\s+DOMAIN\s+(\S+)\s+(?:AS\s+)?(.*)$", re.I | re.S)
_EXTPROP = re.compile(r"EXEC(?:UTE)?\s+(?:\w+\.)*sp_addextendedproperty\b(.*)$", re.I | re.S)
_STRING = re.compile(r"N?'((?:[^']|'')*)'")
_INSERT = re.compile(r"(?:INSERT|REPLACE)\s+(?:INTO\s+)?", re.I)
_KIND = re.compile(
    r"(CREATE|ALTER|DROP)\s+(?:OR\s+REPLACE\s+)?(?:DEFINER\s*=\s*\S+\s+)?(?:SQL\s+SECURITY\s+\w+\s+)?"
    r"(?:ALGORITHM\s*=\s*\w+\s+)?(?:(?:UNIQUE|FULLTEXT|SPATIAL|CLUSTERED|NONCLUSTERED|PROCEDURAL|TRUSTED|"
    r"MATERIALIZED|TEMPORARY|TEMP|RECURSIVE|EDITIONABLE|FORCE|PUBLIC|GLOBAL)\s+)*(\w+)|([A-Za-z_]+)",
    re.I,
)
# Storage and engine details some parsers reject; they say nothing about structure. Blanked with
# spaces (same length) so reported columns still point into the original file.
_NOISE: dict[str, re.Pattern] = {
    "tsql": re.compile(
        r"\b(?:NON)?CLUSTERED\b|\bROWGUIDCOL\b|\bTEXTIMAGE_ON\s+(?:\[[^\]]*\]|\w+)|"
        r"\bON\s+(?:\[PRIMARY\]|\"PRIMARY\"|PRIMARY\b(?!\s+KEY))|"
        r"\bWITH\s*\(\s*(?:PAD_INDEX|FILLFACTOR|IGNORE_DUP_KEY|STATISTICS_NORECOMPUTE|ALLOW_ROW_LOCKS|"
        r"ALLOW_PAGE_LOCKS|OPTIMIZE_FOR_SEQUENTIAL_KEY|DATA_COMPRESSION)[^)]*\)|\bNOT\s+FOR\s+REPLICATION\b|"
        r"\bWITH\s+(?:NO)?CHECK\s+(?=ADD\b)",
        re.I,
    ),
    "sqlite": re.compile(
        r"\bON\s+CONFLICT\s+(?:ROLLBACK|ABORT|FAIL|IGNORE|REPLACE)\b|(?<=\))\s*(?:(?:WITHOUT\s+ROWID|STRICT)\s*,?\s*)+\Z",
        re.I,
    ),
}
_TRAILING_COMMA = re.compile(r",(?=\s*\)\s*\Z)")
# SSMS writes `UNIQUE NONCLUSTERED ([c] ASC)`; sqlglot reads a sort order in PRIMARY KEY lists only.
_TSQL_UNIQUE_ORDER = re.compile(r"\bUNIQUE\s*\(([^()'\"]*)\)", re.I)
# SQLite accepts type names of several words that sqlglot does not; same-length replacements.
_SQLITE_TYPES = [
    (re.compile(r"\bUNSIGNED\s+BIG\s+INT\b", re.I), "BIGINT"),
    (re.compile(r"\bVARYING\s+CHARACTER\b", re.I), "VARCHAR"),
    (re.compile(r"\bNATIVE\s+CHARACTER\b", re.I), "NCHAR"),
    (re.compile(r"\bBLOB\s+SUB_TYPE\s+(?:TEXT|1)\b", re.I), "TEXT"),
    (re.compile(r"\bBLOB\s+SUB_TYPE\s+\w+\b", re.I), "BLOB"),
]

log = logging.getLogger("sqlglot")
_SERIALS = (exp.DataType.Type.SERIAL, exp.DataType.Type.BIGSERIAL, exp.DataType.Type.SMALLSERIAL)


@dataclass
class Built:
    """What the statements said: the schema, dropped statements by kind, ALTER TABLE actions applied
    by kind, clauses dropped from CREATE TABLE by the fallback, data."""

    schema: Schema
    dropped: Counter = field(default_factory=Counter)
    applied: Counter = field(default_factory=Counter)
    clauses: Counter = field(default_factory=Counter)
    data: list[exp.Expr] = field(default_factory=list)
    enums: dict[str, list[str]] = field(default_factory=dict)


def statement_kind(stmt: Statement) -> str:
    """A short name for what a statement is, for the dropped-statements summary."""
    if stmt.kind is not None:  # named by the splitter, which recognized it (COPY data, /*!...*/ ...)
        return stmt.kind
    if stmt.meta:
        return "psql meta-command" if stmt.text.startswith("\\") else "client command"
    m = _KIND.match(stmt.text)
    if not m:
        return "other"
    if m.group(1):
        return f"{m.group(1).upper()} {m.group(2).upper()}"
    return m.group(3).upper()


def build_schema(
    statements: list[Statement], read: str, source: str | None = None, keep_data: bool = False
) -> Built:
    """Build the table model from split statements (see the module docstring)."""
    b = _Builder(read, source, keep_data)
    level = log.level
    log.setLevel(logging.ERROR)  # Command fallbacks are detected and reported here, not logged
    try:
        for stmt in statements:
            try:
                b.statement(stmt)
            except DDLError:
                raise
            except RecursionError:  # sqlglot parses and walks trees recursively
                raise b.error(
                    "statement nested too deeply to parse (parentheses or subqueries thousands of levels deep)",
                    stmt,
                ) from None
            except (SqlglotError, AttributeError, TypeError, ValueError, IndexError, KeyError) as err:
                # a tree shape this module does not know: refuse it where it is, never guess
                raise b.error(
                    f"cannot represent this statement faithfully ({type(err).__name__}: {err})", stmt
                ) from err
    finally:
        log.setLevel(level)
    return b.out


class _Builder:
    def __init__(self, read: str, source: str | None, keep_data: bool):
        self.read = read
        self.dialect = Dialect.get_or_raise(read)
        self.source = source
        self.keep_data = keep_data
        self.out = Built(Schema())
        self.domains: dict[str, tuple[exp.DataType, list[exp.Expr], bool]] = {}
        self.seen: dict[tuple[str | None, str], Table] = {}

    # ---- errors -------------------------------------------------------------------------
    def error(self, reason: str, stmt: Statement, line: int | None = None, col: int | None = None):
        if line is None:
            return DDLError(reason, file=self.source, line=stmt.line, col=stmt.col)
        fl, fc = stmt.locate(line, col or 1)
        return DDLError(reason, file=self.source, line=fl, col=fc)

    def error_at(self, reason: str, stmt: Statement, node: exp.Expr | None):
        meta = _meta(node)
        if meta:
            return self.error(reason, stmt, meta["line"], meta["col"] - _width(node) + 1)
        return self.error(reason, stmt)

    # ---- statements ---------------------------------------------------------------------
    def statement(self, stmt: Statement) -> None:
        text = stmt.text
        if not stmt.meta:
            m = _CREATE_SCHEMA_BODY.match(text)
            if m:
                self.out.dropped["CREATE SCHEMA"] += 1
                for part in _schema_body(stmt, m):
                    self.statement(part)
                return
            if _CREATE_TABLE.match(text):
                self.create_table(stmt)
                return
            if _ALTER_TABLE.match(text):
                self.alter_table(stmt)
                return
            m = _COMMENT_ON.match(text)
            if m:
                self.comment_on(stmt, m.group(1).upper())
                return
            m = _ENUM_TYPE.match(text)
            if m:
                self.out.enums[_bare(m.group(1))] = [
                    v.replace("''", "'") for v in _STRING.findall(m.group(2))
                ]
            m = _DOMAIN.match(text)
            if m:
                self.domain(stmt, m)
            m = _EXTPROP.match(text)
            if m and self.extended_property(m.group(1)):
                return
            if self.keep_data and _INSERT.match(text):
                self.out.data.append(self.parse(stmt, text))
        self.out.dropped[statement_kind(stmt)] += 1

    def parse(self, stmt: Statement, text: str, check_commas: bool = False) -> exp.Expr:
        return self.parse_tokens(stmt, text, self.tokens(stmt, text, check_commas))

    def tokens(self, stmt: Statement, text: str, check_commas: bool = False) -> list:
        """sqlglot's tokens for `text` (a located DDLError when it cannot be tokenized)."""
        try:
            tokens = self.dialect.tokenize(text)
        except TokenError as err:
            raise self.error(f"cannot tokenize: {err}", stmt) from None
        if check_commas:
            self.check_tokens(stmt, tokens)
        return tokens

    def parse_tokens(self, stmt: Statement, text: str, tokens: list, raw: bool = False) -> exp.Expr:
        """Parse one statement from its tokens; `raw` lets sqlglot's ParseError through (the
        fallback reads its position)."""
        try:
            trees = self.dialect.parser().parse(tokens, text)
        except TokenError as err:
            raise self.error(f"cannot tokenize: {err}", stmt) from None
        except ParseError as err:
            if raw:
                raise
            raise self.parse_error(stmt, err) from None
        trees = [t for t in trees if t is not None]
        if len(trees) != 1:
            raise self.error(f"expected one statement, found {len(trees)} (missing separator?)", stmt)
        return trees[0]

    def parse_error(self, stmt: Statement, err: ParseError) -> DDLError:
        info = err.errors[0] if err.errors else {}
        reason = info.get("description") or str(err).splitlines()[0]
        near = (info.get("highlight") or "").strip()
        if near:
            reason += f" near {near!r}"
        line, col = info.get("line"), info.get("col")
        if col and near:  # sqlglot reports the column where the offending token ends
            col = max(1, col - len(info.get("highlight") or "") + 1)
        return self.error(f"cannot parse ({self.read}): {reason}", stmt, line, col)

    def check_tokens(self, stmt: Statement, tokens) -> None:
        """Reject punctuation sqlglot accepts silently: `(a int,, b int)`, `(a int,)`, `(, a int)`.
        T-SQL itself accepts (and ignores) a trailing comma before the closing parenthesis."""
        trailing_ok = self.read == "tsql"
        prev = None
        for tok in tokens:
            t = tok.token_type
            if prev is not None:
                pt = prev.token_type
                bad = (
                    (pt == TokenType.COMMA and t == TokenType.COMMA)
                    or (pt == TokenType.COMMA and t == TokenType.R_PAREN and not trailing_ok)
                    or (pt == TokenType.L_PAREN and t == TokenType.COMMA)
                )
                if bad:
                    raise self.error(
                        f"empty element in a list ({prev.text}{tok.text})", stmt, tok.line, tok.col
                    )
            prev = tok

    def prepare(self, text: str) -> str:
        noise = _NOISE.get(self.read)
        if noise is not None:
            text = noise.sub(_blank, text)
        if self.read == "tsql":
            text = _TRAILING_COMMA.sub(" ", text)  # T-SQL accepts `..., )`; sqlglot does not
            text = _TSQL_UNIQUE_ORDER.sub(_blank_sort_order, text)
        if self.read == "sqlite":
            for pattern, word in _SQLITE_TYPES:
                text = pattern.sub(lambda m, w=word: w + " " * (len(m.group()) - len(w)), text)
        return text

    # ---- CREATE TABLE ---------------------------------------------------------------------
    def create_table(self, stmt: Statement) -> None:
        tree = self.read_create(stmt)
        if tree.expression is not None:
            raise self.error("CREATE TABLE ... AS SELECT: the columns are not declared", stmt)
        parent, partition = None, False
        for prop in (tree.args.get("properties") or exp.Properties()).expressions:
            if isinstance(prop, exp.PartitionedOfProperty):
                parent, partition = _qualified(prop.this, stmt.schema), True
            elif isinstance(prop, exp.InheritsProperty):
                if len(prop.expressions) != 1:
                    raise self.error("INHERITS from several tables is not supported", stmt)
                parent = _qualified(prop.expressions[0], stmt.schema)
        schema_node = tree.this
        if parent is None and (not isinstance(schema_node, exp.Schema) or not schema_node.expressions):
            raise self.error("CREATE TABLE without columns", stmt)
        if not isinstance(schema_node, exp.Schema):
            schema_node = exp.Schema(this=schema_node, expressions=[])
        table = Table(_qualified(schema_node.this, stmt.schema), [], line=stmt.line, col=stmt.col)
        table.parent, table.partition = parent, partition
        key = (table.name.schema, table.name.name)
        if key in self.seen:
            first = self.seen[key]
            raise self.error(f"table {table.name} is created twice (first at line {first.line})", stmt)
        self.seen[key] = table
        for item in schema_node.expressions:
            if isinstance(item, (exp.ColumnDef, exp.Identifier)):
                column = self.column(stmt, table, item)
                if any(c.name == column.name for c in table.columns):
                    raise self.error_at(
                        f"duplicate column {column.name!r} in table {table.name}",
                        stmt,
                        item.this if isinstance(item, exp.ColumnDef) else item,
                    )
                table.columns.append(column)
            else:
                self.table_constraint(stmt, table, item)
        self.check_table(stmt, table)
        self.out.schema.tables.append(table)

    def read_create(self, stmt: Statement, owner: str | None = None) -> exp.Create:
        """The tree of a CREATE TABLE. Syntax sqlglot cannot read goes through `fallback`: clauses
        that change no column or key are dropped and counted, a part of a column that cannot be read
        (a generation expression, ...) is dropped with a warning; if that does not help, the
        statement is rejected where sqlglot stopped. `owner` names the table in warnings (for a
        fragment of an ALTER TABLE read as a CREATE TABLE)."""
        text = self.prepare(stmt.text)
        tokens = self.tokens(stmt, text, check_commas=True)
        try:
            tree = self.parse_tokens(stmt, text, tokens, raw=True)
            if isinstance(tree, exp.Create) and not isinstance(tree, exp.Command):
                return tree
        except ParseError:
            pass
        text, clauses = fallback.relax(text, tokens)
        unreadable: list[tuple[str, str]] = []
        while True:  # each round blanks a part, so this ends
            tokens = self.tokens(stmt, text)
            try:
                tree = self.parse_tokens(stmt, text, tokens, raw=True)
                break
            except ParseError as err:
                hit = fallback.drop_unreadable(text, tokens, _error_offset(text, err))
                if hit is None:
                    raise self.parse_error(stmt, err) from None
                text, what, where = hit
                unreadable.append((what, where))
        if isinstance(tree, exp.Command) or not isinstance(tree, exp.Create):
            raise self.error(
                "CREATE TABLE uses syntax sqlglot cannot read (it fell back to a raw command)", stmt
            )
        self.out.clauses.update(clauses)
        name = owner or _qualified(tree.this, stmt.schema)
        for what, where in unreadable:
            self.out.clauses[f"unreadable {what}"] += 1
            self.out.schema.warnings.append(f"{name}: {where}: {what} dropped (sqlglot cannot read it)")
        return tree

    def column(self, stmt: Statement, table: Table, item: exp.Expr) -> Column:
        if isinstance(item, exp.Identifier):
            line, col = stmt.locate(*_pos(item))
            return Column(item.name, None, line=line, col=col, quoted=item.quoted)
        ident = item.this
        if not isinstance(ident, exp.Identifier):
            raise self.error_at("cannot read this column definition", stmt, item)
        line, col = stmt.locate(*_pos(ident))
        dtype = item.args.get("kind")
        column = Column(
            ident.name, dtype if isinstance(dtype, exp.DataType) else None, line, col, quoted=ident.quoted
        )
        if column.dtype is not None and column.dtype.this in _SERIALS:
            column.identity = True
        # comments land on whichever node of the definition is nearest: gather them all, in order
        comments = [
            c.strip() for node in item.walk(bfs=False) for c in (node.comments or []) if c and c.strip()
        ]
        for cons in item.args.get("constraints") or []:
            kind = cons.args.get("kind") if isinstance(cons, exp.ColumnConstraint) else cons
            self.column_constraint(stmt, table, column, kind, cons)
            name = cons.this if isinstance(cons, exp.ColumnConstraint) else None
            if isinstance(name, exp.Identifier):
                self.name_constraint(table, name.name, kind, column)
        if column.comment:
            comments.insert(0, column.comment)
        column.comment = "; ".join(dict.fromkeys(" ".join(c.split()) for c in comments)) or None
        if dtype is None and column.computed is not None:
            raise self.error_at(f"computed column {column.name!r} has no declared type", stmt, ident)
        if column.dtype is not None and column.dtype.this == exp.DataType.Type.USERDEFINED:
            self.resolve_user_type(stmt, column, ident)
        return column

    def column_constraint(self, stmt, table: Table, column: Column, kind, node) -> None:
        if isinstance(kind, exp.NotNullColumnConstraint):
            column.not_null = not kind.args.get("allow_null")
        elif isinstance(kind, exp.PrimaryKeyColumnConstraint):
            if table.primary_key:
                raise DDLError(
                    "a second PRIMARY KEY in one table", file=self.source, line=column.line, col=column.col
                )
            table.primary_key = [column.name]
        elif isinstance(kind, exp.UniqueColumnConstraint):
            column.unique = True
        elif isinstance(kind, exp.DefaultColumnConstraint):
            self.set_default(column, kind.this)
        elif isinstance(kind, exp.CheckColumnConstraint):
            column.checks.append(kind.this)
        elif isinstance(kind, exp.Reference):
            table.foreign_keys.append(_reference(kind, [column.name], stmt.schema))
        elif isinstance(kind, exp.AutoIncrementColumnConstraint):
            column.identity = True
        elif isinstance(kind, exp.GeneratedAsIdentityColumnConstraint):
            if kind.args.get("expression") is not None:
                column.computed = kind.args["expression"]
            else:
                column.identity = True
        elif isinstance(kind, exp.ComputedColumnConstraint):
            column.computed = kind.this.unnest() if isinstance(kind.this, exp.Paren) else kind.this
        elif isinstance(kind, exp.CommentColumnConstraint):
            column.comment = kind.this.name if kind.this is not None else None
        elif isinstance(kind, exp.GeneratedAsRowColumnConstraint):
            self.out.clauses["GENERATED ALWAYS AS ROW START/END"] += 1  # T-SQL system time: the column stays
        elif isinstance(
            kind,
            (
                exp.OnUpdateColumnConstraint,
                exp.BinaryColumnConstraint,
                exp.CollateColumnConstraint,
                exp.CharacterSetColumnConstraint,
                exp.ZeroFillColumnConstraint,
                exp.CaseSpecificColumnConstraint,
                exp.TitleColumnConstraint,
                exp.InlineLengthColumnConstraint,
                exp.CompressColumnConstraint,
                exp.EncodeColumnConstraint,
                exp.InvisibleColumnConstraint,
            ),
        ):
            pass  # behaviour or storage, not structure (documented in README.md)
        else:
            name = type(kind).__name__ if kind is not None else "?"
            raise self.error_at(f"unsupported column constraint {name} on {column.name!r}", stmt, node)

    def set_default(self, column: Column, value: exp.Expr | None) -> None:
        while isinstance(value, exp.Paren):
            value = value.this
        if value is None or isinstance(value, exp.Null):
            column.default = None
            return
        if isinstance(value, exp.Anonymous) and value.name.lower() == "nextval":
            column.identity = True  # a sequence-backed key: the sequence itself is dropped
            column.default = None
            return
        for cast in list(value.find_all(exp.Cast)):
            to = cast.args.get("to")
            if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.USERDEFINED:
                if cast is value:  # 'G'::mpaa_rating: the type is mapped away
                    value = cast.this
                else:
                    cast.replace(cast.this)
        column.default = value

    def resolve_user_type(self, stmt: Statement, column: Column, ident: exp.Expr) -> None:
        from hive_data.ddl.types import category

        kind = column.dtype.args.get("kind")
        name = kind.name if isinstance(kind, exp.Expr) else str(kind or "")
        key = _bare(name)
        if key in self.out.enums:
            values = self.out.enums[key]
            column.dtype = exp.DataType(
                this=exp.DataType.Type.ENUM, expressions=[exp.Literal.string(v) for v in values]
            )
            return
        if key in self.domains:
            base, checks, not_null = self.domains[key]
            column.dtype = base.copy()
            column.not_null = column.not_null or not_null
            for check in checks:
                check = check.copy()
                for ref in list(check.find_all(exp.Column)):
                    if ref.name.upper() == "VALUE" and not ref.table:
                        ref.replace(exp.column(column.name, quoted=column.quoted))
                column.checks.append(check)
            return
        if category(column.dtype, self.read) is None:
            raise self.error_at(f"unknown type {name!r} for column {column.name!r}", stmt, ident)

    def name_constraint(self, table: Table, name: str, kind: exp.Expr, column: Column | None) -> None:
        """Remember the name the input gave a constraint just added (for ALTER TABLE ... DROP
        CONSTRAINT); `column` for one declared inside a column definition."""
        if isinstance(kind, (exp.PrimaryKey, exp.PrimaryKeyColumnConstraint)):
            entry = ("primary key", None)
        elif isinstance(kind, (exp.ForeignKey, exp.Reference)):
            entry = ("foreign key", table.foreign_keys[-1])
        elif isinstance(kind, exp.UniqueColumnConstraint):
            entry = ("unique", column if column is not None else table.uniques[-1])
        elif isinstance(kind, exp.CheckColumnConstraint):
            entry = ("check", column.checks[-1] if column is not None else table.checks[-1])
        elif isinstance(kind, exp.DefaultColumnConstraint) and column is not None:
            entry = ("default", column)
        elif isinstance(kind, exp.NotNullColumnConstraint) and column is not None:
            entry = ("not null", column)
        else:
            return
        table.constraint_names[name.lower()] = entry

    def table_constraint(self, stmt: Statement, table: Table, item: exp.Expr) -> None:
        if isinstance(item, exp.Constraint):
            for part in item.expressions:
                self.table_constraint(stmt, table, part)
                if isinstance(item.this, exp.Identifier):
                    self.name_constraint(table, item.this.name, part, None)
            return
        if isinstance(item, exp.PrimaryKey):
            if table.primary_key:
                raise self.error_at("a second PRIMARY KEY in one table", stmt, item)
            table.primary_key = [_name(e) for e in item.expressions]
        elif isinstance(item, exp.ForeignKey):
            ref = item.args.get("reference")
            if not isinstance(ref, exp.Reference):
                raise self.error_at("FOREIGN KEY without REFERENCES", stmt, item)
            table.foreign_keys.append(_reference(ref, [_name(e) for e in item.expressions], stmt.schema))
        elif isinstance(item, exp.UniqueColumnConstraint):
            target = item.this
            cols = [_name(e) for e in target.expressions] if isinstance(target, exp.Schema) else []
            if not cols:
                raise self.error_at("UNIQUE without columns", stmt, item)
            table.uniques.append(cols)
            if isinstance(target.this, exp.Identifier):  # MySQL UNIQUE KEY name (cols)
                self.name_constraint(table, target.this.name, item, None)
        elif isinstance(item, exp.CheckColumnConstraint):
            table.checks.append(item.this)
        elif isinstance(item, exp.IndexColumnConstraint):
            self.out.dropped["index inside CREATE TABLE"] += 1
        elif isinstance(item, (exp.ExcludeColumnConstraint, exp.PeriodForSystemTimeConstraint)):
            # an exclusion constraint is no key; a T-SQL system-time period names two columns it keeps
            label = "EXCLUDE constraint" if isinstance(item, exp.ExcludeColumnConstraint) else "PERIOD FOR"
            self.out.clauses[label] += 1
        elif isinstance(item, exp.LikeProperty):
            raise self.error("CREATE TABLE (LIKE ...): copied columns are not supported", stmt)
        else:
            raise self.error_at(f"unsupported table element {type(item).__name__}", stmt, item)

    def check_table(self, stmt: Statement, table: Table) -> None:
        if table.parent is not None:
            return  # inherited columns arrive later (transforms.expand_inheritance checks then)
        names = [table.primary_key, *table.uniques, *(fk.columns for fk in table.foreign_keys)]
        for cols in names:
            for name in cols:
                if table.column(name) is None:
                    raise self.error(f"table {table.name} has a key on unknown column {name!r}", stmt)
        table.primary_key = [table.column(n).name for n in table.primary_key]
        for fk in table.foreign_keys:
            fk.columns = [table.column(n).name for n in fk.columns]
            if fk.ref_columns and len(fk.ref_columns) != len(fk.columns):
                raise self.error(
                    f"foreign key {fk.columns} of {table.name} names a different number of columns", stmt
                )

    # ---- ALTER TABLE ----------------------------------------------------------------------
    def alter_table(self, stmt: Statement) -> None:
        apply_alter(self, stmt)  # hive_data/ddl/alter.py

    def table_for(self, stmt: Statement, name: QualifiedName) -> Table:
        table = self.out.schema.find(name)
        if table is None:
            raise self.error(f"ALTER TABLE of {name}, which this input does not create", stmt)
        return table

    # ---- comments, types, domains --------------------------------------------------------
    def comment_on(self, stmt: Statement, what: str) -> None:
        if what != "COLUMN":
            self.out.dropped[f"COMMENT ON {what}"] += 1
            return
        tree = self.parse(stmt, stmt.text)
        target = tree.this if isinstance(tree, exp.Comment) else None
        if not isinstance(target, exp.Column) or not target.table:
            raise self.error("COMMENT ON COLUMN needs table.column", stmt)
        schema = target.args.get("db")
        name = QualifiedName(target.table, schema.name if schema else stmt.schema)
        table = self.table_for(stmt, name)
        column = table.column(target.name)
        if column is None:
            raise self.error(f"COMMENT ON unknown column {target.name!r}", stmt)
        text = tree.expression.name if tree.expression is not None else ""
        column.comment = " ".join(text.split()) or None

    def extended_property(self, args: str) -> bool:
        """T-SQL column descriptions: sp_addextendedproperty 'MS_Description', 'text', ... 'COLUMN', c."""
        values = [v.replace("''", "'") for v in _STRING.findall(args)]
        if len(values) < 8 or values[6].upper() != "COLUMN":
            return False
        table = self.out.schema.find(QualifiedName(values[5], values[3]))
        column = table.column(values[7]) if table else None
        if column is None:
            return False
        column.comment = " ".join(values[1].split()) or None
        return True

    def domain(self, stmt: Statement, m: re.Match) -> None:
        tree = self.parse(stmt, f"CREATE TABLE d (VALUE {self.prepare(m.group(2))})")
        col = tree.this.expressions[0] if isinstance(tree, exp.Create) else None
        if not isinstance(col, exp.ColumnDef) or not isinstance(col.args.get("kind"), exp.DataType):
            return
        checks, not_null = [], False
        for cons in col.args.get("constraints") or []:
            kind = cons.args.get("kind")
            if isinstance(kind, exp.CheckColumnConstraint):
                checks.append(kind.this)
            elif isinstance(kind, exp.NotNullColumnConstraint) and not kind.args.get("allow_null"):
                not_null = True
        self.domains[_bare(m.group(1))] = (col.args["kind"], checks, not_null)


def _schema_body(stmt: Statement, m: re.Match) -> list[Statement]:
    """`CREATE SCHEMA x CREATE TABLE a (...) CREATE TABLE b (...)` -> one statement per part."""
    schema = _bare(m.group(1))
    text = stmt.text
    starts = [p.start() for p in _SCHEMA_BODY_PART.finditer(text, m.end())]
    starts = [s for s in starts if _depth(text, s) == 0]
    parts = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        before = text[:start]
        line = stmt.line + before.count("\n")
        col = start - before.rfind("\n") if "\n" in before else stmt.col + start
        parts.append(Statement(text[start:end].strip(), line, col, schema=schema))
    return parts


def _error_offset(text: str, err: ParseError) -> int:
    """The offset in `text` where sqlglot's first error ends (-1 when it gives none)."""
    info = err.errors[0] if err.errors else {}
    line, col = info.get("line"), info.get("col")
    if not line or not col:
        return -1
    lines = text.split("\n")
    return sum(len(x) + 1 for x in lines[: line - 1]) + col - 1


def _depth(text: str, pos: int) -> int:
    return text.count("(", 0, pos) - text.count(")", 0, pos)


def _blank_sort_order(m: re.Match) -> str:
    """`ASC` / `DESC` in a key's column list blanked (same length): index order, not structure."""
    return re.sub(r"\b(?:ASC|DESC)\b", lambda w: " " * len(w.group()), m.group(), flags=re.I)


def _blank(m: re.Match) -> str:
    return re.sub(r"[^\n]", " ", m.group())


def _bare(name: str) -> str:
    """Last part of a possibly qualified, possibly quoted name, unquoted."""
    name = name.strip().rstrip(";")
    part = re.split(r"\.(?=(?:[^\"`\]]|[\"`\[][^\"`\]]*[\"`\]])*$)", name)[-1]
    if part[:1] in '"`[' and len(part) >= 2:
        part = part[1:-1]
    return part


def _qualified(table: exp.Expr, default_schema: str | None) -> QualifiedName:
    if isinstance(table, exp.Schema):
        table = table.this
    ident = table.this if isinstance(table, exp.Table) else table
    db = table.args.get("db") if isinstance(table, exp.Table) else None
    quoted = bool(getattr(ident, "quoted", False))
    return QualifiedName(table.name, db.name if db is not None else default_schema, quoted)


def _reference(ref: exp.Reference, columns: list[str], default_schema: str | None) -> ForeignKey:
    target = ref.this
    ref_columns = [_name(e) for e in target.expressions] if isinstance(target, exp.Schema) else []
    options = [" ".join(str(o).upper().split()) for o in ref.args.get("options") or []]
    return ForeignKey(columns, _qualified(target, default_schema), ref_columns, options)


def _name(node: exp.Expr) -> str:
    while isinstance(node, (exp.Ordered, exp.ColumnPrefix, exp.Paren)):
        node = node.this
    return node.name


def _meta(node: exp.Expr | None) -> dict | None:
    if node is None:
        return None
    for n in (node, *node.find_all(exp.Identifier)):
        meta = n.meta if isinstance(n, exp.Identifier) else None
        if meta and "line" in meta:
            return meta
    return None


def _width(node: exp.Expr) -> int:
    meta = _meta(node)
    if not meta:
        return 1
    return meta.get("end", 0) - meta.get("start", 0) + 1


def _pos(ident: exp.Expr) -> tuple[int, int]:
    meta = _meta(ident)
    if not meta:
        return 1, 1
    return meta["line"], max(1, meta["col"] - _width(ident) + 1)
