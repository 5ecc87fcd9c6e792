"""The one prompt layout for text-to-SQL (and other schema-grounded) rows.

Training and inference must build byte-identical prompts, so this module is the only place that
knows the layout. Inference code calls `sql_messages(question, schema, dialect)` (no answer) and
renders with the same chat template, `add_generation_prompt=True`.

Layout::

    system:    You translate questions into {Dialect} SQL. Answer with one SQL query and nothing else.
               <blank line>
               {schema}            # the canonical schema, which starts with "-- Dialect: ..."
    user:      {question}
    assistant: {answer}
"""

from __future__ import annotations

DIALECT_NAMES = {
    "postgres": "PostgreSQL",
    "mysql": "MySQL",
    "sqlite": "SQLite",
    "tsql": "T-SQL",
    "oracle": "Oracle",
    "duckdb": "DuckDB",
    "bigquery": "BigQuery",
    "snowflake": "Snowflake",
    "cypher": "Cypher",
}

SYSTEM_TEMPLATE = "You translate questions into {dialect} SQL. Answer with one SQL query and nothing else."


def system_prompt(schema: str | None, dialect: str) -> str:
    head = SYSTEM_TEMPLATE.format(dialect=DIALECT_NAMES.get(dialect, dialect))
    schema = (schema or "").strip()
    return f"{head}\n\n{schema}" if schema else head


def sql_messages(question: str, schema: str | None, dialect: str, answer: str | None = None) -> list[dict]:
    """Chat messages for one text-to-SQL example; omit `answer` to build an inference prompt."""
    messages = [
        {"role": "system", "content": system_prompt(schema, dialect)},
        {"role": "user", "content": question.strip()},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer.strip()})
    return messages


def parse_system_prompt(text: str) -> tuple[str, str | None] | None:
    """(dialect, schema or None) of a system prompt `system_prompt` wrote, or None for any other
    text. The inverse of `system_prompt` for the dialects in `DIALECT_NAMES` (and dialects written
    under their own name)."""
    import re

    pattern = re.escape(SYSTEM_TEMPLATE).replace(re.escape("{dialect}"), "(.+?)")
    match = re.match(pattern + r"(?:\n\n(.*))?\Z", text, re.DOTALL)
    if match is None:
        return None
    names = {name: key for key, name in DIALECT_NAMES.items()}
    schema = (match.group(2) or "").strip() or None
    return names.get(match.group(1), match.group(1)), schema
