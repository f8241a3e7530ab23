"""API tests: the real app against a real, migrated database (SQLite file; PostgreSQL too when
UNLEARN_TEST_DATABASE_URL is set), with the enqueue function replaced by a recording fake.

The database is migrated once per session and backend; every test's rows are deleted afterwards.
On PostgreSQL the session works in its own throw-away database, created and dropped through the
`postgres` maintenance database, so other users of the shared server never see our tables.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from core.storage import local_path

DATABASE_ENV = "UNLEARN_TEST_DATABASE_URL"
TEST_SECRET = "test-server-secret-0123456789abcdef0123456789"


def _services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "") not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if _services_required():
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def _backends() -> list[Any]:
    return ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]


@pytest.fixture(scope="session", params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from core.db.migrate import upgrade
    from core.db.session import dispose_engine

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'api.db'}"
        upgrade(url)
        yield url
        dispose_engine(url)
        return
    base = os.environ.get(DATABASE_ENV)
    if not base:
        _unavailable(f"{DATABASE_ENV} is not set: the PostgreSQL variant of the API tests needs it")
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(base)
    name = f"unlearn_api_{uuid.uuid4().hex[:12]}"
    admin_dsn = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as error:
        _unavailable(f"PostgreSQL at {parsed.render_as_string()} is unreachable: {error}")
    url = parsed.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engine(url)
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


TABLES_IN_DELETE_ORDER = (
    "audit_reports",
    "forgotten_samples",
    "deletion_requests",
    "model_versions",
    "jobs",
    "models",
    "samples",
    "datasets",
    "audit_checkpoints",
    "audit_events",
    "api_keys",
)


@pytest.fixture
def db(database_url: str) -> Iterator[str]:
    """The migrated database, emptied after the test."""
    yield database_url
    from core.db.session import session_scope

    with session_scope(database_url) as session:
        session.execute(text("UPDATE models SET head_version_id = NULL"))
        session.execute(text("UPDATE deletion_requests SET result_version_id = NULL, job_id = NULL"))
        for table in TABLES_IN_DELETE_ORDER:
            session.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def settings(db: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from core.settings import Settings

    return Settings(
        env="test",
        var_dir=tmp_path / "var",
        database_url=db,
        artifact_url=(tmp_path / "artifacts").as_uri(),
        dataset_roots=[str(tmp_path_factory.getbasetemp())],
        broker_url="redis://127.0.0.1:1/0",
        server_secret=TEST_SECRET,
        verify_uploaded_weights=False,
        max_sample_ids=50,
        max_upload_bytes=4 * 1024 * 1024,
    )


@dataclass
class RecordingEnqueue:
    """Stands in for Celery: records (task name, model id) and reports success."""

    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, task_name: str, model_id: str, countdown_s: float | None = None) -> bool:
        self.calls.append((task_name, model_id))
        return True


@pytest.fixture
def enqueued() -> RecordingEnqueue:
    return RecordingEnqueue()


@pytest.fixture
def client(settings: Any, enqueued: RecordingEnqueue) -> Iterator[TestClient]:
    from app.main import create_app

    app = create_app(settings, enqueue=enqueued)
    app.state.broker_ping = lambda url: None
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass
class Keys:
    """Plaintext keys by role; `headers(role)` gives the Authorization header."""

    plaintext: dict[str, str]
    ids: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.plaintext[role]}"}


ROLE_SCOPES = {
    "admin": "admin",
    "writer": "requests:write,requests:read",
    "reader": "requests:read",
    "models": "models:write,models:read",
    "models_reader": "models:read",
    "auditor": "audit:read",
}


@pytest.fixture
def keys(db: str) -> Keys:
    from app.auth import issue_api_key
    from core.db.session import session_scope

    plaintext, ids = {}, {}
    with session_scope(db) as session:
        for role, scopes in ROLE_SCOPES.items():
            row, secret = issue_api_key(session, f"test-{role}", scopes)
            plaintext[role], ids[role] = secret, row.id
    return Keys(plaintext, ids)


@pytest.fixture
def admin(keys: Keys) -> dict[str, str]:
    return keys.headers("admin")


@dataclass
class ReadyModel:
    model_id: str
    dataset_id: str
    version_id: str
    checkpoint: Path
    sha256: str
    train_ids: list[str]
    val_ids: list[str]


@pytest.fixture
def digits_dataset(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    response = client.post("/v1/datasets", json={"name": "digits", "format": "digits"}, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def ready_model(client: TestClient, settings: Any, digits_dataset: dict[str, Any]) -> ReadyModel:
    """A `ready` model with a version 1 whose checkpoint is an opaque file (the API never loads it)."""
    from sqlalchemy import select

    from core import lifecycle
    from core.db import Model, ModelStatus, Sample, session_scope

    payload = os.urandom(4096) + b"checkpoint"
    with session_scope(settings.database_url) as session:
        model = Model(
            name="digits-mlp", architecture="mlp", dataset_id=digits_dataset["id"], status=ModelStatus.ready
        )
        session.add(model)
        session.flush()
        path = local_path(settings.artifact_url) / "models" / model.id / "v1.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        sha = hashlib.sha256(payload).hexdigest()
        version = lifecycle.version_created(
            session, model, checkpoint_uri=str(path), sha256=sha, size_bytes=len(payload), method="train"
        )
        rows = session.execute(
            select(Sample.sample_id, Sample.split)
            .where(Sample.dataset_id == digits_dataset["id"])
            .order_by(Sample.id)
        ).all()
    return ReadyModel(
        model.id,
        digits_dataset["id"],
        version.id,
        path,
        sha,
        [s for s, split in rows if split == "train"],
        [s for s, split in rows if split == "val"],
    )
