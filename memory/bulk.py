"""Writing many rows of one table at once, in one statement per batch, on either backend.

Why: a bank file of 10,000 lines writes some 50,000 rows (its lines, payments, applications,
activity and audit rows). SQLAlchemy's multi-row ``INSERT ... VALUES`` ("insertmanyvalues")
renders one placeholder per value: on PostgreSQL a 500-row batch is a 200 kB statement that
psycopg re-parses on every execution (it caches only short queries) and the server parses and
plans again. There the rows go instead as one array per column, ``INSERT ... SELECT * FROM
unnest(...)``: a statement of a few hundred characters, the same for every batch, whatever its
size. Elsewhere (SQLite) the multi-row INSERT stays, which is what SQLite does best.

The rows written are the same either way: every value goes through its column type's own
conversion (enums to their stored value, JSON serialised, ``sqlalchemy.null()`` as SQL NULL in a
JSON column), a column a row leaves out gets its Python default (``default=...``), and an
over-long string is refused by the column as before (the arrays are cast to the bare type, never
to a length that would silently cut a value).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Table, insert
from sqlalchemy.orm import Session

BATCH = 5_000  # rows per statement: bounded, so a huge file never builds one giant array


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    returning: Sequence[Column[Any]] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (dicts of column keys, all with the same keys) into ``table`` in the
    session's transaction; the ``returning`` columns of the rows written, in no promised order.
    """
    if not rows:
        return []
    keys = list(rows[0])
    unknown = [k for k in keys if k not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(unknown)}.")
    if any(row.keys() != rows[0].keys() for row in rows):
        raise ValueError(f"Every row written to {table.name} at once needs the same columns.")
    if session.get_bind().dialect.name != "postgresql":
        stmt = insert(table)
        if not returning:
            session.execute(stmt, list(rows))
            return []
        return [tuple(r) for r in session.execute(stmt.returning(*returning), list(rows))]
    out: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), BATCH):
        out += _unnest_insert(session, table, rows[start : start + BATCH], keys, returning)
    return out


def _unnest_insert(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: list[str],
    returning: Sequence[Column[Any]],
) -> list[tuple[Any, ...]]:
    """One ``INSERT ... SELECT * FROM unnest(<one array per column>)`` (PostgreSQL)."""
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    defaults = [
        c for c in table.c if c.key not in keys and c.default is not None and not c.primary_key
    ]
    columns = [table.c[k] for k in keys] + defaults
    params: dict[str, list[Any]] = {}
    for n, col in enumerate(columns):
        given = n < len(keys)
        values = [row[col.key] if given else _default(col) for row in rows]
        convert = col.type._cached_bind_processor(dialect)
        params[f"c{n}"] = [convert(v) for v in values] if convert else values
    # %(cN)b: psycopg sends the array in binary; as text each element would be quoted and
    # escaped one by one (a JSON column's every quote), which costs more than the insert.
    arrays = ", ".join(
        f"CAST(%(c{n})b AS {_array_type(col, dialect)})" for n, col in enumerate(columns)
    )
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) "
        f"SELECT * FROM unnest({arrays})"
    )
    if returning:
        sql += f" RETURNING {', '.join(quote(c.name) for c in returning)}"
    result = session.connection().exec_driver_sql(sql, params)
    return [tuple(r) for r in result] if returning else []


def _default(col: Column[Any]) -> Any:
    """The column's Python-side default for a row that leaves it out (as Core would apply)."""
    default: Any = col.default
    if default.is_scalar:
        return default.arg
    if default.is_callable:
        return default.arg(None)  # SQLAlchemy wraps a no-argument default to take a context
    raise ValueError(f"{col.table.name}.{col.name} has a SQL default; give its value.")


def _array_type(col: Column[Any], dialect: Any) -> str:
    """``VARCHAR[]`` for ``String(3)``: the bare type, so the column itself checks lengths."""
    return re.sub(r"\(.*?\)", "", col.type.compile(dialect=dialect)) + "[]"
