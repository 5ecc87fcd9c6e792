"""The intermediate table model: what a schema is, independent of the dialect it was written in.

A `Schema` holds `Table`s in creation order; each table has ordered `Column`s, a primary key, unique
sets, foreign keys and table-level checks. Expressions that survive into the output (types,
defaults, checks) stay sqlglot nodes so they can be printed for any target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp


@dataclass
class ForeignKey:
    columns: list[str]
    ref_table: QualifiedName
    ref_columns: list[str]  # empty: the referenced table's primary key
    options: list[str] = field(default_factory=list)  # "ON DELETE CASCADE", ...
    deferred: bool = False  # closes a cycle: printed as ALTER TABLE after all tables


@dataclass(frozen=True)
class QualifiedName:
    name: str
    schema: str | None = None
    quoted: bool = False  # how the source spelled it; case-sensitive lookups use it

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass
class Column:
    name: str
    dtype: exp.DataType | None  # None: a typeless SQLite column
    line: int = 0
    col: int = 0
    not_null: bool = False
    unique: bool = False
    default: exp.Expr | None = None
    checks: list[exp.Expr] = field(default_factory=list)
    identity: bool = False  # AUTO_INCREMENT, IDENTITY, SERIAL, GENERATED ... AS IDENTITY
    computed: exp.Expr | None = None  # GENERATED ALWAYS AS (expr) STORED
    comment: str | None = None
    quoted: bool = False
    type_sql: str = ""  # the target spelling, set by transforms.map_types


@dataclass
class Table:
    name: QualifiedName
    columns: list[Column]
    line: int = 0
    col: int = 0
    primary_key: list[str] = field(default_factory=list)
    uniques: list[list[str]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    checks: list[exp.Expr] = field(default_factory=list)
    parent: QualifiedName | None = None  # INHERITS (parent) or PARTITION OF parent
    partition: bool = False  # PARTITION OF: keys are inherited too, not only columns
    # Constraint names the input gave (folded to lower case), for ALTER TABLE ... DROP / RENAME
    # CONSTRAINT; never printed. name -> (kind, what it names): ("primary key", None),
    # ("unique", a list of `uniques` or a Column), ("foreign key", ForeignKey), ("check", an expression
    # of `checks` or of a column's checks), ("default", Column), ("not null", Column).
    constraint_names: dict[str, tuple[str, object]] = field(default_factory=dict, repr=False, compare=False)

    def column(self, name: str) -> Column | None:
        """Find a column: exact spelling first, then a unique case-insensitive match."""
        for c in self.columns:
            if c.name == name:
                return c
        folded = [c for c in self.columns if c.name.lower() == name.lower()]
        return folded[0] if len(folded) == 1 else None


@dataclass
class Schema:
    tables: list[Table] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def find(self, name: QualifiedName) -> Table | None:
        """Resolve a table name the way the databases do: exact, then schema-less, then by case."""
        exact = [t for t in self.tables if t.name.name == name.name]
        if name.schema is not None:
            same = [t for t in exact if t.name.schema in (None, name.schema)]
            if len(same) == 1:
                return same[0]
        if len(exact) == 1:
            return exact[0]
        if name.quoted:
            return None
        folded = [t for t in self.tables if t.name.name.lower() == name.name.lower()]
        if name.schema is not None and len(folded) > 1:
            folded = [t for t in folded if (t.name.schema or "").lower() == name.schema.lower()]
        return folded[0] if len(folded) == 1 else None
