"""Opaque, HMAC-signed keyset cursors: `{"data": [...], "next_cursor": str | null}` on every list.

A cursor is base64url(JSON {"r": resource, "f": filter digest, "k": last sort key}) + "." + HMAC. A
cursor that was altered, made for another resource, or used with other filters is a 400 problem.
"""

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from app.errors import invalid

CURSOR_FIELD = "cursor"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _filters_digest(filters: dict[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _sign(secret: str, payload: bytes) -> str:
    return _b64(hmac.new(secret.encode(), payload, hashlib.sha256).digest())


def encode_cursor(secret: str, resource: str, filters: dict[str, Any], key: list[Any]) -> str:
    payload = json.dumps(
        {"r": resource, "f": _filters_digest(filters), "k": cursor_key(*key)}, separators=(",", ":")
    ).encode()
    return f"{_b64(payload)}.{_sign(secret, payload)}"


def decode_cursor(
    secret: str, resource: str, filters: dict[str, Any], cursor: str, kinds: tuple[type, ...]
) -> tuple[Any, ...]:
    """The sort key stored in `cursor`, typed by `kinds` (datetime, str or int); a 400 problem naming
    `cursor` if it is not a cursor this server made for this list and these filters."""
    bad = invalid(
        CURSOR_FIELD,
        "not a valid cursor for this list (altered, or made with other filters)",
        where="query",
        value=cursor[:200],
        status=400,
    )
    try:
        body, _, signature = cursor.partition(".")
        payload = _unb64(body)
        # compare_digest raises TypeError on non-ASCII str: compare bytes (a fuzzed cursor was a 500).
        given = signature.encode("utf-8", "surrogatepass")
        if not signature or not hmac.compare_digest(_sign(secret, payload).encode(), given):
            raise bad
        decoded = json.loads(payload)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if (
        not isinstance(decoded, dict)
        or decoded.get("r") != resource
        or decoded.get("f") != _filters_digest(filters)
        or not isinstance(decoded.get("k"), list)
        or len(decoded["k"]) != len(kinds)
    ):
        raise bad
    values: list[Any] = []
    for kind, value in zip(kinds, decoded["k"], strict=True):
        if kind is datetime:
            try:
                parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
            except ValueError:
                parsed = None
            if parsed is None or parsed.tzinfo is None:
                raise bad
            values.append(parsed)
        elif not isinstance(value, kind) or isinstance(value, bool):
            raise bad
        else:
            values.append(value)
    return tuple(values)


def cursor_key(*values: Any) -> list[Any]:
    """The JSON form of a sort key (datetimes as ISO 8601)."""
    return [v.isoformat() if isinstance(v, datetime) else v for v in values]
