"""The audit log: every state change is a chained event; verify detects a row altered with raw SQL."""

from __future__ import annotations

from sqlalchemy import text

from core.db import append_audit_event, session_scope, verify_audit_chain
from core.db.audit import GENESIS_HASH


def test_chain_links_and_verifies(client, keys, ready_model, db) -> None:
    auditor = keys.headers("auditor")
    client.post(
        "/v1/deletion-requests",
        json={"model_id": ready_model.model_id, "class": 1},
        headers=keys.headers("admin"),
    )
    events, cursor = [], None
    while True:
        page = client.get(
            "/v1/audit-log", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=auditor
        ).json()
        events += page["data"]
        if not (cursor := page["next_cursor"]):
            break
    names = [e["event"] for e in events]
    assert names[:6] == ["api_key.created"] * 6
    assert names[-3:] == ["dataset.registered", "version.created", "request.received"]
    assert events[0]["prev_hash"] == GENESIS_HASH
    assert all(
        later["prev_hash"] == earlier["hash"] for earlier, later in zip(events, events[1:], strict=False)
    )
    verdict = client.get("/v1/audit-log/verify", headers=auditor).json()
    assert verdict == {
        "ok": True,
        "checked": len(events),
        "first_bad_id": None,
        "reason": None,
        "last_hash": events[-1]["hash"],
    }
    filtered = client.get("/v1/audit-log", params={"event": "request.received"}, headers=auditor).json()[
        "data"
    ]
    assert [e["model_id"] for e in filtered] == [ready_model.model_id]


def test_verify_names_a_row_altered_with_raw_sql(client, keys, ready_model, db) -> None:
    auditor = keys.headers("auditor")
    with session_scope(db, readonly=True) as session:
        target = session.execute(
            text("SELECT id FROM audit_events WHERE event = 'version.created'")
        ).scalar_one()
    with session_scope(db) as session:
        session.execute(text("UPDATE audit_events SET actor = 'mallory' WHERE id = :id"), {"id": target})
    verdict = client.get("/v1/audit-log/verify", headers=auditor).json()
    assert verdict["ok"] is False and verdict["first_bad_id"] == target and "altered" in verdict["reason"]


def test_verify_detects_a_deleted_row(db, keys) -> None:
    with session_scope(db, readonly=True) as session:
        ids = session.execute(text("SELECT id FROM audit_events ORDER BY id")).scalars().all()
    with session_scope(db) as session:
        session.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": ids[2]})
    with session_scope(db, readonly=True) as session:
        verdict = verify_audit_chain(session)
    assert not verdict.ok and verdict.first_bad_id == ids[3] and "prev_hash" in verdict.reason


def test_append_round_trips_data_and_extends_the_chain(db) -> None:
    with session_scope(db) as session:
        first = append_audit_event(session, "job.started", job_id="job_1", data={"tuple": (1, 2), "f": 0.1})
        second = append_audit_event(session, "job.finished", job_id="job_1", data={"ünïcode": "✓"})
        flat = {"n": 3, "s": "x", "b": True, "none": None}
        third = append_audit_event(session, "job.finished", job_id="job_2", data=flat)
        flat["n"] = 4  # the caller's dict is not the event's
        int_keys = append_audit_event(session, "job.finished", job_id="job_3", data={1: "a"})
    assert first.data == {"tuple": [1, 2], "f": 0.1} and second.prev_hash == first.hash
    assert third.data == {"n": 3, "s": "x", "b": True, "none": None} and int_keys.data == {"1": "a"}
    with session_scope(db, readonly=True) as session:
        assert verify_audit_chain(session).ok
