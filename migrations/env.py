"""Alembic environment: online migrations only, URL from the caller or from core.settings.

SQLite cannot ALTER most things, so migrations render in batch mode there (copy-and-move tables).
"""

from alembic import context
from sqlalchemy import create_engine, pool

from core.db.models import Base
from core.settings import get_settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return (
        config.attributes.get("database_url")
        or config.get_main_option("sqlalchemy.url")
        or (get_settings().database_url)
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
