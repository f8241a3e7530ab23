"""Problem documents for every error FastAPI or we produce; health, readiness and metrics."""

from __future__ import annotations

from api_helpers import assert_problem
from fastapi.testclient import TestClient


def test_unknown_route_is_a_404_problem(client) -> None:
    body = assert_problem(client.get("/v1/nope"), 404)
    assert body["instance"] == "/v1/nope"


def test_wrong_method_is_a_405_problem_with_allow(client, admin) -> None:
    response = client.delete("/v1/datasets", headers=admin)
    assert_problem(response, 405)
    assert response.headers["allow"]  # Starlette names the methods of the first route matching the path


def test_malformed_json_is_400(client, admin) -> None:
    response = client.post(
        "/v1/deletion-requests",
        content=b'{"model_id": "x",',
        headers={**admin, "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "body")


def test_wrong_content_type_is_415(client, admin) -> None:
    response = client.post(
        "/v1/deletion-requests", content=b"model_id=x", headers={**admin, "Content-Type": "text/plain"}
    )
    assert_problem(response, 415, "Content-Type")
    response = client.post("/v1/datasets", data={"name": "x"}, headers=admin)
    assert_problem(response, 415)


def test_fastapi_validation_errors_name_the_field_path(client, admin) -> None:
    response = client.post(
        "/v1/deletion-requests", json={"model_id": "m", "sample_ids": ["a", 3]}, headers=admin
    )
    body = assert_problem(response, 422, "sample_ids.1")
    assert body["errors"][0]["in"] == "body"
    response = client.get("/v1/deletion-requests?limit=0", headers=admin)
    body = assert_problem(response, 422, "limit")
    assert body["errors"][0]["in"] == "query"


def test_unexpected_exception_is_a_500_problem_without_internals(settings, enqueued) -> None:
    from app.main import create_app

    app = create_app(settings, enqueue=enqueued)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/boom")
    body = assert_problem(response, 500)
    assert "secret" not in response.text and "RuntimeError" not in response.text, body


def test_healthz_and_readyz(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readyz_is_503_when_the_broker_is_down(client) -> None:
    client.app.state.broker_ping = lambda url: "ConnectionRefusedError: nobody listening"
    body = assert_problem(client.get("/readyz"), 503, "broker")
    assert "broker" in body["detail"]


def test_readyz_is_503_when_the_database_is_down(settings, enqueued, tmp_path) -> None:
    from app.main import create_app

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the database folder should be")
    broken = settings.model_copy(update={"database_url": f"sqlite:///{blocked}/db.sqlite"})
    app = create_app(broken, enqueue=enqueued)
    app.state.broker_ping = lambda url: None
    with TestClient(app, raise_server_exceptions=False) as test_client:
        assert_problem(test_client.get("/readyz"), 503, "database")


def test_readyz_with_the_real_broker_ping_reports_an_unreachable_broker(client) -> None:
    from app.queue import broker_ping

    client.app.state.broker_ping = broker_ping  # settings point at 127.0.0.1:1: nothing listens there
    assert_problem(client.get("/readyz"), 503, "broker")


def test_metrics_count_requests_by_route_and_status(client) -> None:
    client.get("/healthz")
    client.get("/v1/nope")
    text = client.get("/metrics").text
    assert 'unlearn_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "unlearn_http_request_duration_seconds_bucket" in text


def test_openapi_documents_both_model_registration_bodies(client) -> None:
    """Training and uploading are separate operations, each with one body (generated clients need that)."""
    schema = client.get("/openapi.json").json()
    train = schema["paths"]["/v1/models"]["post"]["requestBody"]["content"]
    assert set(train) == {"application/json"}
    upload = schema["paths"]["/v1/models/upload"]["post"]["requestBody"]["content"]
    assert upload == {"multipart/form-data": {"schema": {"$ref": "#/components/schemas/ModelUpload"}}}
    components = schema["components"]["schemas"]
    assert "ModelTrainCreate" in components and "TrainParams" in components
    fields = components["ModelUpload"]["properties"]
    assert {"name", "dataset_id", "checkpoint", "architecture", "num_classes", "in_channels"} <= set(fields)
    assert {"image_size", "mean", "std"} <= set(fields)
    assert fields["checkpoint"]["format"] == "binary"
    assert set(components["ModelUpload"]["required"]) == {"name", "dataset_id", "checkpoint"}
