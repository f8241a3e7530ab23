"""Issue and check deletion certificates.

The signature is HMAC-SHA256 under `settings.server_secret` over the canonical JSON of the certificate:
keys sorted, no whitespace, UTF-8, and numbers with an integral value written without a fraction (`50`,
not `50.0`), so that a client that re-serialises the JSON (JavaScript does drop `.0`) still verifies.
The certificate's `format` field makes its MAC unusable as any other MAC the server makes with the same
secret (pagination cursors sign a different payload shape).
"""

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.certificates.schemas import (
    CERTIFICATE_FORMAT,
    SIGNATURE_ALGORITHM,
    AuditSummary,
    Certificate,
    ChainPosition,
    ForgottenSet,
    Headline,
    Signature,
    Timestamps,
    VerifyResult,
    VersionRef,
)
from app.deletion.service import get_request
from app.errors import ProblemError
from core.db.audit import AuditEventType, canonical_json
from core.db.models import (
    AuditEvent,
    AuditReport,
    DeletionRequest,
    ForgottenSample,
    ModelVersion,
    RequestKind,
    RequestStatus,
    utcnow,
)

CHAIN_EVENTS = (
    AuditEventType.version_created,
    AuditEventType.report_issued,
    AuditEventType.request_succeeded,
)
MAX_NESTING = 64
HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def ids_sha256(sample_ids: Iterable[str]) -> str:
    """sha256 of the sorted IDs joined by newlines: anyone holding the IDs can recompute it."""
    return hashlib.sha256("\n".join(sorted(sample_ids)).encode("utf-8")).hexdigest()


def _normalised(value: Any, depth: int = 0) -> Any:
    if depth > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _normalised(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalised(item, depth + 1) for item in value]
    return value


def canonical_bytes(certificate: dict[str, Any]) -> bytes:
    """The signed bytes. Raises ValueError for what JSON cannot carry (NaN, Infinity, too deep)."""
    return canonical_json(_normalised(certificate)).encode("utf-8", "surrogatepass")


def sign(secret: str, certificate: dict[str, Any]) -> str:
    return hmac.new(secret.encode("utf-8"), canonical_bytes(certificate), hashlib.sha256).hexdigest()


def verify(secret: str, certificate: dict[str, Any], signature: dict[str, Any]) -> VerifyResult:
    """Valid only if the signature is ours over exactly these fields; the reason says what failed."""
    if signature.get("algorithm") != SIGNATURE_ALGORITHM:
        return VerifyResult(valid=False, reason=f"signature.algorithm must be {SIGNATURE_ALGORITHM!r}")
    value = signature.get("value")
    if not isinstance(value, str) or not HEX_DIGEST.fullmatch(value):
        return VerifyResult(valid=False, reason="signature.value must be 64 hex digits")
    if certificate.get("format") != CERTIFICATE_FORMAT:
        return VerifyResult(valid=False, reason=f"certificate.format must be {CERTIFICATE_FORMAT!r}")
    try:
        expected = sign(secret, certificate)
    except (ValueError, RecursionError) as error:
        return VerifyResult(valid=False, reason=f"certificate is not canonical JSON: {error}")
    if not hmac.compare_digest(expected, value.lower()):
        return VerifyResult(
            valid=False,
            reason="signature does not match: the certificate was altered or not issued by this server",
        )
    return VerifyResult(
        valid=True, reason=f"signature matches certificate of request {certificate.get('request_id')}"
    )


def _version(session: Session, version_id: str | None) -> ModelVersion:
    version = session.get(ModelVersion, version_id) if version_id else None
    if version is None:
        raise ProblemError(500, f"model version {version_id!r} named by a succeeded request is missing")
    return version


def _forgotten_ids(session: Session, request: DeletionRequest) -> list[str]:
    """The tombstones this request wrote: the service's own record of what it forgot."""
    return list(
        session.execute(
            select(ForgottenSample.sample_id).where(ForgottenSample.request_id == request.id)
        ).scalars()
    )


