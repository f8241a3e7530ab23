"""The artifact store on file:// and on s3:// (a real S3 protocol server): write, read, stream, sha256,
download checked against it, delete, presign; a failed write leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from s3_server import S3Server

from core.storage import ArtifactStore, ObjectAltered, ObjectMissing, S3Options, local_path
from core.storage.urls import BadLocation

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # more than one read chunk
"""Random bytes: a checkpoint stand-in spanning several stream chunks."""


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    staging = tmp_path / "cache"
    if request.param == "file":
        return ArtifactStore((tmp_path / "artifacts").as_uri(), s3=S3Options(), staging_root=staging)
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = server.new_bucket()
    options = S3Options(endpoint_url=server.endpoint_url, region="us-east-1")
    return ArtifactStore(f"s3://{bucket}/artifacts", s3=options, staging_root=staging)


def stored_keys(store: ArtifactStore, s3_server: Any = None) -> list[str]:
    """Every object under the store's root (temporary files of a local store included)."""
    if store.is_local:
        root = local_path(store.root_url)
        return (
            sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
        )
    bucket, _, prefix = store.root_url.removeprefix("s3://").partition("/")
    return [key.removeprefix(prefix + "/") for key in s3_server.keys(bucket, prefix)]


def test_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "model.safetensors"
    source.write_bytes(PAYLOAD)
    expected = hashlib.sha256(PAYLOAD).hexdigest()

    stored = store.put_file("models/mdl_1/job-a1.safetensors", source)
    assert stored.url == store.url_for("models/mdl_1/job-a1.safetensors")
    assert stored.url.startswith(store.root_url + "/")
    assert (stored.sha256, stored.size_bytes) == (expected, len(PAYLOAD))
    assert store.size(stored.url) == len(PAYLOAD)

    chunks = list(store.stream(stored.url))
    assert len(chunks) > 1 and b"".join(chunks) == PAYLOAD
    assert store.read_bytes(stored.url) == PAYLOAD
    verified = store.verified_stream(stored.url, sha256=expected, size_bytes=len(PAYLOAD))
    assert b"".join(verified) == PAYLOAD

    target = tmp_path / "downloads" / "copy.safetensors"
    assert store.download(stored.url, target, sha256=expected).sha256 == expected
    assert target.read_bytes() == PAYLOAD

    with store.local_copy(stored.url, sha256=expected) as copy:
        assert copy.read_bytes() == PAYLOAD
        kept = copy
    assert kept.exists() == store.is_local, "a downloaded copy is removed once used; a local file stays"

    page = store.put_bytes("reports/mdl_1/req-job-a1.html", b"<html>report</html>")
    assert store.read_bytes(page.url) == b"<html>report</html>"
    assert page.sha256 == hashlib.sha256(b"<html>report</html>").hexdigest()

    store.delete(stored.url)
    store.delete(stored.url)  # absent: no error
    assert store.size(stored.url) is None
    with pytest.raises(ObjectMissing):
        store.read_bytes(stored.url)
    with pytest.raises(ObjectMissing), store.local_copy(stored.url, sha256=expected):
        pass


def test_an_altered_object_is_never_taken_for_the_recorded_one(store: ArtifactStore, tmp_path: Path) -> None:
    stored = store.put_bytes("models/m/v.safetensors", PAYLOAD)
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(ObjectAltered):
        b"".join(store.verified_stream(stored.url, sha256=wrong, size_bytes=len(PAYLOAD)))
    with pytest.raises(ObjectAltered):
        b"".join(store.verified_stream(stored.url, sha256=stored.sha256, size_bytes=len(PAYLOAD) - 1))
    target = tmp_path / "copy"
    with pytest.raises(ObjectAltered):
        store.download(stored.url, target, sha256=wrong)
    assert not target.exists()
    with pytest.raises(ObjectAltered), store.local_copy(stored.url, sha256=wrong):
        pass
    assert not list((tmp_path / "cache").rglob("*.safetensors")), "no staged copy is left"


def test_a_failed_write_leaves_nothing(store: ArtifactStore, request: pytest.FixtureRequest) -> None:
    def broken() -> Iterator[bytes]:
        yield PAYLOAD[:1000]
        raise OSError("the source went away")

    with pytest.raises(OSError, match="went away"):
        store.put_chunks("models/m/broken.safetensors", broken())
    server = request.getfixturevalue("s3_server") if not store.is_local else None
    assert stored_keys(store, server) == []
    assert store.size(store.url_for("models/m/broken.safetensors")) is None


def test_presigned_urls_serve_s3_objects_only(store: ArtifactStore) -> None:
    stored = store.put_bytes("models/m/v.safetensors", PAYLOAD)
    presigned = store.presign(stored.url, 60)
    if store.is_local:
        assert presigned is None, "a file:// store has no presigned URLs: the API streams"
        return
    assert presigned is not None and presigned.startswith("http://127.0.0.1:")
    assert store.presign(stored.url, 0) is None
    response = httpx.get(presigned, timeout=30)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == stored.sha256
    assert "Signature=" in presigned and "Expires=" in presigned


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", ""])
def test_keys_stay_under_the_root(store: ArtifactStore, key: str) -> None:
    with pytest.raises(BadLocation):
        store.url_for(key)
