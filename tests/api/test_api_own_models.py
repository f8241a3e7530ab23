"""Bring your own model: networks trained elsewhere (torchvision's resnet18 with its ImageNet stem,
mobilenet_v3_small, an in-house module registered by entry point) are uploaded as the plain safetensors
state_dicts users write, forget samples and then a class through the worker, and load back strictly into
the user's own module. Bad uploads get a 422 naming the field (and both shapes) and leave no row and no
file. Every operation has one request body, so a generated client works on all of them."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision
from api_helpers import assert_problem, count_rows
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from core.storage import local_path

USER_MEAN, USER_STD = [0.45, 0.42, 0.4], [0.22, 0.2, 0.21]
"""The normalisation the user trained with (their own, not the dataset's)."""
FAST_DAU: dict[str, Any] = {
    "iterations": 4,
    "attacker_warmup": 4,
    "batch_size": 16,
    "eval_every": 2,
    "retain_probe": 16,
    "sensitivity_copies": 1,
    "attacker": {"token_dim": 8, "layers": 1, "heads": 2, "ff_dim": 16, "hidden_dim": 8},
}
ARCHITECTURES = ["torchvision/resnet18", "torchvision/mobilenet_v3_small", "plugin/tiny_cnn"]


sys.path.append(str(Path(__file__).parents[1] / "plugin"))
byom = importlib.import_module("byom")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The plugin installed (the API's model-check process inherits sys.path) and a generated npz dataset
    of 16 x 16 RGB images in 3 classes."""
    with byom.installed(tmp_path_factory.mktemp("byom")) as folder:
        yield byom.write_npz(folder / "shapes.npz", classes=3, train_per_class=16, holdout_per_class=6)


@pytest.fixture
def shapes(client: Any, admin: dict[str, str], settings: Any, images: Path) -> dict[str, Any]:
    """The npz dataset registered; uploads as large as a resnet18, and every upload checked."""
    client.app.state.settings = settings.model_copy(
        update={"max_upload_bytes": 96 * 1024 * 1024, "verify_uploaded_weights": True}
    )
    body = {"name": "shapes", "format": "npz", "uri": str(images)}
    response = client.post("/v1/datasets", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def users_module(architecture: str, num_classes: int = 3) -> nn.Module:
    source, name = architecture.split("/")
    if source == "torchvision":
        return torchvision.models.get_model(name, num_classes=num_classes)
    return byom.plugin_module().TinyCNN(num_classes=num_classes)  # type: ignore[no-any-return]


def train_elsewhere(module: nn.Module, images: Path, steps: int = 3) -> bytes:
    """A few SGD steps with the user's own normalisation, saved as users do: a plain state_dict."""
    data = np.load(images)
    train = data["split"] == "train"
    x = torch.from_numpy(data["x"][train]).float() / 255
    x = (x - torch.tensor(USER_MEAN).view(1, 3, 1, 1)) / torch.tensor(USER_STD).view(1, 3, 1, 1)
    y = torch.from_numpy(data["y"][train])
    torch.manual_seed(0)
    optimiser = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    module.train()
    for _ in range(steps):
        rows = torch.randperm(len(x))[:32]
        loss = nn.functional.cross_entropy(module(x[rows]), y[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    module.eval()
    return save_safetensors({k: v.contiguous() for k, v in module.state_dict().items()})


def upload(client: Any, headers: dict[str, str], dataset_id: str, payload: bytes, **fields: Any) -> Any:
    data = {"name": "users-model", "dataset_id": dataset_id, **{k: str(v) for k, v in fields.items()}}
    return client.post(
        "/v1/models/upload",
        data=data,
        files={"checkpoint": ("model.safetensors", payload, "application/octet-stream")},
        headers=headers,
    )


def users_fields(architecture: str) -> dict[str, str]:
    return {
        "architecture": architecture,
        "mean": ",".join(map(str, USER_MEAN)),
        "std": json.dumps(USER_STD),
    }


def artifact_files(settings: Any) -> list[str]:
    root = local_path(settings.artifact_url)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def forget(client: Any, admin: dict[str, str], settings: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Post a deletion request and run the worker's job loop in-process until it is done."""
    from core.db import JobKind
    from core.jobs.loop import run_jobs

    response = client.post("/v1/deletion-requests", json={**body, "params": FAST_DAU}, headers=admin)
    assert response.status_code == 202, response.text
    outcomes = run_jobs(
        JobKind.unlearn, body["model_id"], settings=client.app.state.settings, enqueue=lambda *a, **k: True
    )
    assert [o.outcome for o in outcomes] == ["succeeded"], outcomes
    request = client.get(f"/v1/deletion-requests/{response.json()['id']}", headers=admin).json()
    assert request["status"] == "succeeded", request
    return request  # type: ignore[no-any-return]


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_model_trained_elsewhere_forgets_samples_then_a_class_and_loads_back_strictly(
    architecture: str, client: Any, admin: dict[str, str], settings: Any, shapes: dict[str, Any], images: Path
) -> None:
    payload = train_elsewhere(users_module(architecture), images)
    response = upload(client, admin, shapes["id"], payload, **users_fields(architecture))
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["architecture"] == architecture and model["status"] == "ready"
    [first] = client.get(f"/v1/models/{model['id']}/versions", headers=admin).json()["data"]
    spec = first["params"]["spec"]
    assert spec["architecture"] == architecture and spec["mean"] == USER_MEAN and spec["std"] == USER_STD
    assert (spec["num_classes"], spec["in_channels"], spec["image_size"]) == (3, 3, 16)  # the dataset's
    assert first["params"]["upload"]["sha256"] == hashlib.sha256(payload).hexdigest()
    stored = client.get(first["links"]["checkpoint"], headers=admin).content
    assert load_safetensors(stored).keys() == load_safetensors(payload).keys()
    assert all(torch.equal(load_safetensors(stored)[k], v) for k, v in load_safetensors(payload).items())

    samples = client.get(
        f"/v1/datasets/{shapes['id']}/samples", params={"split": "train", "limit": 100}, headers=admin
    ).json()["data"]
    forget(
        client,
        admin,
        settings,
        {"model_id": model["id"], "sample_ids": [s["sample_id"] for s in samples[:5]]},
    )
    forget(client, admin, settings, {"model_id": model["id"], "class": 1})

    versions = client.get(f"/v1/models/{model['id']}/versions", headers=admin).json()["data"]
    assert [v["number"] for v in versions] == [1, 2, 3]
    head = client.get(f"/v1/models/{model['id']}/checkpoint", headers=admin)
    assert head.status_code == 200
    state = load_safetensors(head.content)
    users = users_module(architecture)
    users.load_state_dict(state, strict=True)  # the user's own module, strictly
    assert any(not torch.equal(state[k], v) for k, v in load_safetensors(payload).items())
    path = local_path(settings.artifact_url) / "head.safetensors"
    path.write_bytes(head.content)
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["spec"]) == spec, "the service's files carry the spec"


def test_bad_uploads_get_a_422_naming_the_field_and_leave_nothing_behind(
    client: Any, admin: dict[str, str], settings: Any, shapes: dict[str, Any], db: str, tmp_path: Path
) -> None:
    from models.checkpoint import save_checkpoint
    from models.registry import build_model
    from models.spec import ModelSpec

    resnet = train_elsewhere(users_module("torchvision/resnet18"), Path(shapes["uri"]), steps=1)
    greyscale = torchvision.models.resnet18(num_classes=3)
    greyscale.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
    ten_classes = save_safetensors(torchvision.models.resnet18(num_classes=10).state_dict())
    pickle_path = tmp_path / "model.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), pickle_path)
    tiny_mlp = tmp_path / "tiny-mlp.safetensors"  # the service's own format, for 8 px greyscale images
    spec8 = ModelSpec(architecture="mlp", num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.2])
    save_checkpoint(build_model(spec8), tiny_mlp)
    resnet18 = users_fields("torchvision/resnet18")
    id_ = shapes["id"]
    cases: list[tuple[str, bytes, dict[str, Any], str, list[str]]] = [
        ("declared channels", resnet, {**resnet18, "in_channels": 1}, "in_channels", ["[batch, 3, 16, 16]"]),
        (
            "weights for greyscale",
            save_safetensors(greyscale.state_dict()),
            resnet18,
            "in_channels",
            ["[64, 1, 7, 7]", "[64, 3, 7, 7]"],
        ),
        ("declared size", resnet, {**resnet18, "image_size": 32}, "image_size", ["32, 32]", "16, 16]"]),
        ("weights for 10 classes", ten_classes, resnet18, "num_classes", ["[10, 512]", "[3, 512]"]),
        ("declared classes", resnet, {**resnet18, "num_classes": 10}, "num_classes", ["10", "3"]),
        (
            "unknown torchvision model",
            resnet,
            {**resnet18, "architecture": "torchvision/resnet19"},
            "architecture",
            ["resnet18"],
        ),
        ("unknown kind of architecture", resnet, {**resnet18, "architecture": "vgg"}, "architecture", []),
        ("unknown plugin", resnet, {**resnet18, "architecture": "plugin/nope"}, "architecture", ["tiny_cnn"]),
        (
            "weights of another architecture",
            train_elsewhere(users_module("torchvision/mobilenet_v3_small"), Path(shapes["uri"]), steps=1),
            resnet18,
            "checkpoint",
            ["missing tensors", "unexpected tensors"],
        ),
        ("a pickle", pickle_path.read_bytes(), resnet18, "checkpoint", ["torch.save", "save_file"]),
        ("no architecture for a plain state_dict", resnet, {"mean": resnet18["mean"]}, "architecture", []),
        ("a mean per channel", resnet, {**resnet18, "mean": "0.5,0.5"}, "mean", ["in_channels is 3"]),
        ("an 8 px greyscale MLP", tiny_mlp.read_bytes(), {}, "checkpoint", ["1 input channels", "3-channel"]),
    ]
    # the first check of this process starts the model-check child; later ones find it warm
    assert_problem(upload(client, admin, id_, ten_classes, **resnet18), 422, "num_classes")
    for name, payload, fields, field, fragments in cases:
        problem = assert_problem(upload(client, admin, id_, payload, **fields), 422, field)
        for fragment in fragments:
            assert fragment in problem["detail"], (name, problem["detail"])
    assert count_rows(db, "models") == 0 and count_rows(db, "model_versions") == 0
    assert artifact_files(settings) == []


def test_every_operation_has_one_request_body(client: Any) -> None:
    schema = client.get("/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            assert len(content) <= 1, (method, path, sorted(content))


def test_a_generated_client_trains_and_uploads(
    client: Any, admin: dict[str, str], shapes: dict[str, Any], images: Path, tmp_path: Path
) -> None:
    generator = os.environ.get("OPENAPI_PYTHON_CLIENT") or shutil.which("openapi-python-client")
    if generator is None or not os.access(generator, os.X_OK) or importlib.util.find_spec("attrs") is None:
        pytest.skip(
            "openapi-python-client (on PATH or $OPENAPI_PYTHON_CLIENT; `make test` installs it in .tools/) "
            "and attrs are needed"
        )
    (tmp_path / "openapi.json").write_text(json.dumps(client.get("/openapi.json").json()))
    package = tmp_path / "unlearn_client"
    generated = subprocess.run(
        [generator, "generate", "--path", "openapi.json", "--meta", "none", "--output-path", package.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert generated.returncode == 0 and package.is_dir(), generated.stdout + generated.stderr
    assert "could not" not in generated.stdout.lower(), generated.stdout
    sys.path.insert(0, str(tmp_path))
    try:
        from unlearn_client import AuthenticatedClient
        from unlearn_client.api.models import train_model_v1_models_post, upload_model_v1_models_upload_post
        from unlearn_client.models import ModelTrainCreate, ModelUpload
        from unlearn_client.types import File

        client.headers.update(admin)
        api = AuthenticatedClient(base_url="http://testserver", token="unused").set_httpx_client(client)
        trained = train_model_v1_models_post.sync_detailed(
            client=api, body=ModelTrainCreate(name="base", architecture="mlp", dataset_id=shapes["id"])
        )
        assert trained.status_code == 202, trained.content
        payload = train_elsewhere(users_module("plugin/tiny_cnn"), images, steps=1)
        body = ModelUpload(
            name="generated",
            dataset_id=shapes["id"],
            checkpoint=File(payload=payload, file_name="model.safetensors"),
            architecture="plugin/tiny_cnn",
            mean=",".join(map(str, USER_MEAN)),
            std=",".join(map(str, USER_STD)),
        )
        uploaded = upload_model_v1_models_upload_post.sync_detailed(client=api, body=body)
        assert uploaded.status_code == 201, uploaded.content
        assert uploaded.parsed.architecture == "plugin/tiny_cnn"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == "unlearn_client"]:
            del sys.modules[name]


def test_a_worker_trains_any_architecture_and_its_file_loads_into_torchvision(
    client: Any, admin: dict[str, str], shapes: dict[str, Any], enqueued: Any
) -> None:
    from core.db import JobKind
    from core.jobs.loop import run_jobs

    body = {"name": "tv", "dataset_id": shapes["id"], "train": {"epochs": 1, "batch_size": 16}}
    refused = client.post("/v1/models", json={**body, "architecture": "torchvision/resnet19"}, headers=admin)
    assert "resnet18" in assert_problem(refused, 422, "architecture")["detail"]
    response = client.post(
        "/v1/models", json={**body, "architecture": "torchvision/mobilenet_v3_small"}, headers=admin
    )
    assert response.status_code == 202, response.text
    model_id = response.json()["id"]
    assert enqueued.calls == [("worker.train_base_model", model_id)]
    outcomes = run_jobs(JobKind.train, model_id, settings=client.app.state.settings, enqueue=enqueued)
    assert [o.outcome for o in outcomes] == ["succeeded"], outcomes
    head = client.get(f"/v1/models/{model_id}/checkpoint", headers=admin)
    assert head.status_code == 200, head.text
    users_module("torchvision/mobilenet_v3_small").load_state_dict(
        load_safetensors(head.content), strict=True
    )
