"""Callbacks through the outbox, against real HTTP receivers on 127.0.0.1: the API writes one row per
status change in the transaction of the change, the deliverer (`deliver_due`, what the worker task and
the reaper run) POSTs it signed over the exact bytes, retries with backoff under the same delivery id,
keeps each request's order, and checks the target again at delivery, connecting to the checked address.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from core.callbacks import DELIVERY_HEADER, SIGNATURE_HEADER, deliver_due, sign_body, verify_signature
from core.db import DeletionRequest, session_scope
from core.db.models import CallbackDelivery
from core.db.session import get_engine
from core.netguard import parse_networks

SECRET = "callback-secret-0123456789abcdef0123456789"
LOOPBACK = parse_networks("127.0.0.1/32")


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    at: float


@dataclass
class Receiver:
    """Answers `fail_status` to the first `failures` POSTs, then `final_status`; records every POST."""

    failures: int = 0
    fail_status: int = 503
    final_status: int = 204
    delay_s: float = 0.0
    location: str | None = None
    received: list[Received] = field(default_factory=list)
    url: str = ""


@contextmanager
def running_receiver(state: Receiver, port: int = 0) -> Iterator[Receiver]:
    """Serve `state` on 127.0.0.1:`port` (0: any free port) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(Received(body, dict(self.headers.items()), time.monotonic()))
            if state.delay_s and len(state.received) == 1:
                time.sleep(state.delay_s)
            status = state.fail_status if len(state.received) <= state.failures else state.final_status
            self.send_response(status)
            if state.location:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/unlearn"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(Receiver()) as state:
        yield state


@pytest.fixture
def settings(settings: Any) -> Any:
    """The API tests' settings with loopback receivers allowed and quick retries."""
    return settings.model_copy(
        update={
            "callback_allow_networks": LOOPBACK,
            "callback_attempts": 4,
            "callback_backoff_s": 0.1,
            "callback_timeout_s": 2.0,
        }
    )


def _post(client: Any, admin: dict[str, str], ready_model: Any, url: str, **extra: Any) -> dict[str, Any]:
    body = {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:3], "callback_url": url}
    response = client.post("/v1/deletion-requests", json={**body, **extra}, headers=admin)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _rows(settings: Any, request_id: str) -> list[CallbackDelivery]:
    with session_scope(settings.database_url, readonly=True) as session:
        query = select(CallbackDelivery).where(CallbackDelivery.request_id == request_id)
        return list(session.execute(query.order_by(CallbackDelivery.id)).scalars())


