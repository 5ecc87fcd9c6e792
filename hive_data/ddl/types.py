"""The closed type vocabulary of the canonical format, per target dialect.

Every source type is first put in a category (`text`, `integer`, `decimal`, ...), then printed with
the one spelling the target uses for that category. Widths of integers and strings, UNSIGNED and
ZEROFILL are dropped; decimal precision and scale are kept. The spellings are written out here rather
than printed by sqlglot, whose generator says `INT` where the canonical format says `INTEGER`.
docs/schemas.md, "Type mapping", shows the same table for readers.

Also here: how SQLite reads a type name nobody defines (`sqlite_affinity`), which pairs of printed
types a foreign key may join in each target (`fk_accepts`), and the widest of a set of key types
(`widest`), for the rules of transforms.py that make the output execute.
"""

from __future__ import annotations

from sqlglot import exp

T = exp.DataType.Type

CATEGORY: dict[exp.DataType.Type, str] = {}


def _put(category: str, *types: str) -> None:
    for name in types:
        member = getattr(T, name, None)
        if member is not None:
            CATEGORY[member] = category


_put("text", "VARCHAR", "CHAR", "NVARCHAR", "NCHAR", "TEXT", "TINYTEXT", "MEDIUMTEXT", "LONGTEXT", "BPCHAR")
_put("text", "NAME", "FIXEDSTRING", "LOWCARDINALITY", "SET", "INET", "IPADDRESS", "IPV4", "IPV6", "IPPREFIX")
_put("integer", "INT", "UINT", "MEDIUMINT", "UMEDIUMINT", "SERIAL")
_put("smallint", "SMALLINT", "USMALLINT", "TINYINT", "UTINYINT", "YEAR", "SMALLSERIAL")
_put("bigint", "BIGINT", "UBIGINT", "BIGSERIAL", "INT128", "UINT128", "INT256", "UINT256")
_put("real", "FLOAT")
_put("double", "DOUBLE", "UDOUBLE")
_put("decimal", "DECIMAL", "UDECIMAL", "BIGDECIMAL", "DECIMAL32", "DECIMAL64", "DECIMAL128", "DECIMAL256")
_put("decimal", "DECFLOAT", "BIGNUM")
_put("money", "MONEY", "SMALLMONEY")
_put("boolean", "BOOLEAN")
_put("date", "DATE", "DATE32")
_put("time", "TIME", "TIME_NS")
_put("timetz", "TIMETZ")
_put("timestamp", "DATETIME", "DATETIME2", "DATETIME64", "SMALLDATETIME", "TIMESTAMP", "TIMESTAMPNTZ")
_put("timestamp", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS")
_put("timestamptz", "TIMESTAMPTZ", "TIMESTAMPLTZ")
_put("interval", "INTERVAL")
_put("binary", "BINARY", "VARBINARY", "BLOB", "TINYBLOB", "MEDIUMBLOB", "LONGBLOB", "IMAGE", "ROWVERSION")
_put("binary", "GEOMETRY", "GEOGRAPHY", "POINT", "LINESTRING", "POLYGON", "MULTIPOLYGON", "MULTILINESTRING")
_put("binary", "RING", "GEOGRAPHYPOINT")
_put("json", "JSON", "STRUCT", "MAP", "VARIANT", "OBJECT", "SUPER", "LIST", "NESTED", "UNION", "DYNAMIC")
_put("jsonb", "JSONB")
_put("uuid", "UUID")
_put("xml", "XML")
_put("enum", "ENUM", "ENUM8", "ENUM16")
_put("bit", "BIT")
_put("array", "ARRAY")

# Types sqlglot leaves as USER-DEFINED but which are builtins of some database.
_NAMED: dict[str, str] = {
    "TSVECTOR": "tsvector",
    "TSQUERY": "text",
    "CITEXT": "text",
    "RAW": "binary",
    "LONG RAW": "binary",
    "NCLOB": "text",
    "CLOB": "text",
    "STRING": "text",
    "UNIQUEIDENTIFIER": "uuid",
    "SQL_VARIANT": "text",
    "HIERARCHYID": "text",
    "CIDR": "text",
    "MACADDR": "text",
    "BINARY_FLOAT": "real",
    "BINARY_DOUBLE": "double",
    "GRAPHIC": "text",
    "VARGRAPHIC": "text",
    "DBCLOB": "text",
}

# category -> spelling, per target; "{p}" is replaced by decimal precision/scale when known.
VOCABULARY: dict[str, dict[str, str]] = {
    "postgres": {
        "text": "TEXT",
        "integer": "INTEGER",
        "smallint": "SMALLINT",
        "bigint": "BIGINT",
        "real": "REAL",
        "double": "DOUBLE PRECISION",
        "decimal": "DECIMAL{p}",
        "money": "DECIMAL(19,4)",
        "boolean": "BOOLEAN",
        "bit": "BOOLEAN",
        "date": "DATE",
        "time": "TIME",
        "timetz": "TIMETZ",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMPTZ",
        "interval": "INTERVAL",
        "binary": "BYTEA",
        "json": "JSON",
        "jsonb": "JSONB",
        "uuid": "UUID",
        "xml": "XML",
        "tsvector": "TSVECTOR",
        "enum": "TEXT",
        "serial:integer": "SERIAL",
        "serial:smallint": "SMALLSERIAL",
        "serial:bigint": "BIGSERIAL",
    },
    "mysql": {
        "text": "TEXT",
        "integer": "INTEGER",
        "smallint": "SMALLINT",
        "bigint": "BIGINT",
        "real": "FLOAT",
        "double": "DOUBLE",
        "decimal": "DECIMAL{p}",
        "money": "DECIMAL(19,4)",
        "boolean": "BOOLEAN",
        "bit": "BOOLEAN",
        "date": "DATE",
        "time": "TIME",
        "timetz": "TIME",
        "timestamp": "DATETIME",
        "timestamptz": "DATETIME",  # MySQL has no zoned type; TIMESTAMP would read back as DATETIME
        "interval": "TEXT",
        "binary": "BLOB",
        "json": "JSON",
        "jsonb": "JSON",
        "uuid": "TEXT",
        "text:key": "VARCHAR(255)",  # MySQL cannot index TEXT without a prefix length
        "xml": "TEXT",
        "tsvector": "TEXT",
        "enum": "ENUM",
        "serial:integer": "INTEGER AUTO_INCREMENT",
        "serial:smallint": "SMALLINT AUTO_INCREMENT",
        "serial:bigint": "BIGINT AUTO_INCREMENT",
    },
    "sqlite": {
        "text": "TEXT",
        "integer": "INTEGER",
        "smallint": "INTEGER",
        "bigint": "INTEGER",
        "real": "REAL",
        "double": "REAL",
        "decimal": "NUMERIC",
        "money": "NUMERIC",
        "boolean": "BOOLEAN",
        "bit": "BOOLEAN",
        "date": "DATE",
        "time": "TIME",
        "timetz": "TIME",
        "timestamp": "TIMESTAMP",
        "timestamptz": "TIMESTAMP",
        "interval": "TEXT",
        "binary": "BLOB",
        "json": "TEXT",
        "jsonb": "TEXT",
        "uuid": "TEXT",
        "xml": "TEXT",
        "tsvector": "TEXT",
        "enum": "TEXT",
        "serial:integer": "INTEGER",
        "serial:smallint": "INTEGER",
        "serial:bigint": "INTEGER",
    },
}

TARGETS = tuple(VOCABULARY)
SERIALS = {T.SERIAL: "INT", T.BIGSERIAL: "BIGINT", T.SMALLSERIAL: "SMALLINT"}


def category(dtype: exp.DataType | None, read: str) -> str | None:
    """The category of a parsed type, or None when it is unknown (a user-defined type)."""
    if dtype is None:
        return "text"  # a typeless SQLite column holds anything; text is the faithful reading
    t = dtype.this
    if t == T.USERDEFINED:
        name = _user_name(dtype)
        if name in _NAMED:
            return _NAMED[name]
        return sqlite_affinity(name) if read == "sqlite" else None
    cat = CATEGORY.get(t)
    if cat == "timestamptz" and read in ("mysql", "mariadb", "singlestore", "doris", "starrocks"):
        return "timestamp"  # sqlglot reads MySQL TIMESTAMP as TIMESTAMPTZ; it stores no zone
    if cat == "bit":
        width = _params(dtype)
        if width and width[0] not in (None, 1):
            return "bigint"  # BIT(n>1) is a bit field; an integer holds its value
    return cat


def _user_name(dtype: exp.DataType) -> str:
    kind = dtype.args.get("kind")
    return (kind.name if isinstance(kind, exp.Expr) else str(kind or "")).upper()


def sqlite_affinity(name: str) -> str:
    """The category of a type name SQLite does not know, by SQLite's own rules (datatype3.html, 3.1):
    SQLite accepts any name and derives the column's affinity from its letters."""
    name = name.upper()
    if "INT" in name:
        return "integer"
    if any(part in name for part in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if "BLOB" in name:
        return "binary"
    if any(part in name for part in ("REAL", "FLOA", "DOUB")):
        return "double"
    return "decimal"  # NUMERIC affinity


def is_affinity_type(dtype: exp.DataType | None, read: str) -> bool:
    """True for a SQLite column whose type name is no type name hive knows (`my_key_type`, `GUID`):
    its category is only SQLite's affinity guess, so a foreign key may tell its type better."""
    return (
        read == "sqlite"
        and dtype is not None
        and dtype.this == T.USERDEFINED
        and _user_name(dtype) not in _NAMED
    )


def _params(dtype: exp.DataType) -> list[int | None]:
    out: list[int | None] = []
    for p in dtype.expressions:
        node = p.this if isinstance(p, exp.DataTypeParam) else p
        try:
            out.append(int(node.name))
        except (ValueError, AttributeError):
            out.append(None)
    return out


def _precision(dtype: exp.DataType | None) -> list[int]:
    """A decimal's declared precision and scale; none for a user-defined name's parameters (`foo(10)`,
    a SQLite name read by affinity)."""
    if dtype is None or dtype.this == T.USERDEFINED:
        return []
    return [x for x in _params(dtype) if x is not None]


def spell(dtype: exp.DataType | None, cat: str, target: str, identity: bool = False) -> str:
    """Print a categorized type in the target's vocabulary."""
    vocab = VOCABULARY[target]
    if cat == "array":
        inner = dtype.expressions[0] if dtype is not None and dtype.expressions else None
        if target == "postgres" and isinstance(inner, exp.DataType):
            inner_cat = category(inner, "") or "text"
            return spell(inner, inner_cat, target) + "[]"
        return vocab["json"]
    if identity:
        key = "serial:" + (cat if cat in ("integer", "smallint", "bigint") else "bigint")
        return vocab[key]
    if cat == "decimal":
        p = _precision(dtype)
        return vocab["decimal"].replace("{p}", f"({','.join(map(str, p))})" if p else "")
    return vocab[cat]


def enum_values(dtype: exp.DataType | None) -> list[str]:
    """The allowed strings of an ENUM('a','b') type."""
    if dtype is None:
        return []
    return [e.name for e in dtype.expressions if isinstance(e, exp.Literal)]


# Foreign keys PostgreSQL accepts between two different types of the vocabulary (it needs an implicit
# cast of the referencing type to the referenced one inside one btree operator family; measured on
# the embedded PostgreSQL for every pair, see tests/ddl/test_ddl_executes.py): up the numeric ladder
# integers < decimal < floats (integers among themselves, floats among themselves),
# date/timestamp/timestamptz among themselves, and time to timetz or interval.
_PG_LADDER = {"SMALLINT": 0, "INTEGER": 0, "BIGINT": 0, "DECIMAL": 1, "REAL": 2, "DOUBLE PRECISION": 2}
_PG_DATETIMES = {"DATE", "TIMESTAMP", "TIMESTAMPTZ"}
_PG_TIME_UP = {("TIME", "TIMETZ"), ("TIME", "INTERVAL")}
_PG_SERIALS = {"SERIAL": "INTEGER", "SMALLSERIAL": "SMALLINT", "BIGSERIAL": "BIGINT"}
_MYSQL_STRINGS = ("TEXT", "VARCHAR(")


def fk_base(type_sql: str, target: str) -> str:
    """A printed column type as a foreign key compares it: auto-increment spellings as their integer
    type, PostgreSQL's DECIMAL(p,s) as DECIMAL (numeric of any precision is one type there)."""
    if target == "postgres":
        base = _PG_SERIALS.get(type_sql, type_sql)
        return "DECIMAL" if base.startswith("DECIMAL") else base
    return type_sql.removesuffix(" AUTO_INCREMENT")


def fk_accepts(referencing: str, referenced: str, target: str) -> bool:
    """Whether `target` creates a foreign key from a column printed `referencing` to one printed
    `referenced`. SQLite accepts any pair (it compares values, not types); MySQL wants the same
    integer and decimal types (size and precision) but any string lengths."""
    a, b = fk_base(referencing, target), fk_base(referenced, target)
    if a == b or target == "sqlite":
        return True
    if target == "mysql":
        return a.startswith(_MYSQL_STRINGS) and b.startswith(_MYSQL_STRINGS)
    if a in _PG_LADDER and b in _PG_LADDER:
        return _PG_LADDER[a] <= _PG_LADDER[b]
    return (a in _PG_DATETIMES and b in _PG_DATETIMES) or (a, b) in _PG_TIME_UP


_INTEGER_RANK = {"smallint": 0, "integer": 1, "bigint": 2}
_DECIMALS = ("decimal", "money")


def widest(types: list[tuple[exp.DataType | None, str]]) -> tuple[exp.DataType | None, str]:
    """The widest of (type, category) pairs of the first one's family, ignoring the others: the largest
    integer, or a decimal with the most integer digits and the largest scale (unbounded when one is).
    Any other family: the first type itself."""
    first = types[0]
    if first[1] in _INTEGER_RANK:
        ints = [t for t in types if t[1] in _INTEGER_RANK]
        return max(ints, key=lambda t: _INTEGER_RANK[t[1]])
    if first[1] not in _DECIMALS:
        return first
    digits, scale = 0, 0
    for dtype, cat in types:
        if cat not in _DECIMALS:
            continue
        p = [19, 4] if cat == "money" else _precision(dtype)
        if not p:
            return exp.DataType.build("DECIMAL"), "decimal"
        s = p[1] if len(p) > 1 else 0
        digits, scale = max(digits, p[0] - s), max(scale, s)
    if scale:
        return exp.DataType.build(f"DECIMAL({digits + scale}, {scale})"), "decimal"
    return exp.DataType.build(f"DECIMAL({digits})"), "decimal"


_FAMILIES = {"smallint": "number", "integer": "number", "bigint": "number", "decimal": "number"}
_FAMILIES |= {"money": "number", "real": "number", "double": "number", "bit": "boolean"}
_FAMILIES |= {"uuid": "text", "enum": "text", "timestamptz": "timestamp", "date": "timestamp"}


def family(cat: str) -> str:
    """Categories whose values (and so defaults) carry over to each other: numbers, texts, moments."""
    return _FAMILIES.get(cat, cat)
