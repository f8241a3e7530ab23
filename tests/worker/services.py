"""Test access to real services: a throw-away PostgreSQL database and a Redis URL, or a stated skip.

Shared by tests/worker and tests/e2e (loaded by path from their conftest files). Without
`UNLEARN_TEST_DATABASE_URL` / `UNLEARN_TEST_REDIS_URL` the service variants skip with a reason; with
`REQUIRE_SERVICES=1` an unreachable service is a failure instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

DATABASE_ENV = "UNLEARN_TEST_DATABASE_URL"
REDIS_ENV = "UNLEARN_TEST_REDIS_URL"


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Fail under REQUIRE_SERVICES=1, else skip, always with the reason."""
    if services_required():
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def _admin_dsn(base_url: str) -> str:
    from sqlalchemy.engine import make_url

    return (
        make_url(base_url)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )


@contextmanager
def fresh_postgres_database(base_url: str, *, template: str | None = None) -> Iterator[str]:
    """A uniquely named database on the server of `base_url` (a copy of `template` if given), dropped
    afterwards. Created through the `postgres` maintenance database so other users of the shared `test`
    database (other test sessions, other helpers) never see our rows."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(base_url)
    name = f"unlearn_t_{uuid.uuid4().hex[:12]}"
    admin_dsn = _admin_dsn(base_url)
    try:
        admin = psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        unavailable(f"PostgreSQL at {url.render_as_string()} is unreachable: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    database_url = url.set(database=name).render_as_string(hide_password=False)
    try:
        yield database_url
    finally:
        from core.db.session import dispose_engine

        dispose_engine(database_url)
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    assert name is not None
    return name


def redis_url_with_db(base_url: str, db: int) -> str:
    """`base_url` pointed at database number `db` (tests use their own numbers, away from db 0)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        unavailable(f"Redis at {url} is unreachable: {error}")


def database_backends() -> list[str]:
    """`sqlite` always; `postgresql` too when the CI variable names a server (else a stated skip)."""
    return ["sqlite", "postgresql"]


@contextmanager
def database_url_for(backend: str, tmp_dir: str) -> Iterator[str]:
    """An empty database of `backend`: a SQLite file under tmp_dir, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir}/unlearn.db"
        return
    base = os.environ.get(DATABASE_ENV)
    if not base:
        unavailable(f"{DATABASE_ENV} is not set (the PostgreSQL variant runs in CI)")
    assert base is not None
    with fresh_postgres_database(base) as url:
        yield url


@contextmanager
def clone_database(template_url: str, tmp_dir: str) -> Iterator[str]:
    """A private copy of a prepared database: a file copy for SQLite, CREATE DATABASE ... TEMPLATE for
    PostgreSQL (both far cheaper than migrating and loading rows again)."""
    import shutil

    from core.db.session import dispose_engine

    dispose_engine(template_url)  # PostgreSQL refuses a template that has open connections
    if template_url.startswith("sqlite"):
        target = f"{tmp_dir}/unlearn.db"
        shutil.copyfile(template_url.removeprefix("sqlite:///"), target)
        yield f"sqlite:///{target}"
        return
    with fresh_postgres_database(template_url, template=database_name(template_url)) as url:
        yield url
