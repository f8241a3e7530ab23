"""`core.db.bulk` and the new requests it stores: rows inserted in bulk (COPY on PostgreSQL) read back
exactly as rows the ORM inserted, a received row holds what the database holds (the API answers from it),
and a database error is SQLAlchemy's own exception class, as from any statement (the API's retry and
outage handling rely on it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select, text
from sqlalchemy import exc as sa_exc
from worker_helpers import SeededModel

from core import lifecycle
from core.db import DeletionRequest, PendingItem, RequestKind, RequestStatus, new_id, session_scope, utcnow
from core.db.bulk import fill_defaults, insert_rows
from core.resources import request_resource

NOW = utcnow()


def _fields(model_id: str, **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": new_id("req"),
        "model_id": model_id,
        "kind": RequestKind.samples,
        "sample_ids": ["a", "b"],
        "forget_class": None,
        "method": "dau",
        "params": {"alpha": 1.5, "note": "é"},
        "due_at": NOW + timedelta(days=30),
        "request_hash": "0" * 64,
        "external_ref": None,
        "callback_url": None,
    }
    return {**values, **fields}


COLUMNS = [column.name for column in DeletionRequest.__table__.columns if column.name != "id"]


def _stored(url: str, request_id: str) -> dict[str, Any]:
    """Every column as the database holds it (JSON as its text, so SQL NULL and JSON null differ)."""
    casts = ", ".join(f"CAST({name} AS TEXT) AS {name}" for name in COLUMNS)
    with session_scope(url, readonly=True) as session:
        row = session.execute(
            text(f"SELECT {casts} FROM deletion_requests WHERE id = :id"), {"id": request_id}
        )
        return dict(row.mappings().one())


def test_received_rows_equal_the_orm_rows(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    model_id = seeded_model.model_id
    as_class: dict[str, Any] = {"kind": RequestKind.class_, "sample_ids": None, "forget_class": 3}
    with session_scope(url) as session:
        by_orm = DeletionRequest(**_fields(model_id), received_at=NOW)
        by_orm_class = DeletionRequest(**_fields(model_id, **as_class), received_at=NOW)
        session.add_all([by_orm, by_orm_class])
        session.flush()
        by_rows = [_fields(model_id), _fields(model_id, **as_class)]
        lifecycle.requests_received(session, by_rows, received_at=NOW)
        pairs = [(by_orm.id, by_rows[0]["id"]), (by_orm_class.id, by_rows[1]["id"])]
    for orm_id, bulk_id in pairs:
        orm_row, bulk_row = _stored(url, orm_id), _stored(url, bulk_id)
        orm_row.pop("updated_at"), bulk_row.pop("updated_at")  # each its own moment
        assert bulk_row == orm_row
    assert _stored(url, by_rows[0]["id"])["status"] == "queued"
    assert _stored(url, by_rows[0]["id"])["error"] is None  # a left-out JSON column is SQL NULL, as the ORM's


def test_a_received_row_is_the_resource_the_database_serves(settings: Any, seeded_model: SeededModel) -> None:
    """The API answers a new request from its row: that answer must be what GET serves afterwards."""
    url = settings.database_url
    row = _fields(seeded_model.model_id, external_ref="r1", callback_url="https://example.org/hook")
    with session_scope(url) as session:
        lifecycle.requests_received(session, [row], received_at=NOW)
    assert row.keys() == {column.name for column in DeletionRequest.__table__.columns}
    assert row["status"] == RequestStatus.queued and row["cancel_requested"] is False
    assert row["started_at"] is None and row["updated_at"] is not None
    with session_scope(url, readonly=True) as session:
        stored = session.get(DeletionRequest, row["id"])
        assert request_resource(row) == request_resource(stored)


def test_a_row_that_names_no_column_or_needs_the_database_is_refused() -> None:
    with pytest.raises(KeyError, match="no column 'colour'"):
        fill_defaults(DeletionRequest.__table__, [{"id": "req_x", "colour": "red"}])
    table = Table(
        "server_side",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("x", String, server_default="a"),
    )
    assert fill_defaults(table, [{"id": 1, "x": "given"}]) == ["id", "x"]  # named: nothing to read back
    with pytest.raises(ValueError, match="SQL-side default"):
        fill_defaults(table, [{"id": 1}])
    with pytest.raises(ValueError, match="name different columns"):
        fill_defaults(table, [{"id": 1, "x": "a"}, {"id": 2}])


def test_a_duplicate_key_is_an_integrity_error(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    with session_scope(url) as session:
        request = _fields(seeded_model.model_id)
        lifecycle.requests_received(session, [request], received_at=NOW)
        row = {"model_id": seeded_model.model_id, "kind": "s", "item": "a", "request_id": request["id"]}
        insert_rows(session.connection(), PendingItem.__table__, [row])
    with pytest.raises(sa_exc.IntegrityError), session_scope(url) as session:
        insert_rows(session.connection(), PendingItem.__table__, [{**row, "item": "b"}, row])
    with session_scope(url, readonly=True) as session:  # nothing of the failed statement stayed
        items = session.execute(select(PendingItem.item).where(PendingItem.request_id == request["id"]))
        assert items.scalars().all() == ["a"]


def test_a_lost_connection_is_an_invalidated_operational_error(
    settings: Any, seeded_model: SeededModel
) -> None:
    url = settings.database_url
    if not url.startswith("postgresql"):
        pytest.skip("the connection is lost by terminating its PostgreSQL backend")
    killer = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with session_scope(url) as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
            with killer.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            row = {"model_id": seeded_model.model_id, "kind": "s", "item": "a", "request_id": "req_x"}
            with pytest.raises(sa_exc.OperationalError) as raised:
                insert_rows(session.connection(), PendingItem.__table__, [row])
            assert raised.value.connection_invalidated
            session.rollback()
    finally:
        killer.dispose()
