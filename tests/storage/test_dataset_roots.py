"""Dataset locations are confined to the dataset roots: a uri elsewhere, with `..`, through a symlink that
leads out (at the uri or inside an image folder) or in another bucket or prefix is refused with a 422 on
`uri` that says the same whether the outside location exists or not, names no outside path, and stores
nothing."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from s3_server import S3Server

from core.settings import Settings


def npz_bytes(count: int = 12) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x=rng.integers(0, 256, size=(count, 8, 8), dtype=np.uint8),
        y=np.arange(count) % 2,
        sample_id=np.array([f"s{index:03d}" for index in range(count)]),
        split=np.array(["train", "train", "val", "test"] * (count // 4)),
    )
    return buffer.getvalue()


def image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 6) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            Image.new("RGB", (8, 8), (index * 20, 0, 0)).save(root / name / f"{index}.png")
    return root


def register(api: Any, uri: str, format: str = "npz", name: str = "ds") -> Any:
    return api.post("/v1/datasets", json={"name": name, "format": format, "uri": uri})


def refused(response: Any, *outside: str) -> str:
    """The refusal's detail, after checking it is a 422 on `uri` naming none of `outside`."""
    assert response.status_code == 422, response.text
    problem = response.json()
    assert [error["field"] for error in problem["errors"]] == ["uri"], problem
    text = response.text
    for path in outside:
        assert path not in text, f"the refusal names {path}: {text}"
    return str(problem["detail"])


