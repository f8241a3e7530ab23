"""The deployment files, checked without a Docker engine: the compose file parses, every container
command of our image is a real `unlearn` invocation (parsed by the CLI's own click command), each GPU
worker service reserves its own device and has the production worker flags, every long-running service
has a healthcheck, Flower asks for a password, the API and the workers share no local volume (artifacts
in the S3 store), every UNLEARN_* variable is a setting, and the Dockerfile runs `unlearn` as a non-root
user on a CUDA runtime base image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from cli.main import app as unlearn_app

ROOT = Path(__file__).resolve().parents[1]
OUR_IMAGE = "unlearn-service:latest"
UsageError = next(cls for cls in typer.BadParameter.__mro__ if cls.__name__ == "UsageError")
"""The usage error of the click that typer vendors (typer does not export it by name)."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def parse_unlearn_args(args: list[str]) -> list[str]:
    """Resolve `args` through the real CLI as `unlearn ARGS` would, parsing every option of the final
    command without running it; returns the command path. Unknown commands/options raise UsageError."""
    command: Any = typer.main.get_command(unlearn_app)
    context = command.context_class(command, info_name="unlearn")
    path, rest = ["unlearn"], list(args)
    while hasattr(command, "get_command"):  # a group: the next argument names a subcommand
        if not rest or rest[0].startswith("-"):
            raise UsageError(f"{' '.join(path)} needs a subcommand, got {rest}")
        name, rest = rest[0], rest[1:]
        sub = command.get_command(context, name)
        if sub is None:
            raise UsageError(f"no such command: {' '.join([*path, name])}")
        path.append(name)
        command = sub
        context = command.context_class(command, info_name=name, parent=context)
    command.make_context(path[-1], rest, parent=context.parent)
    return path


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in compose["services"].items() if spec.get("image") == OUR_IMAGE}


