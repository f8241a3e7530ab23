"""ML commands: train, predict, bench."""

import typer


def register(app: typer.Typer) -> None:
    """Add the ML commands to the `unlearn` app."""
