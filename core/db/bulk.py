"""Bulk inserts for the write path: a thousand rows of one table at the cost of one statement.

On PostgreSQL the rows go in with one `COPY ... FROM STDIN` (psycopg). Measured on 1,000 deletion-request
rows (2 cores, local server): the ORM's flush took 110 ms of client CPU, a Core executemany 37-40 ms, COPY
19 ms; the server spent 22-34, 28-30 and 16-18 ms. Each value first passes through its column type's bind
processor, so COPY stores exactly what an INSERT through SQLAlchemy stores, and a database error comes out
as SQLAlchemy's own exception class (IntegrityError for a duplicate key), as from any statement.
Elsewhere (SQLite) the rows go in with one executemany INSERT.

The API's new deletion requests go in as rows, not ORM objects (`fill_defaults` completes them as an
ORM insert would): building, attaching and flushing 1,000 objects was 40% of a batch call's CPU
(py-spy, bench/load_api.py), more than the checks, the COPY and the audit chain together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from sqlalchemy import Column, Connection, Table, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any] | None
_processors: dict[tuple[str, str, str], Processor] = {}


def _processor(dialect: Dialect, column: Column[Any]) -> Processor:
    key = (dialect.name, column.table.name, column.name)
    if key not in _processors:
        _processors[key] = column.type.dialect_impl(dialect).bind_processor(dialect)
    return _processors[key]


def insert_rows(
    connection: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
) -> None:
    """Insert `rows` (each naming the same columns, by column name) into `table`: the `columns` given
    (default: all the rows name; the others store NULL)."""
    if not rows:
        return
    names = list(columns if columns is not None else rows[0])
    if connection.dialect.name != "postgresql":
        connection.execute(insert(table), [{name: row[name] for name in names} for row in rows])
        return
    processors = [(name, _processor(connection.dialect, table.c[name])) for name in names]
    statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    raw = connection.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    try:
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([process(row[name]) if process else row[name] for name, process in processors])
    except psycopg.Error as error:
        invalidated = connection.dialect.is_disconnect(error, raw, None)
        if invalidated:
            connection.invalidate(error)
        raise sa_exc.DBAPIError.instance(
            statement,
            None,
            error,
            psycopg.Error,
            hide_parameters=True,
            connection_invalidated=invalidated,
            dialect=connection.dialect,
        ) from error


def _unset_fill(table: Table, column: Column[Any]) -> Callable[[], Any] | None:
    """What a row that leaves `column` out stores: its Python-side default (a callable giving the value),
    or None for NULL. An SQL-side default would not be read back, so it is refused when used."""
    default = column.default
    if column.server_default is not None or (
        default is not None and not (default.is_scalar or default.is_callable)
    ):

        def refuse() -> Any:
            raise ValueError(f"{table.name}.{column.name} has an SQL-side default: name its value")

        return refuse
    if default is None:
        return None
    if default.is_scalar:
        return lambda: default.arg  # type: ignore[attr-defined]
    return lambda: default.arg(None)  # type: ignore[attr-defined]


_fills: dict[Table, tuple[frozenset[str], list[tuple[str, Callable[[], Any] | None]]]] = {}


def fill_defaults(table: Table, rows: Sequence[dict[str, Any]]) -> list[str]:
    """Complete each row (column name -> value) in place with what an ORM insert stores for the columns
    it leaves out: the column's Python-side default, or None (SQL NULL). A row then holds every column, as
    if read back. Returns the columns to insert: a column with neither value nor default stays out of the
    insert, so a JSON column stores SQL NULL, not JSON null, exactly as the ORM leaves it.

    Every row must name the same columns (ValueError otherwise: insert them apart), all of the table's
    (KeyError); a left-out column with an SQL-side default is refused (ValueError): it would not be read
    back."""
    if table not in _fills:
        names = frozenset(column.name for column in table.columns)
        _fills[table] = (names, [(column.name, _unset_fill(table, column)) for column in table.columns])
    names, fills = _fills[table]
    if not rows:
        return []
    named = rows[0].keys() & names
    if len(named) != len(rows[0]):
        raise KeyError(f"{table.name} has no column {sorted(rows[0].keys() - names)[0]!r}")
    inserted = [name for name, fill in fills if name in named or fill is not None]
    left_out = [(name, fill) for name, fill in fills if name not in named]
    for row in rows:
        if row.keys() != named:
            raise ValueError(f"rows of {table.name} name different columns: insert them apart")
        for name, fill in left_out:
            row[name] = fill() if fill is not None else None
    return inserted
