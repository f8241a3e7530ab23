"""Shared by the evidence tests: a synthetic audit report and a stand-in for the worker's success write.

`succeed_request` writes what `core.jobs.commit.commit_unlearn_success` writes for one request (a new
version, its tombstones, the report, the audit events), with the app's own DB primitives, so these tests
do not depend on a trained model.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load_by_path import TESTS, load_module
from sqlalchemy import select

from core import lifecycle
from core.db import (
    AuditEventType,
    AuditReport,
    DeletionRequest,
    ForgottenSample,
    Job,
    JobKind,
    JobStatus,
    Model,
    RequestKind,
    RequestStatus,
    Sample,
    Split,
    append_audit_event,
    session_scope,
    utcnow,
)


def _audit_conftest() -> Any:
    return load_module("unlearn_audit_fixtures", TESTS / "audit" / "conftest.py")


def synthetic_report(*, with_reference: bool = True, provenance: dict[str, Any] | None = None) -> Any:
    """An `AuditReport` on synthetic softmax outputs: forget memorised before, held-out-like after."""
    from unlearning.audit import AuditReport as Report
    from unlearning.audit import metrics_from_probs

    make = _audit_conftest().synthetic_audit_probs
    before = metrics_from_probs(make(forget_margin=6.0, seed=1))
    after = metrics_from_probs(make(forget_margin=2.0, seed=1))
    reference = metrics_from_probs(make(forget_margin=1.8, seed=2)) if with_reference else None
    return Report(before=before, after=after, reference=reference, provenance=provenance or {"method": "dau"})


def report_sha256(report: dict[str, Any]) -> str:
    """As the worker records it in the `report.issued` event."""
    return hashlib.sha256(json.dumps(report, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Succeeded:
    request_id: str
    version_id: str
    sha256: str
    forgotten: list[str]
    report: dict[str, Any]


def succeed_request(
    url: str, artifacts: Path, request_id: str, report: dict[str, Any], *, html_uri: str | None = None
) -> Succeeded:
    """Mark a queued request succeeded the way the worker does, with an opaque new checkpoint."""
    with session_scope(url) as session:
        request = session.get(DeletionRequest, request_id)
        assert request is not None and request.status == RequestStatus.queued
        model = session.get(Model, request.model_id)
        assert model is not None and model.head_version_id is not None
        if request.kind == RequestKind.class_:
            forgotten = list(
                session.execute(
                    select(Sample.sample_id).where(
                        Sample.dataset_id == model.dataset_id,
                        Sample.split == Split.train,
                        Sample.label == request.forget_class,
                    )
                ).scalars()
            )
        else:
            forgotten = list(request.sample_ids or [])
        now = utcnow()
        job = Job(
            model_id=model.id,
            kind=JobKind.unlearn,
            status=JobStatus.succeeded,
            request_ids=[request.id],
            attempts=1,
            started_at=now,
            finished_at=now,
        )
        session.add(job)
        session.flush()
        payload = os.urandom(2048) + b"unlearned"
        path = artifacts / "models" / model.id / f"{job.id}-a1.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        sha = hashlib.sha256(payload).hexdigest()
        version = lifecycle.version_created(
            session,
            model,
            checkpoint_uri=str(path),
            sha256=sha,
            size_bytes=len(payload),
            method=request.method,
            params=request.params,
            parent_id=model.head_version_id,
            forgotten_count=len(forgotten),
            job_id=job.id,
            actor="worker-test",
        )
        session.add_all(
            ForgottenSample(model_id=model.id, sample_id=s, request_id=request.id, version_id=version.id)
            for s in forgotten
        )
        request.status = RequestStatus.succeeded
        request.progress = 1.0
        request.stage = "done"
        request.started_at = now
        request.finished_at = now
        request.job_id = job.id
        request.result_version_id = version.id
        session.add(
            AuditReport(request_id=request.id, version_id=version.id, report=report, html_uri=html_uri)
        )
        session.flush()
        for event, data in (
            (AuditEventType.report_issued, {"report_sha256": report_sha256(report)}),
            (AuditEventType.request_succeeded, {"forgotten": len(forgotten)}),
        ):
            append_audit_event(
                session,
                event,
                actor="worker-test",
                request_id=request.id,
                model_id=model.id,
                version_id=version.id,
                job_id=job.id,
                data=data,
            )
        return Succeeded(request.id, version.id, sha, forgotten, report)


def tampered(value: Any) -> Any:
    """Another value of the same kind (a string keeps its length; None and containers become "x")."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 0.5
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1") if value else "x"
    return "x"
