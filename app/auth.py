"""API keys: issued once in plaintext, stored as sha256, scoped, revocable.

A request carries `Authorization: Bearer <key>`. The key's sha256 is looked up (a hash of a 256-bit
secret: the lookup leaks nothing useful), then compared with `hmac.compare_digest`. Missing or invalid
keys are 401, a valid key without the route's scope is 403. The `admin` scope implies every other.
"""

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.api.deps import SessionDep
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
    digest = hash_key(plaintext)
    row = session.execute(select(ApiKey).where(ApiKey.key_hash == digest)).scalar_one_or_none()
    if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at is not None:
        return None
    return Principal(key_id=row.id, name=row.name, scopes=frozenset(row.scopes))


def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing API key: send `Authorization: Bearer <key>`")
    principal = authenticate(session, credentials.credentials)
    if principal is None:
        raise _unauthorized("invalid or revoked API key")
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require(scope: str) -> Callable[[Principal], Principal]:
    """A dependency that demands `scope` of the current principal (403 otherwise)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(principal: CurrentPrincipal) -> Principal:
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
