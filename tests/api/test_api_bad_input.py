"""The bad-input table: every case is a 4xx problem+json naming the offending field, and writes nothing.

"Nothing" is checked after each case on every table's row count, the artifact store's file listing
(temp files included) and the enqueue calls. The cases cover deletion requests (IDs, class, model,
method, params, caps, callback URL, idempotency, JSON and media type), checkpoint uploads and
pagination cursors. Each case prints an `OUTCOME` line (run with `-s` to collect them).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from api_helpers import DIGITS_SPEC, assert_problem
from safetensors.numpy import save_file
from sqlalchemy import inspect, select, text

from core.storage import local_path

REUSED_KEY = "reused-key-1"


@dataclass
class Context:
    client: Any
    admin: dict[str, str]
    model: Any
    test_ids: list[str]
    forgotten_id: str
    pending_ids: list[str]
    reused_body: dict[str, Any]
    cursor: str
    checkpoint: bytes
    tmp_path: Path
    max_upload_bytes: int

    def ids(self, start: int, count: int) -> list[str]:
        return self.model.train_ids[start : start + count]

    def request(self, body: Any, key: str | None = None) -> Any:
        headers = {**self.admin, "Idempotency-Key": key or uuid.uuid4().hex}
        return self.client.post("/v1/deletion-requests", json=body, headers=headers)

    def raw(self, content: bytes, content_type: str | None) -> Any:
        headers = {**self.admin, **({"Content-Type": content_type} if content_type else {})}
        return self.client.post("/v1/deletion-requests", content=content, headers=headers)

    def upload(self, payload: bytes, dataset_id: str | None = None) -> Any:
        return self.client.post(
            "/v1/models/upload",
            data={"name": "uploaded", "dataset_id": dataset_id or self.model.dataset_id},
            files={"checkpoint": ("model.safetensors", payload, "application/octet-stream")},
            headers=self.admin,
        )

    def safetensors(self, tensors: dict[str, Any], metadata: dict[str, str]) -> bytes:
        path = self.tmp_path / f"{uuid.uuid4().hex}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        return path.read_bytes()

    def listing(self, path: str = "/v1/deletion-requests", **params: Any) -> Any:
        return self.client.get(path, params={"limit": 1, **params}, headers=self.admin)


Send = Callable[[Context], Any]


def body_cases() -> list[tuple[str, Send, int, str]]:
    """Deletion-request bodies: (name, send, status, field)."""

    def req(make: Callable[[Context], dict[str, Any]]) -> Send:
        return lambda ctx: ctx.request(make(ctx))

    def one(ctx: Context) -> dict[str, Any]:
        return {"model_id": ctx.model.model_id, "sample_ids": ctx.ids(0, 1)}

    def cls(ctx: Context, **extra: Any) -> dict[str, Any]:
        return {"model_id": ctx.model.model_id, "class": 1, **extra}

    def ids(*sample_ids: Any) -> Send:
        return req(lambda ctx: {"model_id": ctx.model.model_id, "sample_ids": list(sample_ids)})

    def klass(value: Any) -> Send:
        return req(lambda ctx: {"model_id": ctx.model.model_id, "class": value})

    def params(value: Any) -> Send:
        return req(lambda ctx: cls(ctx, params=value))

    return [
        ("unknown sample id", ids("digits/9999"), 422, "sample_ids"),
        ("val-split id", req(lambda c: {**one(c), "sample_ids": [c.model.val_ids[0]]}), 422, "sample_ids"),
        ("test-split id", req(lambda c: {**one(c), "sample_ids": [c.test_ids[0]]}), 422, "sample_ids"),
        (
            "already forgotten id",
            req(lambda c: {**one(c), "sample_ids": [c.forgotten_id]}),
            422,
            "sample_ids",
        ),
        (
            "id pending in another request",
            req(lambda c: {**one(c), "sample_ids": c.pending_ids}),
            422,
            "sample_ids",
        ),
        ("duplicate ids", req(lambda c: {**one(c), "sample_ids": c.ids(0, 1) * 2}), 422, "sample_ids"),
        ("empty id list", ids(), 422, "sample_ids"),
        ("empty string id", ids(""), 422, "sample_ids.0"),
        ("non-string id (int)", ids(12), 422, "sample_ids.0"),
        ("non-string id (object)", ids({"id": "digits/0001"}), 422, "sample_ids.0"),
        ("NUL in a sample id", ids("digits/00\x0001"), 422, "sample_ids.0"),
        ("sample_ids not a list", req(lambda c: {**one(c), "sample_ids": "digits/0001"}), 422, "sample_ids"),
        (
            "more ids than the cap (51 > 50)",
            req(lambda c: {**one(c), "sample_ids": c.ids(0, 51)}),
            413,
            "sample_ids",
        ),
        ("both sample_ids and class", req(lambda c: {**one(c), "class": 1}), 422, "sample_ids"),
        ("neither sample_ids nor class", req(lambda c: {"model_id": c.model.model_id}), 422, "class"),
        ("class out of range (10 of 10)", klass(10), 422, "class"),
        ("negative class", klass(-1), 422, "class"),
        ("huge class", klass(10**30), 422, "class"),
        ("fractional class", klass(2.5), 422, "class"),
        ("boolean class", klass(True), 422, "class"),
        ("unknown class name", klass("cat"), 422, "class"),
        ("unknown model", req(lambda c: {**one(c), "model_id": "mdl_missing"}), 422, "model_id"),
        ("model_id not a string", req(lambda c: {**cls(c), "model_id": 5}), 422, "model_id"),
        ("NUL in model_id", req(lambda c: {**cls(c), "model_id": "mdl_\x00"}), 422, "model_id"),
        ("unknown method", req(lambda c: {**one(c), "method": "magic"}), 422, "method"),
        ("params not an object", params([1]), 422, "params"),
        ("unknown param key", params({"nonsense": 1}), 422, "params.nonsense"),
        ("unknown nested param key", params({"attacker": {"depth": 3}}), 422, "params.attacker.depth"),
        ("param of the wrong type", params({"iterations": "many"}), 422, "params.iterations"),
        ("negative param", params({"iterations": -5}), 422, "params.iterations"),
        ("absurd param", params({"iterations": 10**9}), 422, "params.iterations"),
        ("param below its minimum", params({"batch_size": 1}), 422, "params.batch_size"),
        ("bad audit reference", params({"reference": "oracle"}), 422, "params.reference"),
        ("allow_retrain not a boolean", params({"allow_retrain": "yes"}), 422, "params.allow_retrain"),
        (
            "one sample for multigan (its forget GAN needs two)",
            req(lambda c: {**one(c), "method": "multigan"}),
            422,
            "sample_ids",
        ),
        ("ftp callback URL", req(lambda c: cls(c, callback_url="ftp://x.example/cb")), 422, "callback_url"),
        (
            "javascript: callback URL",
            req(lambda c: cls(c, callback_url="javascript:alert(1)")),
            422,
            "callback_url",
        ),
        ("callback URL not a URL", req(lambda c: cls(c, callback_url="nope")), 422, "callback_url"),
        ("unknown top-level key", req(lambda c: cls(c, colour="red")), 422, "colour"),
        ("external_ref too long", req(lambda c: cls(c, external_ref="r" * 201)), 422, "external_ref"),
        ("body not an object", lambda c: c.request(["not", "an", "object"]), 422, "body"),
        ("malformed JSON", lambda c: c.raw(b'{"model_id": "m", "class": ', "application/json"), 400, "body"),
        (
            "lone surrogate in a string",
            lambda c: c.raw(
                b'{"model_id": "%s", "class": 1, "external_ref": "\\ud800"}' % c.model.model_id.encode(),
                "application/json",
            ),
            422,
            "external_ref",
        ),
        ("text/plain body", lambda c: c.raw(json.dumps(cls(c)).encode(), "text/plain"), 415, "Content-Type"),
        (
            "form-encoded body",
            lambda c: c.raw(b"model_id=x&class=1", "application/x-www-form-urlencoded"),
            415,
            "Content-Type",
        ),
        (
            "body without a content type",
            lambda c: c.raw(json.dumps(cls(c)).encode(), None),
            415,
            "Content-Type",
        ),
        (
            "Idempotency-Key reused with a different body",
            lambda c: c.request({**c.reused_body, "sample_ids": c.ids(110, 3)}, key=REUSED_KEY),
            422,
            "Idempotency-Key",
        ),
        (
            "malformed Idempotency-Key",
            lambda c: c.request(cls(c), key="bad key with spaces"),
            422,
            "Idempotency-Key",
        ),
    ]


def upload_cases() -> list[tuple[str, Send, int, str]]:
    spec11 = json.dumps({**DIGITS_SPEC, "num_classes": 11})
    zeros = {"w": np.zeros(3, np.float32)}
    return [
        (
            "upload: not safetensors (a zip)",
            lambda c: c.upload(b"PK\x03\x04 not a checkpoint" * 10),
            422,
            "checkpoint",
        ),
        ("upload: truncated", lambda c: c.upload(c.checkpoint[: len(c.checkpoint) // 2]), 422, "checkpoint"),
        ("upload: header only", lambda c: c.upload(c.checkpoint[:8]), 422, "checkpoint"),
        ("upload: empty file", lambda c: c.upload(b""), 422, "checkpoint"),
        (
            "upload: over the size cap",
            lambda c: c.upload(b"\0" * (c.max_upload_bytes + 1)),
            413,
            "checkpoint",
        ),
        (
            "upload: a plain state_dict without the architecture field",
            lambda c: c.upload(c.safetensors(zeros, {"other": "x"})),
            422,
            "architecture",
        ),
        ("upload: spec not JSON", lambda c: c.upload(c.safetensors(zeros, {"spec": "{"})), 422, "checkpoint"),
        (
            "upload: spec for 11 classes on a 10-class dataset",
            lambda c: c.upload(c.safetensors(zeros, {"spec": spec11})),
            422,
            "checkpoint",
        ),
        (
            "upload: tensors do not fit the declared architecture",
            lambda c: c.upload(
                c.safetensors(
                    {"layer.weight": np.zeros((3, 3), np.float32)}, {"spec": json.dumps(DIGITS_SPEC)}
                )
            ),
            422,
            "checkpoint",
        ),
        (
            "upload: unknown dataset",
            lambda c: c.upload(c.checkpoint, dataset_id="ds_missing"),
            404,
            "dataset_id",
        ),
    ]


def cursor_cases() -> list[tuple[str, Send, int, str]]:
    def flipped(cursor: str) -> str:
        payload, signature = cursor.split(".")
        return payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + signature

    return [
        ("cursor: payload tampered", lambda c: c.listing(cursor=flipped(c.cursor)), 400, "cursor"),
        ("cursor: signature tampered", lambda c: c.listing(cursor=c.cursor[:-1] + "x"), 400, "cursor"),
        (
            "cursor: signature removed",
            lambda c: c.listing(cursor=c.cursor.split(".")[0] + "."),
            400,
            "cursor",
        ),
        ("cursor: garbage", lambda c: c.listing(cursor="garbage"), 400, "cursor"),
        ("cursor: other filters", lambda c: c.listing(cursor=c.cursor, status="queued"), 400, "cursor"),
        ("cursor: from another list", lambda c: c.listing("/v1/audit-log", cursor=c.cursor), 400, "cursor"),
        ("list: limit over the maximum", lambda c: c.listing(limit=10**6), 422, "limit"),
    ]


def all_cases() -> list[tuple[str, Send, int, str]]:
    return body_cases() + upload_cases() + cursor_cases()


@pytest.fixture(scope="module")
def mlp_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from models.checkpoint import save_checkpoint
    from models.registry import build_model
    from models.spec import ModelSpec

    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    save_checkpoint(build_model(ModelSpec(**DIGITS_SPEC)), path)
    return path.read_bytes()


def snapshot(database_url: str, artifacts: Path, enqueued: Any) -> dict[str, Any]:
    """Row count of every table, every file (temp files too) under the artifact store, the enqueue calls."""
    from core.db import session_scope

    with session_scope(database_url, readonly=True) as session:
        tables = sorted(
            name for name in inspect(session.get_bind()).get_table_names() if name != "alembic_version"
        )
        counts = {name: session.execute(text(f"SELECT COUNT(*) FROM {name}")).scalar_one() for name in tables}
    files = sorted(str(p.relative_to(artifacts)) for p in artifacts.rglob("*") if p.is_file())
    return {"rows": counts, "files": files, "enqueued": list(enqueued.calls)}


def test_the_table_has_at_least_40_cases() -> None:
    names = [name for name, *_ in all_cases()]
    assert len(names) >= 40 and len(set(names)) == len(names)


def test_bad_input_is_a_4xx_problem_naming_the_field_and_writes_nothing(
    client, admin, ready_model, enqueued, settings, db, mlp_checkpoint, tmp_path
) -> None:
    from core.db import DeletionRequest, ForgottenSample, RequestStatus, Sample, session_scope

    # The "does not fit the architecture" case needs the torch check (run in a child process).
    client.app.state.settings = settings.model_copy(update={"verify_uploaded_weights": True})
    reused_body = {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[100:103]}
    assert (
        client.post(
            "/v1/deletion-requests", json=reused_body, headers={**admin, "Idempotency-Key": REUSED_KEY}
        ).status_code
        == 202
    )
    forgotten = client.post(
        "/v1/deletion-requests",
        json={"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[200:201]},
        headers=admin,
    )
    assert forgotten.status_code == 202
    with session_scope(db) as session:  # what the worker writes on success: the tombstone, the request done
        row = session.get(DeletionRequest, forgotten.json()["id"])
        row.status = RequestStatus.succeeded
        session.add(
            ForgottenSample(
                model_id=ready_model.model_id,
                sample_id=row.sample_ids[0],
                request_id=row.id,
                version_id=ready_model.version_id,
            )
        )
        test_ids = list(
            session.execute(
                select(Sample.sample_id).where(
                    Sample.dataset_id == ready_model.dataset_id, Sample.split == "test"
                )
            ).scalars()
        )
    cursor = client.get("/v1/deletion-requests", params={"limit": 1}, headers=admin).json()["next_cursor"]
    assert cursor
    context = Context(
        client,
        admin,
        ready_model,
        test_ids,
        ready_model.train_ids[200],
        ready_model.train_ids[101:103],
        reused_body,
        cursor,
        mlp_checkpoint,
        tmp_path,
        settings.max_upload_bytes,
    )

    before = snapshot(db, local_path(settings.artifact_url), enqueued)
    for name, send, status, field in all_cases():
        response = send(context)
        assert response.status_code == status, (name, response.text)
        body = assert_problem(response, status, field)
        assert snapshot(db, local_path(settings.artifact_url), enqueued) == before, name
        named = sorted({item["field"] for item in body.get("errors", [])})
        assert not any("[" in item or item.endswith((".int", ".str")) for item in named), (name, named)
        print(f"OUTCOME bad-input | {name} | {response.status_code} | {', '.join(named)} | nothing written")
