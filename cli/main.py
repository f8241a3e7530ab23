"""Entry point of the `unlearn` command.

Each concern registers its commands from its own module so that `unlearn api` does not import torch:
command modules import heavy libraries inside the command functions only.
"""

import typer

from cli import admin, bench, evidence, ml, service

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Unlearning service and tools.")
ml.register(app)
bench.register(app)
service.register(app)
admin.register(app)
evidence.register(app)

if __name__ == "__main__":
    app()
