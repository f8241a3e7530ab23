"""A bounded schemathesis run in the suite (bench/fuzz_api.py runs the same driver with 1,000+ cases):
no 5xx, and every response conforms to the OpenAPI document (status, content type, headers, body)."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from load_by_path import TESTS, load_module
from pydantic import BaseModel

CASES = 120
PROBLEM = "application/problem+json"


def _fuzz_module() -> ModuleType:
    if importlib.util.find_spec("schemathesis") is None:
        reason = "schemathesis is not installed (pip install schemathesis)"
        if os.environ.get("REQUIRE_SERVICES", "") not in ("", "0", "false", "no"):
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return load_module("unlearn_bench_fuzz_api", TESTS.parent / "bench" / "fuzz_api.py")


def _services() -> ModuleType:
    """tests/worker/services.py: a throw-away PostgreSQL database (CI), or a stated skip."""
    return load_module("unlearn_test_services", TESTS / "worker" / "services.py")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def seeded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ModuleType, Any, dict[str, str], Any]]:
    fuzz = _fuzz_module()
    directory = tmp_path_factory.mktemp("fuzz")
    with _services().database_url_for(request.param, str(directory)) as database_url:
        settings = fuzz.fuzz_settings(directory, database_url)
        with fuzz.seeded_app(settings) as (app, headers, rows):
            yield fuzz, app, headers, rows
        from core.db.session import dispose_engine

        dispose_engine(settings.database_url)


def test_generated_requests_cause_no_server_error_and_conform_to_the_schema(seeded) -> None:
    fuzz, app, headers, rows = seeded
    figures = fuzz.fuzz_app(
        app, headers, rows, cases=CASES, seed=1
    )  # seed 1 is the one that found the cursor bug
    report = "\n\n".join(
        f"{f.operation} -> {f.status}\n{f.problem}\n{f.reproduce}" for f in figures.server_errors
    )
    assert not figures.server_errors, report
    assert not figures.nonconforming, "\n\n".join(
        f"{f.operation} -> {f.status}\n{f.problem}\n{f.reproduce}" for f in figures.nonconforming[:10]
    )
    assert 100 <= figures.cases <= 2 * CASES, figures.cases
    assert len(figures.by_operation) == figures.operations >= 23  # every operation was exercised
    statuses = set(figures.by_status)
    # Real IDs and bodies got through to the handlers (200/201/202), and refusals were exercised too.
    assert {200, 401, 404, 422} <= statuses and statuses & {201, 202}, figures.by_status


def test_openapi_documents_the_problem_responses(seeded) -> None:
    """What the first fuzz run found: 401/403/404/409/413/415 were undocumented and 422 was documented as
    FastAPI's `HTTPValidationError` in application/json, while the API answers problem+json."""
    _, app, headers, _ = seeded
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()
        unauthorised = client.get("/v1/datasets")
        unknown = client.get("/v1/datasets/ds_nope", headers=headers)
        invalid = client.post("/v1/datasets", json={"name": 1}, headers=headers)
    problem = schema["components"]["schemas"]["Problem"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert PROBLEM in responses["default"]["content"], (method, path)
            for status, response in responses.items():
                if status[0] in "45":
                    assert list(response["content"]) == [PROBLEM], (method, path, status)
    for response, status in ((unauthorised, 401), (unknown, 404), (invalid, 422)):
        assert response.status_code == status and response.headers["content-type"].startswith(PROBLEM)
        body = response.json()
        assert set(problem["required"]) <= set(body) <= set(problem["properties"]), body


class Answer(BaseModel):
    value: int


def _broken_app() -> FastAPI:
    """One route that crashes, one whose answer contradicts its documented schema, one that is fine."""
    broken = FastAPI()

    @broken.get("/crash")
    def crash(n: int = 1) -> Answer:
        return Answer(value=n // 0)

    @broken.get("/lies", response_model=Answer)
    def lies() -> JSONResponse:
        return JSONResponse({"value": "not an int"})

    @broken.get("/fine", response_model=Answer)
    def fine() -> Answer:
        return Answer(value=1)

    return broken


def test_the_driver_reports_server_errors_and_nonconforming_responses() -> None:
    """A fuzz harness that cannot see a failure proves nothing: aim it at an app that has both kinds."""
    fuzz = _fuzz_module()
    figures = fuzz.fuzz_app(_broken_app(), {}, fuzz.Seeded({}, ["x"], b""), cases=12, seed=0)
    assert {f.operation for f in figures.server_errors} == {"GET /crash"}
    assert "GET /lies" in {f.operation for f in figures.nonconforming}
    assert figures.by_operation["GET /fine"] >= 1 and not figures.not_generated


def test_a_cursor_with_a_non_ascii_signature_is_a_400_not_a_500(seeded) -> None:
    """Found by bench/fuzz_api.py (seed 1): `?cursor=.%F2%A9%AD%85P...` made hmac.compare_digest raise
    TypeError (it refuses non-ASCII str) in every list endpoint."""
    _, app, headers, rows = seeded
    from fastapi.testclient import TestClient

    lists = [
        "/v1/datasets",
        f"/v1/datasets/{rows.path_ids['dataset_id'][0]}/samples",
        "/v1/models",
        f"/v1/models/{rows.path_ids['model_id'][0]}/versions",
        "/v1/deletion-requests",
        "/v1/audit-log",
    ]
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in lists:
            for cursor in ("%2E%F2%A9%AD%85P%F3%9D%A3%8B%0Bq", "e30.%C3%A9t%C3%A9", "e30.%ED%A0%80"):
                response = client.get(f"{path}?cursor={cursor}", headers=headers)
                assert response.status_code == 400, (path, cursor, response.text)
                assert response.json()["errors"][0]["field"] == "cursor"
