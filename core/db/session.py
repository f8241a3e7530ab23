"""Engines and sessions, shared by the API and the worker (the FastAPI dependency is `app.api.deps`).

One engine per database URL per process (`get_engine`). On SQLite every transaction opened through
`session_scope()` or `SessionDep` starts with `BEGIN IMMEDIATE` (it takes the write lock up front), so a
read-then-write transaction can never fail half-way because another process wrote in between; the cost
is that transactions must be short. Never hold a session open across a long computation (a training
loop): open a `session_scope()` per update. `session_scope(readonly=True)` starts a plain deferred
transaction for long reads.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Lock
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

_engines: dict[str, Engine] = {}
_engines_lock = Lock()
SQLITE_BUSY_TIMEOUT_S = 30.0


def _install_sqlite_transaction_control(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so that BEGIN is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        deferred = conn.get_execution_options().get("sqlite_deferred", False)
        conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """A new engine for `url` (most code wants the cached `get_engine`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        )
        _install_sqlite_transaction_control(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(url: str | None = None) -> Engine:
    url = url or get_settings().database_url
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def dispose_engine(url: str) -> None:
    """Forget and close the cached engine for `url` (tests dropping their database use this)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None, *, readonly: bool = False) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any exception."""
    engine = get_engine(url)
    bind = engine.execution_options(sqlite_deferred=True) if readonly else engine
    session = Session(bind=bind, expire_on_commit=False)
    try:
        yield session
        if not readonly:
            session.commit()  # readonly: close() below ends the transaction without expiring the objects
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
