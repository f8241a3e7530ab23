"""API keys: 401 without or with a bad/revoked key, 403 without the scope, hashed at rest."""

from __future__ import annotations

import pytest
from api_helpers import assert_problem, count_rows
from sqlalchemy import text

from app.auth import hash_key, parse_scopes

READ_ROUTES = [
    ("GET", "/v1/datasets", "models:read"),
    ("GET", "/v1/models", "models:read"),
    ("GET", "/v1/deletion-requests", "requests:read"),
    ("GET", "/v1/audit-log", "audit:read"),
    ("GET", "/v1/audit-log/verify", "audit:read"),
    ("GET", "/v1/model-versions/ver_x/checkpoint", "models:read"),
    ("GET", "/v1/deletion-requests/req_x/audit", "audit:read"),
]


@pytest.mark.parametrize("method,path,scope", READ_ROUTES)
def test_missing_key_is_401_with_bearer_challenge(client, method, path, scope) -> None:
    response = client.request(method, path)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_invalid_and_malformed_keys_are_401(client, keys) -> None:
    for header in ("Bearer ulk_not-a-key", "Bearer ", "Basic dXNlcjpwYXNz", keys.plaintext["admin"]):
        assert_problem(client.get("/v1/datasets", headers={"Authorization": header}), 401)


def test_wrong_scope_is_403(client, keys) -> None:
    body = assert_problem(client.get("/v1/deletion-requests", headers=keys.headers("auditor")), 403)
    assert "requests:read" in body["detail"]
    assert_problem(client.get("/v1/audit-log", headers=keys.headers("reader")), 403)
    assert_problem(client.post("/v1/deletion-requests", json={}, headers=keys.headers("reader")), 403)
    assert_problem(client.post("/v1/datasets", json={}, headers=keys.headers("models_reader")), 403)
    assert_problem(client.get("/v1/model-versions/ver_x/checkpoint", headers=keys.headers("reader")), 403)
    assert_problem(client.get("/v1/deletion-requests/req_x/audit", headers=keys.headers("reader")), 403)


def test_right_scope_passes_and_admin_implies_all(client, keys) -> None:
    assert client.get("/v1/deletion-requests", headers=keys.headers("reader")).status_code == 200
    assert client.get("/v1/audit-log", headers=keys.headers("auditor")).status_code == 200
    for path in ("/v1/datasets", "/v1/models", "/v1/deletion-requests", "/v1/audit-log"):
        assert client.get(path, headers=keys.headers("admin")).status_code == 200


def test_revoked_key_is_401(client, keys, db) -> None:
    from app.auth import revoke_api_key
    from core.db.session import session_scope

    assert client.get("/v1/deletion-requests", headers=keys.headers("reader")).status_code == 200
    with session_scope(db) as session:
        assert revoke_api_key(session, keys.ids["reader"])
        assert not revoke_api_key(session, "key_missing")
    assert_problem(client.get("/v1/deletion-requests", headers=keys.headers("reader")), 401)


def test_keys_are_stored_only_as_sha256(keys, db) -> None:
    from core.db.session import session_scope

    with session_scope(db, readonly=True) as session:
        rows = session.execute(text("SELECT key_hash, prefix FROM api_keys")).all()
    assert len(rows) == count_rows(db, "api_keys") == len(keys.plaintext)
    stored = {row.key_hash for row in rows}
    assert stored == {hash_key(p) for p in keys.plaintext.values()}
    assert not stored & set(keys.plaintext.values())


def test_scope_parsing_refuses_unknown_scopes() -> None:
    assert parse_scopes("requests:read, admin") == ["requests:read", "admin"]
    with pytest.raises(ValueError, match="unknown scopes"):
        parse_scopes("requests:read,root")
    with pytest.raises(ValueError):
        parse_scopes("")
