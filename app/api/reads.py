"""One-statement reads from the event loop (PostgreSQL): a psycopg AsyncConnectionPool in autocommit,
prepared statements, no thread and no ORM. `bench/sync_vs_async.py` measured the GET of one request at
about 0.3-0.4 ms of API CPU this way, against 0.5-0.6 ms through one threadpool call and SQLAlchemy Core,
0.7-0.8 ms through SQLAlchemy's asyncio layer and 0.9-1.0 ms for a sync ORM handler; the hottest reads
(GET /v1/deletion-requests/{id}) use it, everything else stays on the sync sessions.

Opened by the app's lifespan; without it (or on SQLite) `AsyncReads.ready` is False and callers use a
sync session. Errors are psycopg's own (`app.overload` answers them with 503).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import make_url

from core.settings import Settings


class Columns(dict[str, Any]):
    """A row as a dict whose columns are attributes too (for pydantic's `from_attributes`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class AsyncReads:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool: Any = None
        self.ready = False

    def _new_pool(self) -> Any:
        from psycopg_pool import AsyncConnectionPool

        settings = self.settings
        url = make_url(settings.database_url).set(drivername="postgresql")
        options = f"-c statement_timeout={int(settings.db_statement_timeout_s * 1000)}"
        return AsyncConnectionPool(
            url.render_as_string(hide_password=False),
            min_size=1,
            max_size=settings.api_max_concurrency,
            timeout=settings.api_db_pool_timeout_s,
            open=False,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(settings.db_connect_timeout_s)),
                "options": options,
            },
        )

    @classmethod
    def for_settings(cls, settings: Settings) -> AsyncReads | None:
        if make_url(settings.database_url).get_backend_name() != "postgresql":
            return None
        return cls(settings)

    async def open(self) -> None:
        """A new pool (a pool cannot be opened twice, and an app's lifespan may run more than once)."""
        self.pool = self._new_pool()
        await self.pool.open(wait=False)
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        if self.pool is not None:
            await self.pool.close()

    async def one(self, sql: str, params: tuple[Any, ...]) -> Columns | None:
        """The first row of `sql` (a literal statement: it is prepared once per connection)."""
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import PoolTimeout

        try:
            async with self.pool.connection() as connection:
                cursor = connection.cursor(row_factory=dict_row)
                await cursor.execute(sql, params, prepare=True)  # type: ignore[arg-type]
                row = await cursor.fetchone()
        except PoolTimeout:
            if self.pool.get_stats().get("pool_size", 0) == 0:  # not busy: no connection can be made
                raise psycopg.OperationalError("no connection to the database could be made") from None
            raise
        return Columns(row) if row is not None else None
