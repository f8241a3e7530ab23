"""Issue and check deletion certificates.

A certificate (format v2, `core.evidence.CERTIFICATE_FORMAT`) is signed with the service's active
Ed25519 key (`core.signing`): a detached signature naming the key id, the sha256 of the canonical JSON
of the certificate and the digest of every field, so that anyone holding the published key set
(`/.well-known/jwks.json`) can check it offline and be told which field was altered (`unlearn verify`).
It carries the signed audit-log checkpoint it rests on: the earliest one at or after its events, signed
now if there is none.

Certificates of format v1 were signed with HMAC-SHA256 under `settings.server_secret` over the same
canonical JSON (keys sorted, no whitespace, UTF-8, integral numbers without a fraction); only the
service can check those (`verify`, POST /v1/certificates/verify). The certificate's `format` field makes
its MAC unusable as any other MAC the server makes with the same secret (pagination cursors sign a
different payload shape).
"""

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.certificates.schemas import (
    Acceptance,
    AuditSummary,
    Certificate,
    ChainPosition,
    ForgottenSet,
    Headline,
    ParentRetirement,
    PurgedCopies,
    Timestamps,
    VerifyResult,
    VersionRef,
)
from app.deletion.service import get_request
from app.errors import ProblemError
from core.db.audit import AuditEventType
from core.db.checkpoints import checkpoint_document, covering_checkpoint
from core.db.models import (
    AuditCheckpoint,
    AuditEvent,
    AuditReport,
    DeletionRequest,
    ForgottenSample,
    ModelVersion,
    RequestKind,
    RequestStatus,
    utcnow,
)
from core.evidence import (
    CERTIFICATE_FORMAT,
    LEGACY_ALGORITHM,
    LEGACY_CERTIFICATE_FORMAT,
    KeySet,
    canonical_bytes,
    verify_certificate,
)
from core.signing import KeyRing

CHAIN_EVENTS = (
    AuditEventType.version_created,
    AuditEventType.report_issued,
    AuditEventType.request_succeeded,
)
HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def ids_sha256(sample_ids: Iterable[str]) -> str:
    """sha256 of the sorted IDs joined by newlines: anyone holding the IDs can recompute it."""
    return hashlib.sha256("\n".join(sorted(sample_ids)).encode("utf-8")).hexdigest()


def sign(secret: str, certificate: dict[str, Any]) -> str:
    """The HMAC of a v1 certificate (kept to check the certificates issued before v2)."""
    return hmac.new(secret.encode("utf-8"), canonical_bytes(certificate), hashlib.sha256).hexdigest()


def verify_hmac(secret: str, certificate: dict[str, Any], signature: dict[str, Any]) -> VerifyResult:
    """A v1 certificate: valid only if the HMAC is ours over exactly these fields."""
    value = signature.get("value")
    if not isinstance(value, str) or not HEX_DIGEST.fullmatch(value):
        return VerifyResult(
            valid=False, reason="signature.value must be 64 hex digits", field="signature.value"
        )
    if certificate.get("format") != LEGACY_CERTIFICATE_FORMAT:
        return VerifyResult(
            valid=False,
            reason=f"certificate.format must be {LEGACY_CERTIFICATE_FORMAT!r} for an HMAC signature",
            field="certificate.format",
        )
    try:
        expected = sign(secret, certificate)
    except (ValueError, RecursionError) as error:
        return VerifyResult(
            valid=False, reason=f"certificate is not canonical JSON: {error}", field="certificate"
        )
    if not hmac.compare_digest(expected, value.lower()):
        return VerifyResult(
            valid=False,
            reason="signature does not match: the certificate was altered or not issued by this server",
            field="signature",
        )
    return VerifyResult(
        valid=True, reason=f"signature matches certificate of request {certificate.get('request_id')}"
    )


def verify(secret: str, keys: KeySet, certificate: dict[str, Any], signature: dict[str, Any]) -> VerifyResult:
    """Valid only if the signature is ours (a trusted Ed25519 key, or the v1 HMAC under the server
    secret) over exactly these fields; the reason (and `field`) says what failed."""
    if signature.get("algorithm") == LEGACY_ALGORITHM:
        return verify_hmac(secret, certificate, signature)
    verdict = verify_certificate({"certificate": certificate, "signature": signature}, keys)
    return VerifyResult(valid=verdict.valid, reason=verdict.reason, field=verdict.field, kid=verdict.kid)


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