def _headline(result: dict[str, Any] | None) -> Headline | None:
    if not result:
        return None
    return Headline(UA=result["UA"], RA=result["RA"], TA=result["TA"], MIA=result["MIA"])


def _audit_summary(report: AuditReport | None, report_event: AuditEvent | None) -> AuditSummary | None:
    if report is None:
        return None
    content = report.report
    before, after = _headline(content.get("before")), _headline(content.get("after"))
    if before is None or after is None:
        raise ProblemError(500, f"audit report {report.id} lacks its before/after figures")
    disparity = content.get("disparity") or {}
    return AuditSummary(
        before=before,
        after=after,
        reference=_headline(content.get("reference")),
        avg_disparity_after=(disparity.get("after") or {}).get("average"),
        report_sha256=(report_event.data.get("report_sha256") if report_event is not None else None),
    )


def _chain(session: Session, request: DeletionRequest) -> dict[str, AuditEvent]:
    version_created = (
        session.execute(
            select(AuditEvent)
            .where(
                AuditEvent.event == AuditEventType.version_created,
                AuditEvent.version_id == request.result_version_id,
            )
            .order_by(AuditEvent.id)
        )
        .scalars()
        .first()
    )
    own = session.execute(
        select(AuditEvent)
        .where(
            AuditEvent.request_id == request.id,
            AuditEvent.event.in_([AuditEventType.report_issued, AuditEventType.request_succeeded]),
        )
        .order_by(AuditEvent.id)
    ).scalars()
    events = {AuditEventType.version_created.value: version_created} if version_created else {}
    for event in own:
        events.setdefault(event.event, event)
    return events


def build_certificate(session: Session, request_id: str) -> Certificate:
    """The certificate of a succeeded request; 404 for an unknown one, 409 while it has not succeeded."""
    request = get_request(session, request_id)
    if request.status != RequestStatus.succeeded:
        raise ProblemError(
            409,
            f"deletion request {request_id} is {request.status}: a certificate is issued once it succeeded",
            slug="request-not-succeeded",
            title="Request not succeeded",
        )
    new = _version(session, request.result_version_id)
    parent = _version(session, new.parent_id)
    forgotten = _forgotten_ids(session, request)
    report = session.execute(
        select(AuditReport).where(AuditReport.request_id == request.id)
    ).scalar_one_or_none()
    chain = _chain(session, request)
    return Certificate(
        format=CERTIFICATE_FORMAT,
        request_id=request.id,
        external_ref=request.external_ref,
        model_id=request.model_id,
        method=request.method,
        params=request.params,
        forgotten=ForgottenSet(
            kind="class" if request.kind == RequestKind.class_ else "samples",
            count=len(forgotten),
            ids_sha256=ids_sha256(forgotten),
            class_=request.forget_class,
        ),
        parent=VersionRef(version_id=parent.id, sha256=parent.sha256),
        new=VersionRef(version_id=new.id, sha256=new.sha256),
        audit=_audit_summary(report, chain.get(AuditEventType.report_issued.value)),
        timestamps=Timestamps(
            received_at=request.received_at,
            due_at=request.due_at,
            started_at=request.started_at,
            finished_at=request.finished_at,
            issued_at=utcnow(),
        ),
        audit_chain=[
            ChainPosition(event=event.event, event_id=event.id, hash=event.hash)
            for name in CHAIN_EVENTS
            if (event := chain.get(name.value)) is not None
        ],
    )


def signed_certificate(session: Session, secret: str, request_id: str) -> dict[str, Any]:
    """The certificate and its signature as the JSON that is sent (the signature covers exactly it)."""
    certificate = build_certificate(session, request_id).model_dump(mode="json", by_alias=True)
    return {"certificate": certificate, "signature": Signature(value=sign(secret, certificate)).model_dump()}
