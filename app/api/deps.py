"""Typed dependencies every route uses: the settings and the enqueue function of the running app."""

from typing import Annotated

from fastapi import Depends, Request

from app.queue import Enqueue
from app.settings import Settings


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_enqueue(request: Request) -> Enqueue:
    return request.app.state.enqueue  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]


def page_limit(settings: Settings, limit: int | None) -> int:
    return min(limit or settings.default_page_limit, settings.max_page_limit)
