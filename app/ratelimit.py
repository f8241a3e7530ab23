"""Per-API-key rate limits (`rate_limit`, e.g. `1000/second;20000/minute`) with the `limits` library
(the engine behind slowapi; slowapi's decorators key on the request before authentication, and the key
here is the authenticated API key).

Sliding-window counters, kept in `rate_limit_storage_url`: `memory://` counts per API process (N
processes admit up to N times the limit), a Redis URL counts once for every process. A key over a limit
gets 429 with Retry-After and the limit in the problem; when the counter store fails the request passes
(an outage of the rate-limit store must not become an outage of the API).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.strategies import SlidingWindowCounterRateLimiter as AsyncSlidingWindow
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from app.errors import ProblemError, error_item
from core.settings import Settings

logger = logging.getLogger("app.ratelimit")


class KeyRateLimiter:
    """`await limiter(principal)` counts one request of the key, or raises the 429 problem."""

    def __init__(self, limits: list[RateLimitItem], storage_url: str) -> None:
        self.limits = limits
        self.limiter: Any
        if storage_url.startswith("memory://"):  # in-process counters: no I/O, so no need to await
            self.limiter = SlidingWindowCounterRateLimiter(storage_from_string(storage_url))
            self.is_async = False
        else:  # a shared store (Redis): asynchronous, so a slow store never blocks the event loop
            url = storage_url if storage_url.startswith("async+") else f"async+{storage_url}"
            options = {"implementation": "redispy"} if "redis" in url else {}
            self.limiter = AsyncSlidingWindow(storage_from_string(url, **options))  # type: ignore[arg-type]
            self.is_async = True

    async def _call(self, method: str, *args: Any) -> Any:
        result = getattr(self.limiter, method)(*args)
        return await result if self.is_async else result

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRateLimiter | None:
        if not settings.rate_limit.strip():
            return None
        return cls(parse_many(settings.rate_limit), settings.rate_limit_storage_url)

    async def __call__(self, principal: object) -> None:
        key_id: str = principal.key_id  # type: ignore[attr-defined]
        for item in self.limits:
            try:
                allowed = await self._call("hit", item, "api-key", key_id)
            except Exception as error:  # the store is down: let the request through
                logger.warning("rate-limit store failed (%s); not limiting", error)
                return
            if not allowed:
                stats = await self._call("get_window_stats", item, "api-key", key_id)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                limit = str(item)
                raise ProblemError(
                    429,
                    f"rate limit exceeded: this API key may make {limit} requests; retry after "
                    f"{retry_after} s",
                    slug="rate-limited",
                    errors=[
                        error_item(
                            "Authorization",
                            f"over the limit of {limit} for this API key",
                            where="header",
                            value=limit,
                        )
                    ],
                    headers={"Retry-After": str(retry_after)},
                )
