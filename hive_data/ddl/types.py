"""The closed type vocabulary of the canonical format, per target dialect.

Every source type is first put in a category (`text`, `integer`, `decimal`, ...), then printed with
the one spelling the target uses for that category. Widths of integers and strings, UNSIGNED and
ZEROFILL are dropped; decimal precision and scale are kept. The spellings are written out here rather
than printed by sqlglot, whose generator says `INT` where the canonical format says `INTEGER`.
docs/schemas.md, "Type mapping", shows the same table for readers.
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
        kind = dtype.args.get("kind")
        name = (kind.name if isinstance(kind, exp.Expr) else str(kind or "")).upper()
        return _NAMED.get(name)
    cat = CATEGORY.get(t)
    if cat == "timestamptz" and read in ("mysql", "mariadb", "singlestore", "doris", "starrocks"):
        return "timestamp"  # sqlglot reads MySQL TIMESTAMP as TIMESTAMPTZ; it stores no zone
    if cat == "bit":
        width = _params(dtype)
        if width and width[0] not in (None, 1):
            return "bigint"  # BIT(n>1) is a bit field; an integer holds its value
    return cat


def _params(dtype: exp.DataType) -> list[int | None]:
    out: list[int | None] = []
    for p in dtype.expressions:
        node = p.this if isinstance(p, exp.DataTypeParam) else p
        try:
            out.append(int(node.name))
        except (ValueError, AttributeError):
            out.append(None)
    return out


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
        p = [x for x in _params(dtype) if x is not None] if dtype is not None else []
        return vocab["decimal"].replace("{p}", f"({','.join(map(str, p))})" if p else "")
    return vocab[cat]


def enum_values(dtype: exp.DataType | None) -> list[str]:
    """The allowed strings of an ENUM('a','b') type."""
    if dtype is None:
        return []
    return [e.name for e in dtype.expressions if isinstance(e, exp.Literal)]
