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


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 30.0,
    pre_ping: bool = True,
    connect_timeout_s: float | None = None,
    server_options: dict[str, str] | None = None,
    autocommit: bool = False,
) -> Engine:
    """A new engine for `url` (most code wants the cached `get_engine`).

    PostgreSQL only: `pool_size` + `max_overflow` connections at most, a checkout waits `pool_timeout_s`;
    `pre_ping` tests each connection on checkout (one round trip; without it a connection that died is
    noticed by the statement that uses it, which invalidates the pool); `server_options` are run-time
    parameters of each connection (`{"lock_timeout": "5s"}`); `autocommit`: every statement commits by
    itself (reads of one statement need neither BEGIN nor ROLLBACK)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        )
        _install_sqlite_transaction_control(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if connect_timeout_s is not None:
        connect_args["connect_timeout"] = max(1, round(connect_timeout_s))
    if server_options:
        connect_args["options"] = " ".join(f"-c {name}={value}" for name, value in server_options.items())
    return create_engine(
        url,
        **({"isolation_level": "AUTOCOMMIT"} if autocommit else {}),
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        connect_args=connect_args,
    )


def get_engine(url: str | None = None, **options: Any) -> Engine:
    """The process's engine for `url`; `options` (see `make_engine`) apply when this call creates it."""
    url = url or get_settings().database_url
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url, **options)
        return engine


def get_read_engine(url: str, **options: Any) -> Engine:
    """The process's autocommit engine for one-statement reads of `url` (PostgreSQL; on SQLite the engine
    of `get_engine`): its own pool, whose connections stay in autocommit."""
    if make_url(url).get_backend_name() != "postgresql":
        return get_engine(url)
    key = READ_ENGINE_PREFIX + url
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(url, **options, autocommit=True)
        return engine


READ_ENGINE_PREFIX = "read:"


def dispose_engine(url: str) -> None:
    """Forget and close the cached engines for `url` (tests dropping their database use this)."""
    with _engines_lock:
        engines = [_engines.pop(key, None) for key in (url, READ_ENGINE_PREFIX + url)]
    for engine in engines:
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