def nothing_stored(api: Any) -> None:
    assert api.get("/v1/datasets").json()["data"] == []


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A dataset root, and outside it a folder holding a dataset and an image folder (what a probe would
    look for) plus a path that does not exist."""
    root = tmp_path / "roots" / "datasets"
    outside = tmp_path / "elsewhere"
    root.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.npz").write_bytes(npz_bytes())
    image_folder(outside / "private-images", classes=("PackageKit", "ssh"), per_class=1)
    return {"root": root, "outside": outside, "missing": tmp_path / "no-such-place"}


def test_a_path_outside_the_roots_gets_one_answer_whether_it_exists_or_not(api_on, layout) -> None:
    api = api_on(dataset_roots=[str(layout["root"])])
    existing = refused(register(api, str(layout["outside"] / "secret.npz")), str(layout["outside"]))
    missing = refused(register(api, str(layout["missing"] / "secret.npz")), str(layout["missing"]))
    folder = refused(
        register(api, str(layout["outside"] / "private-images"), format="imagefolder"), "PackageKit"
    )
    etc = refused(register(api, "/etc", format="imagefolder"), "/etc", "PackageKit")
    assert existing == missing == folder == etc
    assert str(layout["root"]) in existing, "the refusal says where datasets may live"
    file_uri = refused(register(api, (layout["outside"] / "secret.npz").as_uri()), str(layout["outside"]))
    assert file_uri == existing
    refused(register(api, "relative/secret.npz"))
    refused(register(api, "http://127.0.0.1/secret.npz"))
    nothing_stored(api)


def test_dot_dot_is_refused_even_when_it_lands_inside(api_on, layout) -> None:
    api = api_on(dataset_roots=[str(layout["root"])])
    (layout["root"] / "inside.npz").write_bytes(npz_bytes())
    escape = f"{layout['root']}/../../elsewhere/secret.npz"
    detail = refused(register(api, escape), "secret")
    assert "'..'" in detail
    refused(register(api, f"{layout['root']}/sub/../inside.npz"))
    nothing_stored(api)


def test_symlinks_that_lead_outside_are_refused(api_on, layout) -> None:
    root, outside = layout["root"], layout["outside"]
    api = api_on(dataset_roots=[str(root)])
    (root / "to-secret.npz").symlink_to(outside / "secret.npz")
    (root / "to-nothing.npz").symlink_to(layout["missing"] / "secret.npz")
    (root / "to-etc").symlink_to("/etc")
    parent_link = root / "linked-parent"
    parent_link.symlink_to(outside)
    to_file = refused(register(api, str(root / "to-secret.npz")), str(outside))
    dangling = refused(register(api, str(root / "to-nothing.npz")), str(layout["missing"]))
    assert to_file == dangling, "a link out is refused the same whether its target exists or not"
    refused(register(api, str(root / "to-etc"), format="imagefolder"), "/etc", "PackageKit")
    refused(register(api, str(parent_link / "secret.npz")), str(outside))

    # inside an image folder: a class folder, or one image, linked to outside
    tree = image_folder(root / "pets")
    (tree / "private").symlink_to(outside / "private-images" / "PackageKit")
    inner = refused(register(api, str(tree), format="imagefolder"), str(outside), "PackageKit")
    (tree / "private").unlink()
    (tree / "cat" / "extra.png").symlink_to(outside / "private-images" / "ssh" / "0.png")
    refused(register(api, str(tree), format="imagefolder"), str(outside))
    (tree / "cat" / "extra.png").unlink()
    (tree / "dog" / "ghost.png").symlink_to(layout["missing"] / "0.png")
    assert refused(register(api, str(tree), format="imagefolder"), str(layout["missing"])) != ""
    assert "symlink" in inner
    nothing_stored(api)

    # a link that stays inside the roots is fine
    (tree / "dog" / "ghost.png").unlink()
    (tree / "dog" / "alias.png").symlink_to(tree / "dog" / "0.png")
    created = register(api, str(tree), format="imagefolder", name="pets")
    assert created.status_code == 201, created.text


def test_inside_the_roots_datasets_register_and_errors_name_only_inside_paths(api_on, layout) -> None:
    root = layout["root"]
    api = api_on(dataset_roots=[str(root)])
    (root / "tiny.npz").write_bytes(npz_bytes())
    created = register(api, str(root / "tiny.npz"))
    assert created.status_code == 201, created.text
    assert created.json()["content_sha256"] is None, "a local dataset is read in place"
    missing = register(api, str(root / "nope.npz"), name="nope")
    assert missing.status_code == 422 and str(root / "nope.npz") in missing.json()["detail"]


def test_another_bucket_or_prefix_is_refused(api_on, s3_server: S3Server, bucket: str) -> None:
    other = s3_server.new_bucket("other")
    s3_server.put(other, "datasets/secret.npz", npz_bytes())
    s3_server.put(bucket, "private/secret.npz", npz_bytes())
    s3_server.put(bucket, "datasets-evil/secret.npz", npz_bytes())
    api = api_on(dataset_roots=[f"s3://{bucket}/datasets"], s3_endpoint_url=s3_server.endpoint_url)
    in_other = refused(register(api, f"s3://{other}/datasets/secret.npz"), other)
    in_none = refused(register(api, "s3://no-such-bucket-here/datasets/secret.npz"), "no-such-bucket")
    assert in_other == in_none
    assert refused(register(api, f"s3://{bucket}/private/secret.npz"), "private/") == in_other
    assert refused(register(api, f"s3://{bucket}/datasets-evil/secret.npz"), "evil") == in_other
    refused(register(api, f"s3://{bucket}/datasets/../private/secret.npz"), "private/")
    nothing_stored(api)


def test_settings_roots_and_store_url() -> None:
    settings = Settings(
        env="test", var_dir="/srv/unlearn", dataset_roots="/data/a, s3://bucket/sets/ ,file:///data/b"
    )
    assert settings.dataset_roots == ["/data/a", "s3://bucket/sets", "/data/b"]
    assert Settings(env="test", var_dir="/srv/unlearn").dataset_roots == ["/srv/unlearn/datasets"]
    assert Settings(env="test", var_dir="/srv/unlearn").artifact_url == "file:///srv/unlearn/artifacts"
    assert Settings(env="test", artifact_url="s3://bucket/prefix/").artifact_url == "s3://bucket/prefix"
    assert Settings(env="test", artifact_url="/abs/store").artifact_url == "file:///abs/store"
    for bad in ("http://example.com/x", "relative/path", "s3://bucket/../x"):
        with pytest.raises(ValueError):
            Settings(env="test", artifact_url=bad)
    production = {
        "env": "production",
        "server_secret": "x" * 40,
        "database_url": "postgresql+psycopg://db/unlearn",
        "signing_key_id": "k1",
        "signing_keys_dir": "/keys",
    }
    with pytest.raises(ValueError, match="UNLEARN_DATASET_ROOTS"):
        Settings(**production)
    assert Settings(**production, dataset_roots="s3://bucket/sets").dataset_roots == ["s3://bucket/sets"]
