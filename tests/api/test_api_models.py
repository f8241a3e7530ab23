"""Models: training through a worker job, registration by upload (validated), versions, download."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from api_helpers import DIGITS_SPEC, assert_problem, count_rows
from safetensors.numpy import save_file

from core.storage import local_path


def artifact_files(settings) -> list[str]:
    root = local_path(settings.artifact_url)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory) -> bytes:
    """A real checkpoint of an untrained digits MLP (torch is imported here, in the test process only)."""
    from models.checkpoint import save_checkpoint
    from models.registry import build_model
    from models.spec import ModelSpec

    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    save_checkpoint(build_model(ModelSpec(**DIGITS_SPEC)), path, metadata={"note": "test"})
    return path.read_bytes()


def upload(client, headers, dataset_id, payload: bytes, name="uploaded"):
    return client.post(
        "/v1/models/upload",
        data={"name": name, "dataset_id": dataset_id},
        files={"checkpoint": ("model.safetensors", payload, "application/octet-stream")},
        headers=headers,
    )


def test_train_request_creates_a_training_model_a_job_and_enqueues(
    client, keys, digits_dataset, enqueued, db
) -> None:
    body = {"name": "base", "architecture": "mlp", "dataset_id": digits_dataset["id"], "train": {"epochs": 5}}
    response = client.post("/v1/models", json=body, headers=keys.headers("models"))
    assert response.status_code == 202, response.text
    model = response.json()
    assert response.headers["location"] == f"/v1/models/{model['id']}"
    assert model["status"] == "training" and model["head_version_id"] is None
    assert (
        model["train_params"]["recipe"]["epochs"] == 5
        and model["train_params"]["recipe"]["batch_size"] == 128
    )
    assert enqueued.calls == [("worker.train_base_model", model["id"])]
    from sqlalchemy import text

    from core.db import session_scope

    with session_scope(db, readonly=True) as session:
        jobs = session.execute(text("SELECT kind, status, model_id FROM jobs")).all()
    assert [tuple(j) for j in jobs] == [("train", "queued", model["id"])]
    fetched = client.get(f"/v1/models/{model['id']}", headers=keys.headers("models_reader")).json()
    assert fetched["status"] == "training"


def test_bad_train_requests(client, admin, digits_dataset, enqueued, db) -> None:
    ok = {"name": "base", "architecture": "mlp", "dataset_id": digits_dataset["id"]}
    cases = [
        ({**ok, "architecture": "vgg"}, 422, "architecture"),
        ({**ok, "dataset_id": "ds_missing"}, 404, "dataset_id"),
        ({**ok, "train": {"epochs": 0}}, 422, "train.epochs"),
        ({**ok, "train": {"epochs": "ten"}}, 422, "train.epochs"),
        ({**ok, "train": {"lr_max": -1}}, 422, "train.lr_max"),
        ({**ok, "train": {"optimizer": "adam"}}, 422, "train.optimizer"),
        ({**ok, "name": ""}, 422, "name"),
    ]
    for body, status, field in cases:
        assert_problem(client.post("/v1/models", json=body, headers=admin), status, field)
    response = client.post(
        "/v1/models", content=b"{oops", headers={**admin, "Content-Type": "application/json"}
    )
    assert_problem(response, 400)
    assert count_rows(db, "models") == 0 and count_rows(db, "jobs") == 0 and enqueued.calls == []


def test_upload_registers_version_one_and_the_checkpoint_downloads(
    client, keys, digits_dataset, settings, mlp_checkpoint, db
) -> None:
    response = upload(client, keys.headers("models"), digits_dataset["id"], mlp_checkpoint)
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["status"] == "ready" and model["architecture"] == "mlp" and model["head_version_id"]
    versions = client.get(f"/v1/models/{model['id']}/versions", headers=keys.headers("models_reader")).json()
    assert len(versions["data"]) == 1
    version = versions["data"][0]
    assert version["number"] == 1 and version["id"] == model["head_version_id"]
    assert version["sha256"] == hashlib.sha256(mlp_checkpoint).hexdigest()
    assert version["size_bytes"] == len(mlp_checkpoint)
    assert (
        client.get(f"/v1/model-versions/{version['id']}", headers=keys.headers("models_reader")).json()
        == version
    )

    download = client.get(version["links"]["checkpoint"], headers=keys.headers("models_reader"))
    assert download.status_code == 200 and download.content == mlp_checkpoint
    assert download.headers["etag"] == f'"{version["sha256"]}"'
    assert download.headers["content-length"] == str(len(mlp_checkpoint))
    cached = client.get(
        version["links"]["checkpoint"],
        headers={**keys.headers("models_reader"), "If-None-Match": download.headers["etag"]},
    )
    assert (
        cached.status_code == 304
        and cached.content == b""
        and cached.headers["etag"] == download.headers["etag"]
    )
    stale = client.get(
        version["links"]["checkpoint"], headers={**keys.headers("models_reader"), "If-None-Match": '"x"'}
    )
    assert stale.status_code == 200
    assert artifact_files(settings) == [f"models/{model['id']}/{version['id']}.safetensors"]


def _safetensors_bytes(tmp_path, tensors, metadata) -> bytes:
    path = tmp_path / "x.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return path.read_bytes()


def test_bad_uploads_are_refused_and_leave_nothing_behind(
    client, admin, digits_dataset, settings, mlp_checkpoint, tmp_path, db
) -> None:
    spec11 = json.dumps({**DIGITS_SPEC, "num_classes": 11})
    cases = [
        ("not safetensors", b"PK\x03\x04 this is a zip, not a checkpoint" * 10, 422),
        ("truncated", mlp_checkpoint[: len(mlp_checkpoint) // 2], 422),
        ("header only", mlp_checkpoint[:8], 422),
        (
            "spec for 11 classes",
            _safetensors_bytes(tmp_path, {"w": np.zeros(3, np.float32)}, {"spec": spec11}),
            422,
        ),
        ("bad spec json", _safetensors_bytes(tmp_path, {"w": np.zeros(3, np.float32)}, {"spec": "{"}), 422),
        ("over the size cap", b"\0" * (settings.max_upload_bytes + 1), 413),
        ("empty", b"", 422),
    ]
    for name, payload, status in cases:
        assert_problem(upload(client, admin, digits_dataset["id"], payload), status, "checkpoint"), name
    no_spec = _safetensors_bytes(tmp_path, {"w": np.zeros(3, np.float32)}, {"other": "x"})
    problem = assert_problem(upload(client, admin, digits_dataset["id"], no_spec), 422, "architecture")
    assert "plain state_dict" in problem["detail"]
    assert_problem(upload(client, admin, "ds_missing", mlp_checkpoint), 404, "dataset_id")
    missing_field = client.post(
        "/v1/models/upload", data={"name": "x"}, files={"checkpoint": ("m", b"x")}, headers=admin
    )
    assert_problem(missing_field, 422, "dataset_id")
    no_file = client.post(
        "/v1/models/upload",
        data={"name": "x", "dataset_id": digits_dataset["id"]},
        files={"other": ("m", b"x")},
        headers=admin,
    )
    assert_problem(no_file, 422)
    assert count_rows(db, "models") == 0 and count_rows(db, "model_versions") == 0
    assert artifact_files(settings) == []


def test_upload_whose_tensors_do_not_fit_the_architecture_is_refused(
    client, admin, digits_dataset, settings, tmp_path, db
) -> None:
    client.app.state.settings = settings.model_copy(update={"verify_uploaded_weights": True})
    payload = _safetensors_bytes(
        tmp_path, {"layer.weight": np.zeros((3, 3), np.float32)}, {"spec": json.dumps(DIGITS_SPEC)}
    )
    body = assert_problem(upload(client, admin, digits_dataset["id"], payload), 422, "checkpoint")
    assert "does not fit architecture" in body["detail"]
    assert count_rows(db, "models") == 0 and artifact_files(settings) == []


def test_missing_checkpoint_file_is_410_and_unknown_ids_404(client, admin, ready_model) -> None:
    assert_problem(client.get("/v1/model-versions/ver_missing", headers=admin), 404, "id")
    assert_problem(client.get("/v1/model-versions/ver_missing/checkpoint", headers=admin), 404)
    assert_problem(client.get("/v1/models/mdl_missing/versions", headers=admin), 404)
    ready_model.checkpoint.unlink()
    assert_problem(client.get(f"/v1/model-versions/{ready_model.version_id}/checkpoint", headers=admin), 410)


def test_models_list_paginates_and_filters(client, admin, digits_dataset) -> None:
    ids = []
    for i in range(3):
        body = {"name": f"m{i}", "architecture": "mlp", "dataset_id": digits_dataset["id"]}
        ids.append(client.post("/v1/models", json=body, headers=admin).json()["id"])
    first = client.get("/v1/models", params={"limit": 2}, headers=admin).json()
    second = client.get(
        "/v1/models", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin
    ).json()
    assert [m["id"] for m in first["data"] + second["data"]] == ids and second["next_cursor"] is None
    assert client.get("/v1/models", params={"status": "ready"}, headers=admin).json()["data"] == []


def test_a_retired_version_answers_410_naming_its_successor(client, admin, ready_model, settings) -> None:
    """A version that still holds samples a later version forgot is never served again; the model's
    checkpoint route serves the head."""
    from core import lifecycle
    from core.db import Model, session_scope, utcnow

    payload = b"the successor's weights"
    path = local_path(settings.artifact_url) / "models" / ready_model.model_id / "v2.safetensors"
    path.write_bytes(payload)
    with session_scope(settings.database_url) as session:
        model = session.get(Model, ready_model.model_id)
        successor = lifecycle.version_created(
            session,
            model,
            checkpoint_uri=str(path),
            sha256=hashlib.sha256(payload).hexdigest(),
            size_bytes=len(payload),
            parent_id=ready_model.version_id,
        )
        lifecycle.versions_retired(
            session, model, successor, utcnow(), grace_s=3600, actor="test", request_ids=["req_x"]
        )
        successor_id = successor.id

    old = client.get(f"/v1/model-versions/{ready_model.version_id}/checkpoint", headers=admin)
    problem = assert_problem(old, 410, "version_id")
    assert successor_id in problem["detail"] and "retired" in problem["detail"]
    assert ready_model.checkpoint.is_file(), "within the grace the file is kept, but never served"
    shown = client.get(f"/v1/model-versions/{ready_model.version_id}", headers=admin).json()
    assert shown["state"] == "retired" and shown["retired_by"] == successor_id and shown["purge_after"]
    head = client.get(f"/v1/models/{ready_model.model_id}/checkpoint", headers=admin)
    assert head.status_code == 200 and head.content == payload
    assert head.headers["etag"] == f'"{hashlib.sha256(payload).hexdigest()}"'
    assert_problem(client.get("/v1/models/mdl_missing/checkpoint", headers=admin), 404)
