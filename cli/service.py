"""Service commands: up, api, worker, demo, keys, db."""

import typer


def register(app: typer.Typer) -> None:
    """Add the service commands to the `unlearn` app."""
