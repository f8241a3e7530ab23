"""A worker SIGKILLed in the middle of a callback delivery (real processes): the callback is owed in the
database, not in the dead process, so a restarted worker delivers it, under the same X-Unlearn-Delivery
id, and the request's later callbacks follow in order."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from e2e_client import admin_client, ok, post_request, trained_digits_model, wait_for
from sqlalchemy import select

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

CALLBACK_TIMEOUT_S = 3
"""The worker's callback timeout: its lease on an attempt is 3 x this + 5 s, then another worker may retry."""


class HangingReceiver:
    """Records every POST (delivery id, status, signature, body); holds the first one open until
    `release` is set (the worker delivering it is killed meanwhile), answers the others 204."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str, bytes]] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = json.loads(body)["status"]
                receiver.received.append(
                    (self.headers["X-Unlearn-Delivery"], status, self.headers["X-Unlearn-Signature"], body)
                )
                if not receiver.first_arrived.is_set():
                    receiver.first_arrived.set()
                    receiver.release.wait(60)
                try:
                    self.send_response(204)
                    self.end_headers()
                except OSError:
                    pass  # the sender is gone

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/unlearn"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def deliveries(self) -> list[tuple[str, str]]:
        """(delivery id, status) in arrival order, each delivery once (what a receiver keeps)."""
        seen: dict[str, str] = {}
        for delivery_id, status, _, _ in list(self.received):
            seen.setdefault(delivery_id, status)
        return list(seen.items())

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging_receiver() -> Iterator[HangingReceiver]:
    receiver = HangingReceiver()
    yield receiver
    receiver.close()


def _outbox(database_url: str) -> list[Any]:
    from core.db import session_scope
    from core.db.models import CallbackDelivery

    with session_scope(database_url, readonly=True) as session:
        return list(session.execute(select(CallbackDelivery).order_by(CallbackDelivery.id)).scalars())


def test_a_worker_killed_mid_delivery_leaves_the_callback_to_the_next_worker(
    embedded_stack_with: Any, hanging_receiver: HangingReceiver
) -> None:
    from core.callbacks import verify_signature

    stack = embedded_stack_with({"UNLEARN_CALLBACK_TIMEOUT_S": str(CALLBACK_TIMEOUT_S)})
    client = admin_client(stack)
    model, train_ids = trained_digits_model(client)

    created = ok(post_request(client, model["id"], train_ids[:10], callback_url=hanging_receiver.url), 202)
    assert hanging_receiver.first_arrived.wait(60), "no worker started delivering the `queued` callback"
    worker = stack.child("worker")
    os.killpg(worker.pid, signal.SIGKILL)  # mid-POST: the receiver has not answered
    worker.process.wait(timeout=10)
    hanging_receiver.release.set()
    (first_id, first_status, _, _) = hanging_receiver.received[0]
    assert first_status == "queued"

    owed = [row for row in _outbox(stack.database_url) if row.delivery_id == first_id]
    assert [(row.status, row.attempts) for row in owed] == [("pending", 1)], "the DB still owes it"

    stack.start_worker()  # its reaper re-delivers once the dead worker's lease on the attempt ran out
    final = wait_for(client, f"/v1/deletion-requests/{created['id']}", {"succeeded", "failed"}, 240)[-1]
    assert final["status"] == "succeeded", final
    deadline = time.monotonic() + 90
    while len(hanging_receiver.deliveries()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)

    assert hanging_receiver.deliveries()[:1] == [(first_id, "queued")]
    assert [status for _, status in hanging_receiver.deliveries()] == ["queued", "running", "succeeded"]
    redelivered = [post for post in hanging_receiver.received[1:] if post[0] == first_id]
    assert redelivered and redelivered[0][1] == "queued", "the same delivery id came again after the crash"
    for _, _, signature, body in hanging_receiver.received:
        assert verify_signature(body, signature, stack.extra_env["UNLEARN_SERVER_SECRET"])
        assert json.loads(body)["id"] == created["id"]
    # The receiver records a POST before the worker has its answer and marks the row delivered.
    deadline = time.monotonic() + 30
    statuses = {row.status for row in _outbox(stack.database_url)}
    while statuses != {"delivered"} and time.monotonic() < deadline:
        time.sleep(0.2)
        statuses = {row.status for row in _outbox(stack.database_url)}
    assert statuses == {"delivered"}