def _drain(settings: Any, request_id: str, timeout_s: float = 30.0) -> list[CallbackDelivery]:
    """Run the deliverer until every row of the request is delivered or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        deliver_due(get_engine(settings.database_url), settings)
        rows = _rows(settings, request_id)
        if all(row.status != "pending" for row in rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def test_a_delivery_is_retried_with_growing_backoff_under_one_delivery_id(
    client, keys, admin, ready_model, settings, receiver: Receiver
) -> None:
    receiver.failures = 2
    created = _post(client, admin, ready_model, receiver.url, external_ref="ticket-ü")
    (row,) = _drain(settings, created["id"])
    assert (row.status, row.attempts, row.last_status_code, row.last_error) == ("delivered", 3, 204, None)
    assert len(receiver.received) == 3
    first_gap = receiver.received[1].at - receiver.received[0].at
    second_gap = receiver.received[2].at - receiver.received[1].at
    assert first_gap >= 0.1 and second_gap >= 0.2  # 0.1 s, then doubled
    assert {got.body for got in receiver.received} == {row.body.encode()}
    body = receiver.received[0].body
    assert json.loads(body) == created  # the resource the API answered when it accepted the request
    for got in receiver.received:
        assert got.headers["Content-Type"] == "application/json"
        assert got.headers[DELIVERY_HEADER] == row.delivery_id  # every retry carries the same id
        assert verify_signature(got.body, got.headers[SIGNATURE_HEADER], settings.server_secret)
    header = receiver.received[0].headers[SIGNATURE_HEADER]
    assert header == sign_body(body, settings.server_secret) and len(header) == 7 + 64
    assert not verify_signature(body, header, SECRET)
    assert not verify_signature(body.replace(b"queued", b"failed"), header, settings.server_secret)
    assert not verify_signature(body, None, SECRET) and not verify_signature(body, header[7:], SECRET)
    assert not verify_signature(body, "sha256=" + "é" * 64, SECRET)  # an untrusted header never raises


def test_persistent_5xx_fails_after_the_attempts(client, admin, ready_model, settings, receiver) -> None:
    receiver.failures, receiver.fail_status = 100, 500
    created = _post(client, admin, ready_model, receiver.url)
    (row,) = _drain(settings, created["id"])
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 4, 500)
    assert "500" in (row.last_error or "") and len(receiver.received) == 4
    assert deliver_due(get_engine(settings.database_url), settings).delivered == 0  # nothing left to try


def test_a_4xx_or_a_redirect_is_final(client, admin, ready_model, settings, receiver) -> None:
    receiver.failures, receiver.fail_status = 100, 410
    refused = _post(client, admin, ready_model, receiver.url)
    (row,) = _drain(settings, refused["id"])
    assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, 410)
    with running_receiver(Receiver()) as elsewhere, running_receiver(Receiver()) as redirecting:
        redirecting.failures, redirecting.fail_status, redirecting.location = 100, 307, elsewhere.url
        moved = _post(client, admin, ready_model, redirecting.url, **{"class": 5, "sample_ids": None})
        (row,) = _drain(settings, moved["id"])
        assert (row.status, row.attempts, row.last_status_code) == ("failed", 1, 307)
        assert "redirect" in (row.last_error or "")
        assert len(redirecting.received) == 1 and elsewhere.received == []  # never followed


def test_a_timeout_is_retried(client, admin, ready_model, settings, receiver) -> None:
    receiver.delay_s = 1.5
    impatient = settings.model_copy(update={"callback_timeout_s": 0.3})
    created = _post(client, admin, ready_model, receiver.url)
    (row,) = _drain(impatient, created["id"])
    assert (row.status, row.attempts) == ("delivered", 2), row.last_error
    assert len(receiver.received) == 2


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_api_writes_each_status_change_and_a_down_receiver_gets_them_later_in_order(
    client, keys, admin, ready_model, settings, enqueued
) -> None:
    """The API only writes rows (a dead receiver cannot slow or fail it); delivery keeps the order."""
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/hooks/unlearn"
    key = {"Idempotency-Key": "callback-order-1"}
    body = {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:3], "callback_url": url}
    created = client.post("/v1/deletion-requests", json=body, headers={**admin, **key})
    assert created.status_code == 202 and created.json()["status"] == "queued", created.text
    request_id = created.json()["id"]
    cancelled = client.post(f"/v1/deletion-requests/{request_id}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    # Neither a replay of the creation nor a refused second cancel changes the status: no row.
    assert client.post("/v1/deletion-requests", json=body, headers={**admin, **key}).status_code == 200
    assert client.post(f"/v1/deletion-requests/{request_id}/cancel", headers=admin).status_code == 409

    rows = _rows(settings, request_id)
    assert [json.loads(row.body)["status"] for row in rows] == ["queued", "cancelled"]
    assert json.loads(rows[0].body) == created.json()
    served = client.get(f"/v1/deletion-requests/{request_id}", headers=keys.headers("reader")).json()
    assert json.loads(rows[1].body) == served == cancelled.json()
    assert rows[0].delivery_id != rows[1].delivery_id
    deadline = time.monotonic() + 10
    while ("worker.deliver_callbacks", "all-due") not in enqueued.calls and time.monotonic() < deadline:
        time.sleep(0.02)  # the API's waker enqueues the delivery task off the commit path
    assert ("worker.deliver_callbacks", "all-due") in enqueued.calls

    engine = get_engine(settings.database_url)
    deliver_due(engine, settings)  # the receiver is down: the first row fails, the second waits
    first, second = _rows(settings, request_id)
    assert (first.status, first.attempts, second.status, second.attempts) == ("pending", 1, "pending", 0)
    assert "Connect" in (first.last_error or ""), first.last_error
    with running_receiver(Receiver(), port) as revived:
        rows = _drain(settings, request_id)
    assert [row.status for row in rows] == ["delivered", "delivered"]
    assert [json.loads(post.body)["status"] for post in revived.received] == ["queued", "cancelled"]
    assert [post.headers[DELIVERY_HEADER] for post in revived.received] == [row.delivery_id for row in rows]
    for post in revived.received:
        assert verify_signature(post.body, post.headers[SIGNATURE_HEADER], settings.server_secret)


def test_a_rolled_back_status_change_owes_no_callback(client, admin, ready_model, settings) -> None:
    from core import lifecycle
    from core.db import utcnow

    created = _post(client, admin, ready_model, "http://127.0.0.1:9/hook")
    assert len(_rows(settings, created["id"])) == 1

    class Abort(Exception):
        pass

    with pytest.raises(Abort), session_scope(settings.database_url) as session:
        request = session.get(DeletionRequest, created["id"])
        assert request is not None
        lifecycle.request_cancelled(session, request, utcnow(), actor="test")
        session.flush()  # the change reached the database, then the transaction rolls back
        raise Abort
    assert len(_rows(settings, created["id"])) == 1
    with session_scope(settings.database_url) as session:
        request = session.get(DeletionRequest, created["id"])
        assert request is not None and request.status == "queued"
        lifecycle.request_cancelled(session, request, utcnow(), actor="test")
    rows = _rows(settings, created["id"])
    assert [json.loads(row.body)["status"] for row in rows] == ["queued", "cancelled"]


def test_a_target_refused_at_delivery_fails_without_being_contacted(
    client, admin, ready_model, settings, receiver: Receiver
) -> None:
    """Allowed when posted, not any more when delivered (the allow-list was emptied): never retried."""
    created = _post(client, admin, ready_model, receiver.url)
    strict = settings.model_copy(update={"callback_allow_networks": ()})
    (row,) = _drain(strict, created["id"])
    assert (row.status, row.attempts) == ("failed", 1)
    assert "callback target refused" in (row.last_error or "") and "loopback" in (row.last_error or "")
    assert receiver.received == []


def _fake_resolver(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in names:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (names[host], port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_dns_that_changes_its_answer_after_the_post_is_refused_at_delivery(
    client, admin, ready_model, settings, monkeypatch
) -> None:
    _fake_resolver(monkeypatch, {"hooks.partner.test": "93.184.216.34"})
    created = _post(client, admin, ready_model, "http://hooks.partner.test/unlearn")
    _fake_resolver(monkeypatch, {"hooks.partner.test": "169.254.169.254"})  # the metadata endpoint
    (row,) = _drain(settings, created["id"])
    assert (row.status, row.attempts) == ("failed", 1)
    assert "169.254.169.254" in (row.last_error or "") and "link-local" in (row.last_error or "")


def test_delivery_connects_to_the_checked_address_with_the_url_host(
    client, admin, ready_model, settings, receiver: Receiver, monkeypatch
) -> None:
    """The name is resolved once, by the check; the connection goes to that address (the test host has
    no DNS for the name: a client resolving it again could not connect) and says the URL's Host."""
    port = receiver.url.split(":")[2].split("/")[0]
    _fake_resolver(monkeypatch, {"receiver.partner.test": "127.0.0.1"})
    created = _post(client, admin, ready_model, f"http://receiver.partner.test:{port}/hooks")
    (row,) = _drain(settings, created["id"])
    assert row.status == "delivered", row.last_error
    (got,) = receiver.received
    assert got.headers["Host"] == f"receiver.partner.test:{port}"
    assert got.headers[DELIVERY_HEADER] == row.delivery_id