def test_compose_has_the_production_topology(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {"postgres", "redis", "minio", "minio-init", "api", "worker-gpu-0", "worker-gpu-1", "flower"}
    assert expected <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    environment = services["api"]["environment"]
    assert environment["UNLEARN_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@${POSTGRES_HOST:-postgres}:5432/" in environment["UNLEARN_DATABASE_URL"]
    assert environment["UNLEARN_BROKER_URL"] == "redis://${REDIS_HOST:-redis}:6379/0"
    assert environment["UNLEARN_ENV"] == "production"
    assert environment["UNLEARN_LOG_FORMAT"] == "json"


def test_every_unlearn_command_is_a_real_subcommand(compose: dict[str, Any]) -> None:
    checked = {}
    for name, spec in our_services(compose).items():
        entrypoint = spec.get("entrypoint")
        if entrypoint is None:  # the image's entry point: `tini -- unlearn`
            checked[name] = parse_unlearn_args(spec["command"])
        else:
            assert spec["command"][:3] == ["celery", "-A", "worker.celery_app"], name
    assert checked["api"] == ["unlearn", "api"]
    assert checked["migrate"] == ["unlearn", "db", "upgrade"]
    assert checked["worker-gpu-0"] == ["unlearn", "worker"]


def test_the_parser_refuses_what_the_cli_does_not_have() -> None:
    with pytest.raises(UsageError):
        parse_unlearn_args(["serve"])
    with pytest.raises(UsageError):
        parse_unlearn_args(["worker", "--queue", "gpu"])
    with pytest.raises(UsageError):
        parse_unlearn_args(["db", "downgrade"])


def option(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def gpu_workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in compose["services"].items() if name.startswith("worker-gpu-")}


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every worker service: the GPU workers and the callbacks worker."""
    return {name: spec for name, spec in compose["services"].items() if name.startswith("worker-")}


def test_each_gpu_worker_reserves_its_own_gpu_and_runs_one_process_per_task(compose: dict[str, Any]) -> None:
    workers = gpu_workers(compose)
    assert len(workers) >= 2
    reserved: list[str] = []
    hostnames = set()
    for name, worker in workers.items():
        command = worker["command"]
        assert option(command, "--queues") == "gpu"
        assert option(command, "--concurrency") == "1"
        assert option(command, "--max-tasks-per-child") == "1"
        hostnames.add(option(command, "--hostname"))
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, name
        assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
        assert "count" not in devices[0], f"{name}: a count reserves any GPUs; name them in device_ids"
        assert len(devices[0]["device_ids"]) == 1, name
        reserved += devices[0]["device_ids"]
        assert worker["environment"]["UNLEARN_QUEUE_NAME"] == "gpu"
        assert "replicas" not in worker.get("deploy", {}), f"{name}: replicas would share its device"
    assert len(reserved) == len(set(reserved)), f"two worker services reserve the same GPU: {reserved}"
    assert len(hostnames) == len(workers), "each worker needs its own Celery node name"
    # The API must enqueue on the queue the GPU workers consume.
    assert compose["services"]["api"]["environment"]["UNLEARN_QUEUE_NAME"] == "gpu"


def test_a_small_worker_delivers_callbacks_while_the_gpu_workers_run_jobs(compose: dict[str, Any]) -> None:
    """GPU workers run one long task at a time: callbacks (queue `callbacks`) have a worker of their own."""
    from core.tasks import CALLBACKS_QUEUE, DELIVER_CALLBACKS_TASK, PROCESS_MODEL_TASK, queue_for

    assert queue_for(DELIVER_CALLBACKS_TASK, "gpu") == CALLBACKS_QUEUE
    assert queue_for(PROCESS_MODEL_TASK, "gpu") == "gpu"
    callbacks = compose["services"]["worker-callbacks"]
    assert parse_unlearn_args(callbacks["command"]) == ["unlearn", "worker"]
    assert option(callbacks["command"], "--queues") == CALLBACKS_QUEUE
    assert "deploy" not in callbacks, "the callbacks worker reserves no GPU"
    hostnames = [option(spec["command"], "--hostname") for spec in workers(compose).values()]
    assert len(hostnames) == len(set(hostnames)) == len(gpu_workers(compose)) + 1


@pytest.mark.parametrize(("given", "consumed"), [("gpu", "gpu,callbacks"), ("callbacks", "callbacks")])
def test_every_worker_also_consumes_the_callbacks_queue(
    given: str, consumed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from typer.testing import CliRunner

    from worker.celery_app import app as celery_app

    started: list[list[str]] = []
    monkeypatch.setattr(celery_app, "worker_main", started.append)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        result = CliRunner().invoke(unlearn_app, ["worker", "--queues", given, "--concurrency", "1"])
    finally:  # the command configures this process's logging: undo it
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.captureWarnings(False)
    assert result.exit_code == 0, result.output
    (argv,) = started
    assert option(argv, "--queues") == consumed


def named_volumes(spec: dict[str, Any], compose: dict[str, Any]) -> set[str]:
    """The named volumes a service mounts (bind mounts of host paths are not shared between hosts)."""
    sources = {str(volume).split(":")[0] for volume in spec.get("volumes", [])}
    return sources & set(compose.get("volumes") or {})


def test_api_and_workers_need_no_shared_local_volume(compose: dict[str, Any]) -> None:
    """Checkpoints and audit pages go to the S3 store: the workers may run on other hosts."""
    services = compose["services"]
    api = services["api"]
    assert api["environment"]["UNLEARN_ARTIFACT_URL"].startswith("s3://")
    assert api["environment"]["UNLEARN_S3_ENDPOINT_URL"] == "${S3_ENDPOINT_URL:-http://minio:9000}"
    for name, worker in workers(compose).items():
        assert worker["environment"]["UNLEARN_ARTIFACT_URL"] == api["environment"]["UNLEARN_ARTIFACT_URL"]
        assert not named_volumes(api, compose) & named_volumes(worker, compose), name
        for volume in worker.get("volumes", []):
            assert str(volume).endswith(":ro"), f"{name}: a writable host mount {volume}"
    assert "UNLEARN_ARTIFACT_DIR" not in api["environment"]


def test_the_store_gets_its_bucket_before_the_service_starts(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init = services["minio-init"]
    assert "mc mb --ignore-existing" in " ".join(init["command"])
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    for name in ("api", *gpu_workers(compose)):
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_datasets_come_from_a_configured_location(compose: dict[str, Any]) -> None:
    for name in ("api", *gpu_workers(compose)):
        spec = compose["services"][name]
        assert spec["environment"]["UNLEARN_DATASET_ROOTS"] == "${DATASET_ROOTS:-/datasets}"
        assert "${DATASETS_DIR:-./datasets}:/datasets:ro" in spec["volumes"], name


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        if spec.get("restart") == "no":  # one-shot jobs: their exit status is what others wait for
            continue
        test = spec.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_worker_healthcheck_reads_the_heartbeat_on_the_metrics_port(compose: dict[str, Any]) -> None:
    for worker in workers(compose).values():
        port = worker["environment"]["UNLEARN_WORKER_METRICS_PORT"]
        assert int(port) > 0
        check = " ".join(worker["healthcheck"]["test"])
        assert f"127.0.0.1:{port}/metrics" in check and "unlearn_worker_heartbeat_timestamp_seconds" in check


def test_flower_asks_for_a_password_that_has_no_default(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    auth = flower["environment"]["FLOWER_BASIC_AUTH"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", auth), auth  # required, no fallback value
    for port in flower.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"Flower published beyond this host: {port}"


INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def test_every_unlearn_variable_is_a_setting(compose: dict[str, Any]) -> None:
    """A renamed or removed setting breaks this test (pydantic-settings would ignore the variable): the
    compose file's variables and the Dockerfile's ENV both."""
    from core.settings import Settings

    fields = set(Settings.model_fields)
    used = set(INTERPOLATION.findall((ROOT / "docker-compose.yml").read_text()))
    for spec in compose["services"].values():
        used |= set(spec.get("environment") or {})
    dockerfile = set(re.findall(r"\b(UNLEARN_[A-Z0-9_]+)=", (ROOT / "Dockerfile").read_text()))
    assert "UNLEARN_VAR_DIR" in dockerfile
    used |= dockerfile
    unlearn = {name for name in used if name.startswith("UNLEARN_")}
    assert {"UNLEARN_ARTIFACT_URL", "UNLEARN_WORKER_METRICS_PORT", "UNLEARN_LOG_FORMAT"} <= unlearn
    unknown = sorted(
        name for name in unlearn if name.removeprefix("UNLEARN_").split("__")[0].lower() not in fields
    )
    assert not unknown, f"not fields of core.settings.Settings: {unknown}"


def test_dockerfile_is_a_non_root_cuda_runtime_image_with_the_unlearn_entry_point() -> None:
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base is not None and base.group(1).startswith("nvidia/cuda:") and "runtime" in base.group(1)
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    final = stages[-1]
    assert final.startswith("${CUDA_IMAGE}")
    users = re.findall(r"^USER (\S+)$", final, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    entrypoint = re.findall(r"^ENTRYPOINT (.+)$", final, re.MULTILINE)
    assert entrypoint and yaml.safe_load(entrypoint[-1])[-1] == "unlearn"
    default_command = re.findall(r"^CMD (.+)$", final, re.MULTILINE)
    assert parse_unlearn_args(yaml.safe_load(default_command[-1])) == ["unlearn", "api"]
    for package in ("app", "core", "worker", "unlearning", "models", "migrations", "cli"):
        assert re.search(rf"^COPY {package} \./{package}$", text, re.MULTILINE), f"{package} is not copied"
