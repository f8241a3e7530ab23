"""Datasets: registration bulk-loads the sample table exactly as the loaders see the data; browsing."""

from __future__ import annotations

import numpy as np
from api_helpers import assert_problem, count_rows

from unlearning.catalog import list_samples


def test_register_digits_loads_every_sample_with_its_split(client, keys, digits_dataset, db) -> None:
    assert digits_dataset["num_classes"] == 10 and digits_dataset["class_names"] == [
        str(d) for d in range(10)
    ]
    catalog = list_samples("digits", None, {})
    assert digits_dataset["split_counts"] == catalog.split_counts()
    assert sum(digits_dataset["split_counts"].values()) == 1797 == count_rows(db, "samples")
    reader = keys.headers("models_reader")
    fetched = client.get(f"/v1/datasets/{digits_dataset['id']}", headers=reader)
    assert fetched.status_code == 200 and fetched.json()["id"] == digits_dataset["id"]
    listed = client.get("/v1/datasets", headers=reader).json()
    assert [d["id"] for d in listed["data"]] == [digits_dataset["id"]] and listed["next_cursor"] is None


def test_samples_paginate_by_split(client, admin, digits_dataset) -> None:
    url = f"/v1/datasets/{digits_dataset['id']}/samples"
    expected = [row.sample_id for row in list_samples("digits", None, {}).samples if row.split == "val"]
    seen, cursor = [], None
    while True:
        params = {"split": "val", "limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get(url, params=params, headers=admin).json()
        assert all(item["split"] == "val" for item in page["data"])
        seen += [item["sample_id"] for item in page["data"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == expected
    first = client.get(url, params={"limit": 2}, headers=admin).json()
    assert_problem(
        client.get(url, params={"split": "test", "cursor": first["next_cursor"]}, headers=admin), 400
    )
    assert_problem(client.get(url, params={"split": "holdout"}, headers=admin), 422, "split")
    assert_problem(client.get("/v1/datasets/ds_missing/samples", headers=admin), 404)


def test_bad_dataset_registrations(client, admin, digits_dataset, tmp_path, db) -> None:
    cases = [
        ({"name": "digits", "format": "digits"}, 409, "name"),
        ({"name": "x", "format": "parquet"}, 422, "format"),
        ({"name": "x", "format": "imagefolder"}, 422, "uri"),
        ({"name": "x", "format": "imagefolder", "uri": str(tmp_path / "missing")}, 422, "uri"),
        ({"name": "x", "format": "npz", "uri": "s3://bucket/data.npz"}, 422, "uri"),
        ({"name": "x", "format": "digits", "options": {"seed": "zero"}}, 422, "options.seed"),
        (
            {"name": "x", "format": "digits", "options": {"val_fraction": 0.7, "test_fraction": 0.5}},
            422,
            "options.val_fraction",
        ),
        ({"name": "x", "format": "digits", "options": {"colour": 1}}, 422, "options.colour"),
        ({"name": "", "format": "digits"}, 422, "name"),
        ({"name": "x", "format": "digits", "extra": True}, 422, "extra"),
    ]
    for body, status, field in cases:
        assert_problem(client.post("/v1/datasets", json=body, headers=admin), status, field)
    assert count_rows(db, "datasets") == 1 and count_rows(db, "samples") == 1797


def test_register_npz_and_imagefolder(client, admin, tmp_path, db) -> None:
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        x=np.zeros((5, 4, 4), np.uint8),
        y=np.array([0, 1, 2, 1, 0]),
        sample_id=np.array(["a", "b", "c", "d", "e"]),
        split=np.array(["train", "train", "val", "test", "train"]),
    )
    response = client.post(
        "/v1/datasets", json={"name": "tiny", "format": "npz", "uri": str(path)}, headers=admin
    )
    assert response.status_code == 201, response.text
    assert response.json()["split_counts"] == {"train": 3, "val": 1, "test": 1}
    folder = tmp_path / "images"
    for split, cls, name in [
        ("train", "cat", "1.png"),
        ("train", "cat", "2.png"),
        ("train", "dog", "1.png"),
        ("test", "dog", "9.png"),
    ]:
        (folder / split / cls).mkdir(parents=True, exist_ok=True)
        (folder / split / cls / name).write_bytes(b"not decoded at registration")
    body = {
        "name": "pets",
        "format": "imagefolder",
        "uri": f"file://{folder}",
        "options": {"val_fraction": 0.0},
    }
    response = client.post("/v1/datasets", json=body, headers=admin)
    assert response.status_code == 201, response.text
    assert response.json()["class_names"] == ["cat", "dog"]
    samples = client.get(f"/v1/datasets/{response.json()['id']}/samples", headers=admin).json()["data"]
    assert {(s["sample_id"], s["label"], s["split"]) for s in samples} == {
        ("train/cat/1.png", 0, "train"),
        ("train/cat/2.png", 0, "train"),
        ("train/dog/1.png", 1, "train"),
        ("test/dog/9.png", 1, "test"),
    }
