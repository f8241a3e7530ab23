"""Typed dependencies every route uses: the database session, the settings and the enqueue function.

The dependencies are `async def`: FastAPI runs a sync dependency in the threadpool, one thread hop
each, and a sync generator twice (enter and exit), while a connection may stay checked out in between.
Here only the handler's own work takes a thread; `app.overload.AdmissionControl` bounds how many do.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from core.callbacks import notify_after_commit
from core.db.session import get_engine, get_read_engine
from core.settings import Settings
from core.tasks import Enqueue


def open_session(app: FastAPI, *, autocommit: bool = False) -> Session:
    """A session on the app's database whose commits that owed callbacks (outbox rows) tell the app's
    `notify` (which enqueues their delivery). No connection is taken until the first statement.
    `autocommit`: every statement commits by itself (a read of one statement needs no BEGIN nor ROLLBACK
    round trip)."""
    url = app.state.settings.database_url
    session = Session(bind=get_read_engine(url) if autocommit else get_engine(url), expire_on_commit=False)
    notify_after_commit(session, getattr(app.state, "notify", None))
    return session


async def get_db_session(request: Request) -> AsyncIterator[Session]:
    """One session per request on the app's database. Handlers commit explicitly; anything left
    uncommitted is rolled back when the request ends (in a thread when that means a round trip)."""
    session = open_session(request.app)
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_enqueue(request: Request) -> Enqueue:
    return request.app.state.enqueue  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_db_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]


def page_limit(settings: Settings, limit: int | None) -> int:
    return min(limit or settings.default_page_limit, settings.max_page_limit)
