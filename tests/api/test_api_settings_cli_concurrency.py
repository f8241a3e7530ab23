"""Settings refuse unsafe production values; the admin CLI; the audit chain under concurrent writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import typer
from pydantic import ValidationError
from sqlalchemy import text
from typer.testing import CliRunner

from core.db import append_audit_event, session_scope, verify_audit_chain
from core.settings import Settings
from core.storage import local_path


@pytest.fixture(autouse=True)
def _no_service_environment(monkeypatch) -> None:
    """Settings under test read only what each test sets (CI may export UNLEARN_* for the services)."""
    import os

    for name in list(os.environ):
        if name.startswith("UNLEARN_") and not name.startswith("UNLEARN_TEST_"):
            monkeypatch.delenv(name)


def test_settings_fill_paths_from_var_dir(tmp_path) -> None:
    settings = Settings(var_dir=tmp_path / "v")
    assert settings.database_url == f"sqlite:///{tmp_path / 'v' / 'unlearn.db'}"
    assert settings.broker_url == f"redis+socket://{tmp_path / 'v' / 'redis.sock'}"
    assert local_path(settings.artifact_url) == tmp_path / "v" / "artifacts"


def test_settings_read_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("UNLEARN_MAX_SAMPLE_IDS", "7")
    monkeypatch.setenv("UNLEARN_QUEUE_NAME", "gpu")
    settings = Settings(var_dir=tmp_path)
    assert settings.max_sample_ids == 7 and settings.queue_name == "gpu"


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({}, "UNLEARN_SERVER_SECRET"),
        ({"server_secret": "short"}, "UNLEARN_SERVER_SECRET"),
        ({"server_secret": "x" * 40, "database_url": "sqlite:///prod.db"}, "PostgreSQL"),
        (
            {"server_secret": "x" * 40, "database_url": "postgresql+psycopg://u@db/u"},
            "UNLEARN_SIGNING_KEY_ID",
        ),
        (
            {
                "server_secret": "x" * 40,
                "database_url": "postgresql+psycopg://u@db/u",
                "signing_key_id": "k1",
            },
            "UNLEARN_SIGNING_KEYS_DIR",
        ),
        (
            {
                "server_secret": "x" * 40,
                "database_url": "postgresql+psycopg://u@db/u",
                "signing_key_id": "k1",
                "signing_keys_dir": "/keys",
            },
            "UNLEARN_DATASET_ROOTS",
        ),
    ],
)
def test_production_refuses_unsafe_values(overrides, message, tmp_path) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(env="production", var_dir=tmp_path, **overrides)
    Settings(
        env="production",
        var_dir=tmp_path,
        server_secret="x" * 40,
        database_url="postgresql+psycopg://u@db/unlearn",
        signing_keys_dir=tmp_path / "keys",
        signing_key_id="k1",
        dataset_roots=[str(tmp_path / "datasets")],
    )


def test_signing_key_settings(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("UNLEARN_REVOKED_SIGNING_KEY_IDS", "k0, k1")
    settings = Settings(var_dir=tmp_path, signing_key_id="k2")
    assert settings.revoked_signing_key_ids == ["k0", "k1"]
    assert settings.signing_keys == tmp_path / "signing-keys"
    with pytest.raises(ValidationError, match="revoked"):
        Settings(var_dir=tmp_path, signing_key_id="k1")


def test_heartbeat_settings_must_be_consistent(tmp_path) -> None:
    with pytest.raises(ValidationError, match="heartbeat_stale_s"):
        Settings(var_dir=tmp_path, heartbeat_interval_s=10, heartbeat_stale_s=5)


def test_admin_cli_creates_lists_and_revokes_keys(db) -> None:
    from cli import admin

    app = typer.Typer()
    admin.register(app)
    runner = CliRunner()
    created = runner.invoke(
        app, ["keys", "create", "--name", "ops", "--scopes", "requests:read", "--database-url", db]
    )
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip().splitlines()[-1]
    assert plaintext.startswith("ulk_")
    listed = runner.invoke(app, ["keys", "list", "--database-url", db])
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if " ops " in line)
    assert runner.invoke(app, ["keys", "revoke", key_id, "--database-url", db]).exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list", "--database-url", db]).stdout
    assert runner.invoke(app, ["keys", "revoke", "key_nope", "--database-url", db]).exit_code == 1
    bad = runner.invoke(app, ["keys", "create", "--name", "x", "--scopes", "root", "--database-url", db])
    assert bad.exit_code != 0
    upgraded = runner.invoke(app, ["db", "upgrade", "--database-url", db])
    from alembic.script import ScriptDirectory

    from core.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    assert upgraded.exit_code == 0 and f"revision {head}" in upgraded.stdout


def test_concurrent_appends_keep_one_unforked_chain(db) -> None:
    def writer(index: int) -> None:
        for step in range(8):
            with session_scope(db) as session:
                append_audit_event(session, "job.started", job_id=f"job_{index}", data={"step": step})

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(writer, range(4)))
    with session_scope(db, readonly=True) as session:
        verdict = verify_audit_chain(session)
        count = session.execute(text("SELECT COUNT(*) FROM audit_events")).scalar_one()
    assert verdict.ok and verdict.checked == count == 32
