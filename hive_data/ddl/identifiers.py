"""The quoting policy of the canonical format: identifiers keep their spelling and are quoted only
when the target needs it (a reserved word, a character outside `[A-Za-z0-9_]`, a leading digit), or
when two names of one table differ only in case and would otherwise fold together."""

from __future__ import annotations

import functools
import re

from sqlglot import exp

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Words the target reserves (PostgreSQL's "reserved" keywords, MySQL's and SQLite's reserved lists),
# plus a few sqlglot reads as keywords where a name stands, so that re-reading the output is stable.
_SQL = """ALL ANALYSE ANALYZE AND ANY ARRAY AS ASC ASYMMETRIC AUTHORIZATION BINARY BOTH CASE CAST CHECK
COLLATE COLLATION COLUMN CONCURRENTLY CONSTRAINT CREATE CROSS CURRENT_CATALOG CURRENT_DATE CURRENT_ROLE
CURRENT_SCHEMA CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DEFAULT DEFERRABLE DESC DISTINCT DO ELSE END
EXCEPT FALSE FETCH FOR FOREIGN FREEZE FROM FULL GRANT GROUP HAVING ILIKE IN INITIALLY INNER INTERSECT
INTO IS ISNULL JOIN LATERAL LEADING LEFT LIKE LIMIT LOCALTIME LOCALTIMESTAMP NATURAL NOT NOTNULL NULL
OFFSET ON ONLY OR ORDER OUTER OVERLAPS PLACING PRIMARY REFERENCES RETURNING RIGHT SELECT SESSION_USER
SIMILAR SOME SYMMETRIC SYSTEM_USER TABLE TABLESAMPLE THEN TO TRAILING TRUE UNION UNIQUE USER USING
VARIADIC VERBOSE WHEN WHERE WINDOW WITH"""
_MYSQL = """ACCESSIBLE ADD ALTER BEFORE BETWEEN BIGINT BLOB BY CALL CASCADE CHANGE CHAR CHARACTER CONDITION
CONTINUE CONVERT CURSOR DATABASE DATABASES DAY_HOUR DAY_MICROSECOND DAY_MINUTE DAY_SECOND DEC DECIMAL
DECLARE DELAYED DELETE DESCRIBE DETERMINISTIC DISTINCTROW DIV DOUBLE DROP DUAL EACH ELSEIF ENCLOSED
ESCAPED EXISTS EXIT EXPLAIN FLOAT FLOAT4 FLOAT8 FORCE FULLTEXT FUNCTION GENERATED GROUPS HIGH_PRIORITY
HOUR_MICROSECOND HOUR_MINUTE HOUR_SECOND IF IGNORE INDEX INFILE INOUT INSENSITIVE INSERT INT INT1 INT2
INT3 INT4 INT8 INTEGER INTERVAL ITERATE KEY KEYS KILL LEAVE LINEAR LINES LOAD LOCK LONG LONGBLOB
LONGTEXT LOOP LOW_PRIORITY MATCH MEDIUMBLOB MEDIUMINT MEDIUMTEXT MIDDLEINT MINUTE_MICROSECOND
MINUTE_SECOND MOD MODIFIES NUMERIC OPTIMIZE OPTION OPTIONALLY OUT OUTFILE OVER PARTITION PRECISION
PROCEDURE PURGE RANGE RANK READ READS REAL RECURSIVE REGEXP RELEASE RENAME REPEAT REPLACE REQUIRE
RESIGNAL RESTRICT RETURN REVOKE RLIKE ROW ROWS SCHEMA SCHEMAS SECOND_MICROSECOND SENSITIVE SEPARATOR SET
SHOW SIGNAL SMALLINT SPATIAL SPECIFIC SQL SQLEXCEPTION SQLSTATE SQLWARNING STARTING STORED
STRAIGHT_JOIN TERMINATED TINYBLOB TINYINT TINYTEXT TRIGGER UNDO UNLOCK UNSIGNED UPDATE USAGE USE
UTC_DATE UTC_TIME UTC_TIMESTAMP VALUES VARBINARY VARCHAR VARCHARACTER VARYING VIRTUAL WHILE WRITE XOR
YEAR_MONTH ZEROFILL"""
_SQLITE = """ABORT ACTION ADD AFTER ALTER ATTACH AUTOINCREMENT BEFORE BEGIN BETWEEN BY CASCADE COMMIT
CONFLICT DATABASE DEFERRED DELETE DETACH DROP EACH ESCAPE EXCLUSIVE EXISTS EXPLAIN GLOB IF IGNORE
IMMEDIATE INDEX INDEXED INSERT INSTEAD KEY MATCH NO NOTHING OF PLAN PRAGMA QUERY RAISE RECURSIVE
REGEXP REINDEX RELEASE RENAME REPLACE RESTRICT ROLLBACK ROW SAVEPOINT SET TEMP TEMPORARY TRANSACTION
TRIGGER UPDATE VACUUM VALUES VIEW VIRTUAL"""
# Names sqlglot's parser takes for keywords in column or table position.
_SQLGLOT = """BETWEEN INTERVAL OVERLAPS COLLATE DIV ESCAPE GLOB MOD REGEXP RLIKE XOR OVER FILTER
WITHIN QUALIFY PIVOT UNPIVOT MATCH_RECOGNIZE"""

RESERVED: dict[str, frozenset[str]] = {
    "postgres": frozenset((_SQL + " " + _SQLGLOT).split()),
    "mysql": frozenset((_SQL + " " + _MYSQL + " " + _SQLGLOT).split()),
    "sqlite": frozenset((_SQL + " " + _SQLITE + " " + _SQLGLOT).split()),
}


@functools.lru_cache(maxsize=1 << 16)
def needs_quotes(name: str, dialect: str) -> bool:
    """Whether `name` must be quoted for `dialect` to read it back as the same identifier."""
    if not _PLAIN.match(name):
        return True
    return name.upper() in RESERVED.get(dialect, RESERVED["postgres"])


def quote(name: str, dialect: str, force: bool = False) -> str:
    """Print one identifier under the policy (`force`: quote even if not needed)."""
    return exp.to_identifier(name, quoted=force or needs_quotes(name, dialect)).sql(dialect=dialect)


def apply_identifier_policy(expression: exp.Expr, dialect: str, copy: bool = True) -> exp.Expr:
    """Return `expression` with identifiers quoted exactly when `dialect` needs it, so SQL printed
    from it agrees with schemas in the canonical format. `copy=False` rewrites the tree in place
    (for callers that own a fresh parse and want to skip the deep copy)."""
    if copy:
        expression = expression.copy()
    for ident in expression.find_all(exp.Identifier):
        if ident.this != "*":
            ident.set("quoted", needs_quotes(ident.this, dialect))
    return expression


def colliding(names: list[str]) -> set[str]:
    """Names that equal another name of the list up to case (they must be quoted to stay apart)."""
    seen: dict[str, list[str]] = {}
    for name in names:
        seen.setdefault(name.lower(), []).append(name)
    return {n for group in seen.values() if len(group) > 1 for n in group}
