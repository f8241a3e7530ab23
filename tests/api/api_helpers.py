"""Assertions and lookups shared by the API tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

DIGITS_SPEC: dict[str, Any] = {
    "architecture": "mlp",
    "num_classes": 10,
    "in_channels": 1,
    "image_size": 8,
    "mean": [0.3],
    "std": [0.4],
}
"""The spec of the digits MLP the upload tests build and corrupt."""


def count_rows(url: str, table: str) -> int:
    from core.db.session import session_scope

    with session_scope(url, readonly=True) as session:
        return int(session.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`, naming `field` in errors when given."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and "type" in body and "instance" in body, body
    if field is not None:
        named = [item["field"] for item in body.get("errors", [])]
        assert any(f == field or f.startswith(field + ".") for f in named), (field, body)
    return body
