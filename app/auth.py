"""API keys: issued once in plaintext, stored as sha256, scoped, revocable, rate-limited.

A request carries `Authorization: Bearer <key>`. The key's sha256 is looked up (a hash of a 256-bit
secret: the lookup leaks nothing useful), then compared with `hmac.compare_digest`. Missing or invalid
keys are 401, a valid key without the route's scope is 403. The `admin` scope implies every other.

Lookups are cached per process for `api_key_cache_s` (5 s), answers for unknown keys included: a key
revoked by another process (`unlearn keys revoke`) stops working within that bound, one revoked through
`revoke_api_key` in this process at once. Each key then passes its `rate_limit` (`app.ratelimit`): 429.
"""

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.deps import open_session
from app.errors import ProblemError
from core.db.audit import AuditEventType, append_audit_event
from core.db.models import ApiKey, new_id, utcnow

SCOPES = ("requests:write", "requests:read", "models:write", "models:read", "audit:read", "admin")
KEY_PREFIX = "ulk_"

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer ulk_...`")


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def parse_scopes(raw: str | list[str]) -> list[str]:
    scopes = [s.strip() for s in (raw.split(",") if isinstance(raw, str) else raw) if s.strip()]
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {list(SCOPES)}")
    if not scopes:
        raise ValueError(f"give at least one scope of {list(SCOPES)}")
    return sorted(set(scopes), key=SCOPES.index)


def issue_api_key(
    session: Session, name: str, scopes: str | list[str], *, actor: str | None = None
) -> tuple[ApiKey, str]:
    """Create a key in the caller's transaction; returns the row and the plaintext (shown once)."""
    if not name.strip():
        raise ValueError("an API key needs a non-empty name")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key"),
        name=name.strip(),
        prefix=plaintext[:10],
        key_hash=hash_key(plaintext),
        scopes=parse_scopes(scopes),
    )
    session.add(row)
    session.flush()
    append_audit_event(
        session,
        AuditEventType.api_key_created,
        actor=actor,
        data={"key_id": row.id, "name": row.name, "scopes": row.scopes},
    )
    return row, plaintext


def create_api_key(session: Session, name: str, scopes: str | list[str]) -> str:
    """Create a key (caller commits) and return its plaintext, which is never stored."""
    return issue_api_key(session, name, scopes)[1]


def revoke_api_key(session: Session, key_id: str, *, actor: str | None = None) -> bool:
    """Revoke a key (caller commits). False when no such key; revoking twice keeps the first time."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return False
    forget_key(row.key_hash)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        append_audit_event(session, AuditEventType.api_key_revoked, actor=actor, data={"key_id": key_id})
    return True


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401, detail, slug="unauthorized", headers={"WWW-Authenticate": 'Bearer realm="unlearn"'}
    )


def authenticate(session: Session, plaintext: str) -> Principal | None:
    return _lookup(session, hash_key(plaintext))


def _lookup(session: Session, digest: str) -> Principal | None:
    row = session.execute(select(ApiKey).where(ApiKey.key_hash == digest)).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        return None
    return Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes))


class KeyCache:
    """sha256 of a key -> its principal (or None: unknown or revoked) until an expiry; per process."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(digest)
        if entry is None or entry[0] <= time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, digest: str, principal: Principal | None, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
            self._entries[digest] = (time.monotonic() + ttl_s, principal)

    def forget(self, digest: str) -> None:
        with self._lock:
            self._entries.pop(digest, None)


_key_cache = KeyCache()


def forget_key(digest: str) -> None:
    """Drop a key from this process's cache (its revocation takes effect here at once)."""
    _key_cache.forget(digest)


def _lookup_in_new_session(app: FastAPI, digest: str) -> Principal | None:
    session = open_session(app, autocommit=True)
    try:
        return _lookup(session, digest)
    finally:
        session.close()


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing API key: send `Authorization: Bearer <key>`")
    digest = hash_key(credentials.credentials)
    found, principal = _key_cache.get(digest)
    if not found:
        principal = await run_in_threadpool(_lookup_in_new_session, request.app, digest)
        _key_cache.put(digest, principal, request.app.state.settings.api_key_cache_s)
    if principal is None:
        raise _unauthorized("invalid or revoked API key")
    limiter: Callable[[Principal], Awaitable[None]] | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter(principal)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require(scope: str) -> Callable[[Principal], Principal]:
    """A dependency that demands `scope` of the current principal (403 otherwise)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.allows(scope):
            raise ProblemError(403, f"this API key lacks the {scope!r} scope", slug="forbidden")
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


RequestsWrite = Annotated[Principal, Depends(require("requests:write"))]
RequestsRead = Annotated[Principal, Depends(require("requests:read"))]
ModelsWrite = Annotated[Principal, Depends(require("models:write"))]
ModelsRead = Annotated[Principal, Depends(require("models:read"))]
AuditRead = Annotated[Principal, Depends(require("audit:read"))]
