"""`unlearn bench`: benchmark presets that compare unlearning methods against retraining."""

import typer


def register(app: typer.Typer) -> None:
    """Add the bench command to the `unlearn` app."""
