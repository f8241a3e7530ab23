"""The `unlearn` command line: one typer app, sub-commands registered per concern."""
