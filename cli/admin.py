"""Admin commands: `unlearn api`, `unlearn keys create|revoke|list`, `unlearn db upgrade`.

Imports of the app and the database happen inside the commands, so `unlearn --help` stays fast.
"""

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the admin commands to the `unlearn` app."""
    app.command("api")(api)
    keys = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
    keys.command("create")(keys_create)
    keys.command("revoke")(keys_revoke)
    keys.command("list")(keys_list)
    app.add_typer(keys, name="keys")
    db = typer.Typer(no_args_is_help=True, help="Database schema migrations.")
    db.command("upgrade")(db_upgrade)
    app.add_typer(db, name="db")


DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Default: UNLEARN_DATABASE_URL or the SQLite file in ./var."),
]


def _database_url(override: str | None) -> str:
    from core.settings import get_settings

    return override or get_settings().database_url


def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    migrate: Annotated[bool, typer.Option(help="Run database migrations first.")] = True,
) -> None:
    """Serve the HTTP API (uvicorn) against UNLEARN_DATABASE_URL / UNLEARN_BROKER_URL.

    With several workers, metrics use prometheus-client's multiprocess mode: a fresh directory, or the
    one PROMETHEUS_MULTIPROC_DIR names (emptied first), so a scrape of any process counts them all."""
    import shutil

    import uvicorn

    from core.db.migrate import upgrade
    from core.observability.logs import configure_logging
    from core.observability.multiproc import multiproc_dir, prepare_multiproc_dir
    from core.settings import get_settings

    settings = get_settings()
    json_logs = settings.log_format == "json"
    if json_logs:  # uvicorn's supervisor (--workers > 1) logs here, not in the app: JSON lines too
        configure_logging(settings, "api")
    if migrate:
        upgrade(_database_url(None))
    metrics_dir, created = (
        prepare_multiproc_dir() if workers > 1 or multiproc_dir() is not None else (None, False)
    )
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            proxy_headers=True,
            **({"log_config": None} if json_logs else {}),  # else uvicorn's own text config replaces ours
        )
    finally:
        if created and metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key.")],
    scopes: Annotated[
        str,
        typer.Option(
            "--scopes",
            help="Comma-separated: requests:write, requests:read, models:write, "
            "models:read, audit:read, admin.",
        ),
    ],
    database_url: DatabaseOption = None,
) -> None:
    """Create an API key and print it once (only its sha256 is stored)."""
    from app.auth import issue_api_key
    from core.db.migrate import upgrade
    from core.db.session import session_scope

    url = _database_url(database_url)
    upgrade(url)
    try:
        with session_scope(url) as session:
            row, plaintext = issue_api_key(session, name, scopes, actor="cli")
            key_id = row.id
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(f"created key {key_id} ({name}); store it now, it is not shown again:", err=True)
    typer.echo(plaintext)


def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...), from `unlearn keys list`.")],
    database_url: DatabaseOption = None,
) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    from app.auth import revoke_api_key
    from core.db.session import session_scope

    with session_scope(_database_url(database_url)) as session:
        found = revoke_api_key(session, key_id, actor="cli")
    if not found:
        typer.echo(f"no API key with id {key_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


def keys_list(database_url: DatabaseOption = None) -> None:
    """List API keys (id, name, scopes, prefix, revoked)."""
    from sqlalchemy import select

    from core.db.models import ApiKey
    from core.db.session import session_scope

    with session_scope(_database_url(database_url), readonly=True) as session:
        for key in session.execute(select(ApiKey).order_by(ApiKey.created_at)).scalars():
            revoked = f" revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
            typer.echo(f"{key.id}  {key.prefix}...  {key.name}  [{','.join(key.scopes)}]{revoked}")


def db_upgrade(
    database_url: DatabaseOption = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Apply database migrations up to `revision` (default: the latest)."""
    from core.db.migrate import current_revision, upgrade

    url = _database_url(database_url)
    upgrade(url, revision)
    typer.echo(f"database at revision {current_revision(url)}")
