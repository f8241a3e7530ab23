"""Storage tests: a real S3 protocol server (moto's, in its own process) for the session, a bucket per
test, and the real API app on a migrated SQLite database with the store and dataset roots a test picks."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from s3_server import CREDENTIALS, S3Server, running_s3_server
from storage_helpers import make_settings


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The server, with its credentials in this process's environment (s3fs reads them there)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CREDENTIALS.items():
            patch.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            patch.delenv(name, raising=False)
        with running_s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
            yield server


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def database_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from core.db.migrate import upgrade
    from core.db.session import dispose_engine

    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    dispose_engine(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_url(database_template: Path, tmp_path: Path) -> Iterator[str]:
    from core.db.session import dispose_engine

    path = tmp_path / "unlearn.db"
    shutil.copyfile(database_template, path)
    url = f"sqlite:///{path}"
    yield url
    dispose_engine(url)


@dataclass
class Api:
    client: Any
    headers: dict[str, str]
    settings: Any
    enqueued: list[tuple[str, str]]

    def post(self, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.post(path, headers={**self.headers, **(headers or {})}, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(path, headers=self.headers, **kwargs)


@pytest.fixture
def api_on(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """`api_on(**settings fields)`: the API app (TestClient) on the test's database, its own var_dir."""
    from fastapi.testclient import TestClient

    from app.auth import issue_api_key
    from app.main import create_app
    from core.db.session import session_scope

    opened: list[Any] = []

    def start(**fields: Any) -> Api:
        settings = make_settings(database_url, tmp_path / "api-host", **fields)
        with session_scope(database_url) as session:
            _, key = issue_api_key(session, f"admin-{len(opened)}", "admin")
        enqueued: list[tuple[str, str]] = []

        def enqueue(task: str, model_id: str, countdown_s: float | None = None) -> bool:
            enqueued.append((task, model_id))
            return True

        app = create_app(settings, enqueue=enqueue)
        app.state.broker_ping = lambda url: None
        client = TestClient(app, raise_server_exceptions=False, follow_redirects=False)
        client.__enter__()
        opened.append(client)
        return Api(client, {"Authorization": f"Bearer {key}"}, settings, enqueued)

    yield start
    for client in opened:
        client.__exit__(None, None, None)