def _acceptance(report: AuditReport | None) -> Acceptance | None:
    section = ((report.report if report is not None else {}).get("provenance") or {}).get("acceptance")
    if not section:
        return None
    kept = (section["rungs"][-1] if section.get("rungs") else {}).get("verdict") or {}
    return Acceptance(
        policy=section.get("policy"),
        test=kept.get("test"),
        passed=bool(section.get("accepted")),
        accepted_by=section.get("accepted_by", "policy"),
        figures=kept.get("figures") or {},
        rungs=[rung["rung"] for rung in section.get("rungs", [])],
    )


def _purged_copies(session: Session, version_id: str) -> PurgedCopies | None:
    event = (
        session.execute(
            select(AuditEvent)
            .where(
                AuditEvent.event == AuditEventType.derived_data_purged, AuditEvent.version_id == version_id
            )
            .order_by(AuditEvent.id)
        )
        .scalars()
        .first()
    )
    if event is None:
        return None
    return PurgedCopies(cache_root=event.data.get("cache_root"), removed=list(event.data.get("removed", [])))


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


def succeeded_request(session: Session, request_id: str) -> DeletionRequest:
    """404 for an unknown request, 409 while it has not succeeded."""
    request = get_request(session, request_id)
    if request.status != RequestStatus.succeeded:
        raise ProblemError(
            409,
            f"deletion request {request_id} is {request.status}: a certificate is issued once it succeeded",
            slug="request-not-succeeded",
            title="Request not succeeded",
        )
    return request


def _resting_on(
    session: Session, keyring: KeyRing, request: DeletionRequest, chain: dict[str, AuditEvent]
) -> tuple[list[ChainPosition], AuditCheckpoint]:
    """The audit-log events a certificate of `request` names (chain order) and the checkpoint that
    covers them (signed now if there is none yet)."""
    positions = [
        ChainPosition(event=event.event, event_id=event.id, hash=event.hash)
        for name in CHAIN_EVENTS
        if (event := chain.get(name.value)) is not None
    ]
    if not positions:
        raise ProblemError(500, f"deletion request {request.id} has none of its audit-log events")
    return positions, covering_checkpoint(session, keyring, max(p.event_id for p in positions))


def certificate_slice_bounds(session: Session, keyring: KeyRing, request_id: str) -> tuple[int, int]:
    """The events a log slice for the certificate of `request_id` spans: from its first event to the
    checkpoint it rests on. The caller commits."""
    request = succeeded_request(session, request_id)
    positions, checkpoint = _resting_on(session, keyring, request, _chain(session, request))
    return min(p.event_id for p in positions), checkpoint.event_id


def build_certificate(session: Session, keyring: KeyRing, request_id: str) -> Certificate:
    """The certificate of a succeeded request; 404 for an unknown one, 409 while it has not succeeded.
    May sign a checkpoint: the caller commits."""
    request = succeeded_request(session, request_id)
    new = _version(session, request.result_version_id)
    parent = _version(session, new.parent_id)
    forgotten = _forgotten_ids(session, request)
    report = session.execute(
        select(AuditReport).where(AuditReport.request_id == request.id)
    ).scalar_one_or_none()
    chain = _chain(session, request)
    positions, checkpoint = _resting_on(session, keyring, request, chain)
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
        acceptance=_acceptance(report),
        parent_retirement=ParentRetirement(
            version_id=parent.id,
            retired_at=parent.retired_at,
            purge_after=parent.purge_after,
            purged_at=parent.purged_at,
        ),
        purged_copies=_purged_copies(session, new.id),
        timestamps=Timestamps(
            received_at=request.received_at,
            due_at=request.due_at,
            started_at=request.started_at,
            finished_at=request.finished_at,
            issued_at=utcnow(),
        ),
        audit_chain=positions,
        checkpoint=checkpoint_document(checkpoint),  # type: ignore[arg-type]
    )


def signed_certificate(session: Session, keyring: KeyRing, request_id: str) -> dict[str, Any]:
    """The certificate and its signature as the JSON that is sent (the signature covers exactly it)."""
    certificate = build_certificate(session, keyring, request_id).model_dump(mode="json", by_alias=True)
    return {"certificate": certificate, "signature": keyring.sign(certificate, fields=True)}
