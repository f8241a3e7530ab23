"""Typed dependencies every route uses: the database session, the settings and the enqueue function."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from core.callbacks import track_status_changes
from core.db.session import get_engine
from core.settings import Settings
from core.tasks import Enqueue


def get_db_session(request: Request) -> Iterator[Session]:
    """One session per request on the app's database. Handlers commit explicitly; anything left
    uncommitted is rolled back when the request ends. A committed status change of a deletion request
    is handed to the app's `notify` (its callback, sent in the background)."""
    url: str = request.app.state.settings.database_url
    session = Session(bind=get_engine(url), expire_on_commit=False)
    notify = getattr(request.app.state, "notify", None)
    if notify is not None:
        track_status_changes(session, notify)
    try:
        yield session
    finally:
        session.close()


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_enqueue(request: Request) -> Enqueue:
    return request.app.state.enqueue  # type: ignore[no-any-return]


SessionDep = Annotated[Session, Depends(get_db_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]


def page_limit(settings: Settings, limit: int | None) -> int:
    return min(limit or settings.default_page_limit, settings.max_page_limit)
