"""`core.db.bulk`: rows inserted in bulk (COPY on PostgreSQL) read back exactly as rows the ORM inserted,
objects come out persistent and unchanged (no second INSERT at the next flush), and a database error is
SQLAlchemy's own exception class, as from any statement (the API's retry and outage handling rely on it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy import exc as sa_exc
from worker_helpers import SeededModel

from core import lifecycle
from core.db import DeletionRequest, PendingItem, RequestKind, session_scope, utcnow
from core.db.bulk import add_inserted, insert_rows

NOW = utcnow()


def _request(model_id: str, **fields: Any) -> DeletionRequest:
    values: dict[str, Any] = {
        "model_id": model_id,
        "kind": RequestKind.samples,
        "sample_ids": ["a", "b"],
        "forget_class": None,
        "method": "dau",
        "params": {"alpha": 1.5, "note": "é"},
        "due_at": NOW + timedelta(days=30),
        "received_at": NOW,
        "request_hash": "0" * 64,
        "external_ref": None,
    }
    return DeletionRequest(**{**values, **fields})


COLUMNS = [column.name for column in DeletionRequest.__table__.columns if column.name != "id"]


def _stored(url: str, request_id: str) -> dict[str, Any]:
    """Every column as the database holds it (JSON as its text, so SQL NULL and JSON null differ)."""
    casts = ", ".join(f"CAST({name} AS TEXT) AS {name}" for name in COLUMNS)
    with session_scope(url, readonly=True) as session:
        row = session.execute(
            text(f"SELECT {casts} FROM deletion_requests WHERE id = :id"), {"id": request_id}
        )
        return dict(row.mappings().one())


def test_bulk_rows_equal_the_orm_rows(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    with session_scope(url) as session:
        by_orm = _request(seeded_model.model_id)
        by_orm_class = _request(
            seeded_model.model_id, kind=RequestKind.class_, sample_ids=None, forget_class=3
        )
        session.add_all([by_orm, by_orm_class])
        session.flush()
        by_bulk = _request(seeded_model.model_id)
        by_bulk_class = _request(
            seeded_model.model_id, kind=RequestKind.class_, sample_ids=None, forget_class=3
        )
        add_inserted(session, [by_bulk])
        add_inserted(session, [by_bulk_class])
        pairs = [(by_orm.id, by_bulk.id), (by_orm_class.id, by_bulk_class.id)]
    for orm_id, bulk_id in pairs:
        orm_row, bulk_row = _stored(url, orm_id), _stored(url, bulk_id)
        orm_row.pop("updated_at"), bulk_row.pop("updated_at")  # each its own moment
        assert bulk_row == orm_row
    assert _stored(url, by_bulk.id)["status"] == "queued"  # the column's default, from the Python side
    assert _stored(url, by_bulk.id)["error"] is None  # an unset JSON column is SQL NULL, as the ORM leaves it


def test_inserted_objects_are_persistent_and_clean(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    with session_scope(url) as session:
        requests = [_request(seeded_model.model_id, external_ref=f"r{index}") for index in range(3)]
        add_inserted(session, requests)
        assert not session.new and not session.dirty
        assert all(request in session for request in requests)
        assert requests[0].cancel_requested is False and requests[0].updated_at is not None  # defaults set
        assert requests[0].started_at is None  # unset: None on the object, not a lazy load
        requests[1].external_ref = "changed"
        session.flush()  # one UPDATE for the change; a second INSERT would fail on the primary key
        ids = [request.id for request in requests]
    with session_scope(url, readonly=True) as session:
        refs = session.execute(
            select(DeletionRequest.id, DeletionRequest.external_ref).where(DeletionRequest.id.in_(ids))
        ).all()
    assert dict(refs) == {ids[0]: "r0", ids[1]: "changed", ids[2]: "r2"}


def test_objects_it_cannot_insert_in_one_go_are_refused(settings: Any, seeded_model: SeededModel) -> None:
    with session_scope(settings.database_url) as session:
        stored = _request(seeded_model.model_id)
        session.add(stored)
        session.flush()
        with pytest.raises(ValueError, match="not new"):
            add_inserted(session, [stored])
        differ = [_request(seeded_model.model_id), DeletionRequest(model_id=seeded_model.model_id)]
        with pytest.raises(ValueError, match="different attributes"):
            add_inserted(session, differ)
        with pytest.raises(TypeError, match="one class"):
            add_inserted(session, [_request(seeded_model.model_id), PendingItem()])


def test_a_duplicate_key_is_an_integrity_error(settings: Any, seeded_model: SeededModel) -> None:
    url = settings.database_url
    with session_scope(url) as session:
        request = _request(seeded_model.model_id)
        lifecycle.requests_received(session, [request], received_at=NOW)
        row = {"model_id": seeded_model.model_id, "kind": "s", "item": "a", "request_id": request.id}
        insert_rows(session.connection(), PendingItem.__table__, [row])
    with pytest.raises(sa_exc.IntegrityError), session_scope(url) as session:
        insert_rows(session.connection(), PendingItem.__table__, [{**row, "item": "b"}, row])
    with session_scope(url, readonly=True) as session:  # nothing of the failed statement stayed
        items = session.execute(select(PendingItem.item).where(PendingItem.request_id == request.id))
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
