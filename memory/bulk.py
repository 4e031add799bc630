"""Writing many rows of one table at once, in one statement per batch, on either backend.

Why: a bank file of 10,000 lines writes some 50,000 rows (its lines, payments, applications,
activity and audit rows). SQLAlchemy's multi-row ``INSERT ... VALUES`` ("insertmanyvalues")
renders one placeholder per value: on PostgreSQL a 500-row batch is a 200 kB statement that
psycopg re-parses on every execution (it caches only short queries) and the server parses and
plans again. There the rows go instead as one array per column, ``INSERT ... SELECT * FROM
unnest(...)``: a statement of a few hundred characters, the same for every batch, whatever its
size. Elsewhere (SQLite) the multi-row INSERT stays, which is what SQLite does best.

Changed rows of the session (a batch's invoice balances, its bank lines' status) are written the
same way on PostgreSQL by :func:`write_changes`: one ``UPDATE ... FROM unnest(...)`` per set of
changed columns, where the unit of work would send one UPDATE per row.

The rows written are the same either way: every value goes through its column type's own
conversion (enums to their stored value, JSON serialised, ``sqlalchemy.null()`` as SQL NULL in a
JSON column), a column a row leaves out gets its Python default (``default=...``), and an
over-long string is refused by the column as before (the arrays are cast to the bare type, never
to a length that would silently cut a value).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Column, Select, String, Table, any_, bindparam, func, insert
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapper, Session, make_transient_to_detached
from sqlalchemy.orm.attributes import PASSIVE_NO_INITIALIZE, set_committed_value
from sqlalchemy.sql.elements import ColumnElement

from memory.queue_version import WATCHED, mark_queue_changed

BATCH = 5_000  # rows per statement: bounded, so a huge file never builds one giant array
T = TypeVar("T")
IN_CHUNK = 500  # values per ``IN (...)`` where the backend takes no array (SQLite)


def among(session: Session, column: Any, values: Sequence[Any]) -> list[ColumnElement[bool]]:
    """Conditions that together say ``column IN values``: run one query per condition.

    Why: an ``IN`` of 500 values is 500 bind parameters, a statement psycopg parses again on
    every execution (it caches only short ones) and the server parses and plans again; a batch
    of bank lines reads some twenty of them per chunk. On PostgreSQL it is one condition,
    ``column = ANY(<one array>)``, whatever the number of values (a short statement, the array
    sent in one piece, cast to the column's bare type so a long string is never cut to the
    column's length and matched by its prefix). Elsewhere, one ``IN`` per :data:`IN_CHUNK`
    values (SQLite bounds the parameters of a statement). No values: no condition, no query.
    """
    values = list(values)
    if not values:
        return []
    if session.get_bind().dialect.name == "postgresql":
        kind = String() if isinstance(column.type, String) else column.type
        return [column == any_(bindparam(None, values, type_=ARRAY(kind)))]
    return [column.in_(values[i : i + IN_CHUNK]) for i in range(0, len(values), IN_CHUNK)]


def select_among(
    session: Session, stmt: Select[Any], column: Any, values: Sequence[Any]
) -> list[Select[Any]]:
    """``stmt`` narrowed to the rows whose ``column`` is among ``values``, as queries to run.

    On PostgreSQL the values are a table joined on ``column`` (``unnest`` of one array), not a
    condition: in a transaction that has just written many rows, with no statistics yet, the
    planner may take ``column = ANY(...)`` for a filter checked against every row the rest of
    the WHERE selects (each row against every value: a payment reference looked up among an
    organisation's payments cost 150 ms a batch after 10,000 of them). Joined, each value is
    looked up by the column's index, or both sides are hashed. Elsewhere as :func:`among`.
    Duplicates among ``values`` repeat rows; pass distinct values.
    """
    values = list(values)
    if not values:
        return []
    if session.get_bind().dialect.name != "postgresql":
        return [stmt.where(cond) for cond in among(session, column, values)]
    kind = String() if isinstance(column.type, String) else column.type
    given = (
        func.unnest(bindparam(None, values, type_=ARRAY(kind)))
        .table_valued("value")
        .render_derived()
    )
    return [stmt.join(given, column == given.c.value)]


def built(model: type[T], values: dict[str, Any]) -> T:
    """A new row of ``model`` with ``values``, what ``model(**values)`` makes (transient, those
    attributes set, the rest left to the INSERT's defaults), without the constructor's
    instrumentation: one event and history entry per column, which a new row's INSERT never
    reads. Why: a bank file posts some 10,000 payments and as many cash applications."""
    obj = sa_inspect(model).class_manager.new_instance()
    obj.__dict__.update(values)
    return cast(T, obj)


def loaded(model: type[T], values: dict[str, Any]) -> T:
    """A row of ``model`` as if read from the database, in no session yet: ``values`` (every
    column, the primary key included) are its loaded state and it has nothing to write.

    Why not ``model(**values)`` and ``make_transient_to_detached``: the constructor sets each
    column through the ORM's instrumentation (an event and a history entry per column) that the
    detached row then forgets; for the lines a bank file auto-applies (8,500 rows of 19 columns)
    that was most of what storing them cost in Python. Same end state: the same values,
    committed, the identity key from the primary key.
    """
    obj = sa_inspect(model).class_manager.new_instance()
    obj.__dict__.update(values)
    make_transient_to_detached(obj)
    return cast(T, obj)


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    returning: Sequence[Column[Any]] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (dicts of column keys, all with the same keys) into ``table`` in the
    session's transaction; the ``returning`` columns of the rows written, in no promised order.
    Nothing is flushed first: rows these refer to (a foreign key) must be written already.
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
        with session.no_autoflush:  # as on PostgreSQL: the caller flushes what rows refer to
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
    params: dict[str, Any] = {}
    picked: list[str] = []  # what each column takes: a column of the arrays, or one value
    arrays: list[str] = []
    for n, col in enumerate(columns):
        given = n < len(keys)
        values = [row[col.key] if given else _default(col) for row in rows]
        convert = col.type._cached_bind_processor(dialect)
        values = [convert(v) for v in values] if convert else values
        if n and _same(values):  # the first column stays an array: unnest needs one
            params[f"c{n}"] = values[0]
            picked.append(f"CAST(%(c{n})s AS {_array_type(col, dialect)[:-2]})")
            continue
        params[f"c{n}"] = values
        # %(cN)b: psycopg sends the array in binary; as text each element would be quoted and
        # escaped one by one (a JSON column's every quote), which costs more than the insert.
        arrays.append(f"CAST(%(c{n})b AS {_array_type(col, dialect)})")
        picked.append(f"v.c{n}")
    names = ", ".join(p[2:] for p in picked if p.startswith("v."))
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) "
        f"SELECT {', '.join(picked)} FROM unnest({', '.join(arrays)}) AS v({names})"
    )
    if returning:
        sql += f" RETURNING {', '.join(quote(c.name) for c in returning)}"
    result = session.connection().exec_driver_sql(sql, params)
    return [tuple(r) for r in result] if returning else []


# Types whose equal values are the same value in the database (a Decimal's scale or a float's
# sign of zero would not be): a column of equal values of one of these is sent once.
_PLAIN = (str, int, bool, type(None), date, datetime)


def _same(values: list[Any]) -> bool:
    """Whether every value (as sent, after the column's conversion) is the first one.

    Why: a batch repeats many values in every row (the organisation, the currency, who and when,
    a status); each element of an array is dumped by psycopg in Python, one call each, which was
    a tenth of the import's CPU on PostgreSQL. One value in its column's type is the same row.
    """
    first = values[0]
    return (
        len(values) > 1
        and type(first) in _PLAIN
        and len(set(map(type, values))) == 1
        and values.count(first) == len(values)
    )


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


def write_changes(session: Session, objs: Sequence[Any]) -> None:
    """On PostgreSQL, write the changed columns of these persistent rows of the session now, in
    one UPDATE per table and set of changed columns, and tell the session they are written (the
    next flush has nothing left to send for them). Elsewhere the flush writes them.

    Why only there: the unit of work sends a batch's UPDATEs as an executemany, one statement
    per row; psycopg and the server handle each on its own, SQLite runs them in one call.

    The same UPDATE the unit of work would have sent, set-based: a column with ``onupdate``
    gets its new value as well, and the review queue's counter is bumped for the tables it
    watches. Anything else (a new, deleted or versioned row, a relationship, a column not
    loaded) is left to the flush. The rows stay marked as modified until that flush, so a
    rolled-back savepoint still expires them and they are read again as the database has them.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    groups: dict[tuple[Mapper[Any], tuple[str, ...]], list[Any]] = {}
    for obj in objs:
        state = sa_inspect(obj)
        mapper = state.mapper
        if not state.persistent or state.deleted or mapper.version_id_col is not None:
            continue
        columns = mapper.columns
        # state.get_history, not state.attrs[k].history: ``attrs`` builds a view of every
        # attribute of the row on each call, most of what this loop cost on a large batch
        changed = [
            k
            for k in state.committed_state
            if state.get_history(k, PASSIVE_NO_INITIALIZE).has_changes()
        ]
        if not changed or any(k not in columns or k not in state.dict for k in changed):
            continue
        groups.setdefault((mapper, tuple(sorted(changed))), []).append(obj)
    for (mapper, keys), rows in groups.items():
        for start in range(0, len(rows), BATCH):
            _update(session, mapper, keys, rows[start : start + BATCH])


def _update(session: Session, mapper: Mapper[Any], keys: tuple[str, ...], objs: list[Any]) -> None:
    """One ``UPDATE ... FROM unnest(...)`` of ``keys`` (and the ``onupdate`` columns) for
    ``objs``, by primary key (PostgreSQL)."""
    table = _table(mapper)
    (pk,) = (cast(Column[Any], c) for c in mapper.primary_key)
    cols = [mapper.get_property(k).columns[0] for k in keys]  # type: ignore[attr-defined]
    stamped = [c for c in table.c if c.onupdate is not None and c.key not in keys]
    values = {c.key: _on_update(c) for c in stamped}
    rows = [[getattr(o, k) for k in keys] + [values[c.key] for c in stamped] for o in objs]
    targets = cols + stamped
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer.quote
    arrays = [f"CAST(%(k)b AS {_array_type(pk, dialect)})"]
    names = ["k"]
    sets: list[str] = []
    params: dict[str, Any] = {"k": [sa_inspect(o).identity[0] for o in objs]}
    for n, col in enumerate(targets):
        convert = col.type._cached_bind_processor(dialect)
        column = [row[n] for row in rows]
        column = [convert(v) for v in column] if convert else column
        if _same(column):
            params[f"c{n}"] = column[0]
            sets.append(f"{quote(col.name)} = CAST(%(c{n})s AS {_array_type(col, dialect)[:-2]})")
            continue
        params[f"c{n}"] = column
        arrays.append(f"CAST(%(c{n})b AS {_array_type(col, dialect)})")
        names.append(f"c{n}")
        sets.append(f"{quote(col.name)} = v.c{n}")
    session.connection().exec_driver_sql(
        f"UPDATE {quote(table.name)} SET {', '.join(sets)} FROM unnest({', '.join(arrays)}) "
        f"AS v({', '.join(names)}) WHERE {quote(table.name)}.{quote(pk.name)} = v.k",
        params,
    )
    for obj, row in zip(objs, rows, strict=True):
        for col, value in zip(targets, row, strict=True):
            set_committed_value(obj, mapper.get_property_by_column(col).key, value)
    if mapper.class_ in WATCHED:
        for org_id in {o.org_id for o in objs}:
            mark_queue_changed(session, org_id)


def _table(mapper: Mapper[Any]) -> Table:
    table = mapper.local_table
    assert isinstance(table, Table)
    return table


def _on_update(col: Column[Any]) -> Any:
    """The value a column's ``onupdate`` gives a row the unit of work updates."""
    onupdate: Any = col.onupdate
    if onupdate.is_scalar:
        return onupdate.arg
    if onupdate.is_callable:
        return onupdate.arg(None)
    raise ValueError(f"{col.table.name}.{col.name} has a SQL onupdate; leave it to the flush.")
