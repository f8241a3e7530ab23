"""Structured logs (`core.observability.logs`), the API's X-Request-ID, and OpenTelemetry as an option:
off by default with nothing of it imported, a clear error when on but not installed, and an API request
span when on (in a child process: a tracer provider and the SQLAlchemy patch are process-wide)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def settings(tmp_path: Path, **values: Any) -> Any:
    from core.settings import Settings

    return Settings(var_dir=tmp_path / "var", **values)


def test_json_lines_carry_the_bound_ids_only_inside_their_scope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    from core.observability.logs import bind, bound, configure_logging

    configure_logging(settings(tmp_path, log_format="json"), "worker")
    log = logging.getLogger("unlearn.test")
    with bound(job_id="job_1", model_id="mdl_1", attempt=2, request_ids=["req_a", "req_b"], absent=None):
        log.info("inside %s", "the job", extra={"stage": "load"})
        with bound(task_id="t-1"):
            bind(request_id="req_a")
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("failed")
        log.warning("after the inner scope")
    log.info("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    inside, failed, after, outside = lines
    assert inside["message"] == "inside the job" and inside["stage"] == "load"
    assert (inside["job_id"], inside["model_id"], inside["attempt"]) == ("job_1", "mdl_1", 2)
    assert inside["request_ids"] == ["req_a", "req_b"] and "absent" not in inside
    assert inside["level"] == "INFO" and inside["logger"] == "unlearn.test" and inside["service"] == "worker"
    assert inside["time"].endswith("+00:00") and isinstance(inside["process"], int)
    assert failed["request_id"] == "req_a" and failed["task_id"] == "t-1" and failed["level"] == "ERROR"
    assert "ValueError: boom" in failed["exc_info"] and "Traceback" in failed["exc_info"]
    assert "task_id" not in after and "request_id" not in after and after["job_id"] == "job_1"
    assert not {"job_id", "request_ids", "task_id"} & set(outside)


def test_configuring_again_replaces_only_its_own_handler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    from core.observability.logs import bound, configure_logging

    foreign = logging.NullHandler()
    logging.getLogger().addHandler(foreign)
    configure_logging(settings(tmp_path, log_format="json"), "api")
    configure_logging(settings(tmp_path, log_format="text", log_level="WARNING"), "api")
    assert foreign in logging.getLogger().handlers
    log = logging.getLogger("unlearn.test")
    with bound(request_id="req_x", attempt=1):
        log.info("not at WARNING")
        log.warning("hello")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not at WARNING" not in err
    assert "WARNING api[" in err and "unlearn.test: hello request_id=req_x attempt=1" in err


def test_libraries_that_log_each_http_request_stay_quiet_unless_debugging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    from core.observability.logs import configure_logging

    httpx_log = logging.getLogger("httpx")
    try:
        configure_logging(settings(tmp_path, log_level="INFO"), "worker")
        httpx_log.info("HTTP Request: POST http://10.0.0.1/hook")
        httpx_log.warning("a warning still shows")
        logging.getLogger("unlearn.test").info("our own INFO line")
        err = capsys.readouterr().err
        assert "HTTP Request" not in err and "a warning still shows" in err and "our own INFO line" in err
        configure_logging(settings(tmp_path, log_level="DEBUG"), "worker")
        httpx_log.info("HTTP Request: GET http://10.0.0.1/debugging")
        assert "HTTP Request: GET http://10.0.0.1/debugging" in capsys.readouterr().err
    finally:
        httpx_log.setLevel(logging.NOTSET)


def test_the_api_returns_the_callers_request_id_or_a_new_one(tmp_path: Path, restore_logging: None) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(settings(tmp_path), enqueue=lambda *args, **kwargs: True)
    with TestClient(app) as client:
        given = client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"})
        assert given.headers["x-request-id"] == "trace-42.a:b"
        for bad in ("has space", "x" * 129, ""):
            replaced = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
            assert replaced != bad and len(replaced) == 32 and int(replaced, 16) >= 0


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, "UNLEARN_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


APP_REQUEST = """
    import sys
    from fastapi.testclient import TestClient
    from app.main import create_app
    with TestClient(create_app(enqueue=lambda *args, **kwargs: True)) as client:
        assert client.get("/healthz").status_code == 200
    import core.jobs.loop, worker.celery_app  # the worker's modules too
"""


OTEL_OPTIONAL = ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")
"""What the `otel` extra brings (FastAPI itself imports the `opentelemetry` API package, a no-op)."""


def test_tracing_off_by_default_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    report = f"print(sorted(m for m in sys.modules if m.startswith({OTEL_OPTIONAL!r})))"
    done = run_python(textwrap.dedent(APP_REQUEST) + report, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_tracing_on_without_the_packages_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.observability.tracing import TracingUnavailable, start_tracing

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(TracingUnavailable, match=r"pip install 'unlearn-service\[otel\]'"):
        start_tracing(settings(tmp_path, otel_enabled=True), "api")
    assert start_tracing(settings(tmp_path), "api") is False


def test_tracing_on_records_a_span_per_api_request(tmp_path: Path) -> None:
    """The `otel` packages are in the `test` extra, so this runs wherever the tests do."""
    setup = """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    """
    report = """
        for span in exporter.get_finished_spans():
            print(span.name, span.attributes.get("http.route"), span.kind)
    """
    code = "".join(textwrap.dedent(part) for part in (setup, APP_REQUEST, report))
    done = run_python(code, tmp_path, UNLEARN_OTEL_ENABLED="true")
    assert done.returncode == 0, done.stderr
    assert "GET /healthz /healthz SpanKind.SERVER" in done.stdout.splitlines(), done.stdout
