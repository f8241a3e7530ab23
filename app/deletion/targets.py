"""Callback URLs are checked when posted (`core.netguard`): every address the host resolves to must be
public, or in `callback_allow_networks`. Resolution runs in threads, before any transaction: a slow
resolver holds neither a connection nor a lock.

A refused target is a 422 naming `callback_url`; a host that does not exist too; a resolver that failed
or timed out is a 503 with Retry-After (the URL may be fine). The workers check again before each
delivery, so a URL that passes here and later resolves elsewhere is still refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.deletion.schemas import CallbackUrl
from app.errors import ProblemError, error_item, invalid
from core.netguard import TargetRefused, TargetUnresolved, check_target
from core.settings import Settings

FIELD = "callback_url"
_url = TypeAdapter(CallbackUrl)


def _problem(url: str, error: TargetRefused | TargetUnresolved, settings: Settings) -> ProblemError:
    if isinstance(error, TargetUnresolved) and error.temporary:
        return ProblemError(
            503,
            f"{FIELD}: {error}; try again",
            slug="callback-url-unresolved",
            title="Callback URL not resolved",
            errors=[error_item(FIELD, str(error), value=url)],
            headers={"Retry-After": str(settings.outage_retry_after_s)},
        )
    return invalid(FIELD, str(error), value=url)


def _check(url: str, settings: Settings) -> ProblemError | None:
    try:
        check_target(url, tuple(settings.callback_allow_networks))
    except (TargetRefused, TargetUnresolved) as error:
        return _problem(url, error, settings)
    return None


async def refused_targets(settings: Settings, urls: set[str]) -> dict[str, ProblemError]:
    """The problem of each URL whose target is refused (checked at once, each in a thread)."""
    ordered = sorted(urls)
    problems = await asyncio.gather(*(asyncio.to_thread(_check, url, settings) for url in ordered))
    return {url: problem for url, problem in zip(ordered, problems, strict=True) if problem is not None}


async def check_callback_url(settings: Settings, url: object | None) -> None:
    """Raise the problem of a refused callback URL (a parsed `CallbackUrl`, or None)."""
    if url is not None:
        refused = await refused_targets(settings, {str(url)})
        if refused:
            raise refused[str(url)]


def batch_urls(items: list[Any]) -> set[str]:
    """The callback URLs of a batch's items as they will be stored (items that do not parse are refused
    by their own checks)."""
    urls: set[str] = set()
    for item in items:
        raw = item.get(FIELD) if isinstance(item, dict) else None
        if raw is None:
            continue
        try:
            urls.add(str(_url.validate_python(raw)))
        except ValidationError:
            continue
    return urls
