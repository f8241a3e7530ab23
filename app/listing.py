"""How the resource services read rows: one by id (else a 404 problem), or one keyset page of a list.

Written once so every list pages the same way: rows strictly after the cursor's sort key, `limit` of
them, and a signed cursor (`app.pagination`) only when more rows follow.
"""

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.errors import not_found
from app.pagination import decode_cursor, encode_cursor
from app.schemas import Page

RowT = TypeVar("RowT")
OutT = TypeVar("OutT")

SortKey = Sequence[tuple[InstrumentedAttribute[Any], type]]
"""The columns a list is ordered by (unique together), each with the type its cursor value has."""


def get_or_404(
    session: Session,
    entity: type[RowT],
    identifier: str,
    what: str,
    *,
    field: str = "id",
    where: str = "path",
) -> RowT:
    row = session.get(entity, identifier)
    if row is None:
        raise not_found(what, identifier, field=field, where=where)
    return row


def _after(columns: Sequence[InstrumentedAttribute[Any]], values: Sequence[Any]) -> ColumnElement[bool]:
    """`columns > values` in lexicographic order: a > x OR (a = x AND (b > y ...))."""
    column, value = columns[0], values[0]
    if len(columns) == 1:
        return column > value
    return (column > value) | ((column == value) & _after(columns[1:], values[1:]))


def keyset_page(
    session: Session,
    query: Select[tuple[RowT]],
    sort: SortKey,
    out: Callable[[RowT], OutT],
    *,
    cursor: str | None,
    limit: int,
    secret: str,
    resource: str,
    filters: dict[str, Any],
) -> Page[OutT]:
    """The page of `query` (rows of one entity) after `cursor` in `sort` order, each row through `out`.

    `resource` and `filters` bind the cursor to this list and these filters (see `app.pagination`).
    """
    columns = [column for column, _ in sort]
    if cursor:
        last = decode_cursor(secret, resource, filters, cursor, tuple(kind for _, kind in sort))
        query = query.where(_after(columns, last))
    rows = list(session.execute(query.order_by(*columns).limit(limit + 1)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        key = [getattr(rows[-1], column.key) for column in columns]
        next_cursor = encode_cursor(secret, resource, filters, key)
    return Page(data=[out(row) for row in rows], next_cursor=next_cursor)
