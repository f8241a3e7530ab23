"""Migrations build exactly the ORM's schema on SQLite and PostgreSQL, and downgrade cleanly."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, pool

from core.db.migrate import alembic_config, current_revision, upgrade
from core.db.models import Base


def _diff(url: str) -> list[object]:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def _head(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_migrated_schema_matches_the_orm(database_url: str) -> None:
    assert current_revision(database_url) == _head(database_url)
    assert _diff(database_url) == []


def test_fresh_sqlite_file_upgrades_downgrades_and_upgrades_again(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'fresh.db'}"
    upgrade(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)
    assert _diff(url) == []
    command.downgrade(alembic_config(url), "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    upgrade(url)
    assert _diff(url) == []
    engine.dispose()


def test_upgrade_is_idempotent(database_url: str) -> None:
    upgrade(database_url)
    assert current_revision(database_url) == _head(database_url)
