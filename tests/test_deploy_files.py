"""The deployment files, checked without a Docker engine: the compose file parses, every container
command of our image is a real `unlearn` invocation (parsed by the CLI's own click command), the GPU
worker has a device reservation and the production worker flags, and the Dockerfile runs `unlearn` as a
non-root user on a CUDA runtime base image."""

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
    assert {"postgres", "redis", "api", "worker-gpu-0", "flower"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    environment = services["api"]["environment"]
    assert environment["UNLEARN_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert environment["UNLEARN_BROKER_URL"] == "redis://redis:6379/0"
    assert environment["UNLEARN_ENV"] == "production"


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


def test_gpu_worker_reserves_a_gpu_and_runs_one_process_per_task(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker-gpu-0"]
    command = worker["command"]
    assert option(command, "--queues") == "gpu"
    assert option(command, "--concurrency") == "1"
    assert option(command, "--max-tasks-per-child") == "1"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert worker["environment"]["UNLEARN_QUEUE_NAME"] == "gpu"
    # The API must enqueue on the queue the GPU workers consume.
    assert compose["services"]["api"]["environment"]["UNLEARN_QUEUE_NAME"] == "gpu"


def test_api_and_workers_share_the_artifact_volume(compose: dict[str, Any]) -> None:
    for name in ("api", "worker-gpu-0"):
        assert "artifacts:/data/artifacts" in compose["services"][name]["volumes"], name
        assert compose["services"][name]["environment"]["UNLEARN_ARTIFACT_DIR"] == "/data/artifacts"


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
    for package in ("app", "worker", "unlearning", "models", "migrations", "cli"):
        assert re.search(rf"^COPY {package} \./{package}$", text, re.MULTILINE), f"{package} is not copied"
