from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.audit_log.schemas import Checkpoint
from core.evidence import CERTIFICATE_FORMAT


class ForgottenSet(BaseModel):
    """What was forgotten, without naming it: the certificate may travel where the IDs must not."""

    model_config = ConfigDict(populate_by_name=True)

    kind: Literal["samples", "class"]
    count: int
    ids_sha256: str = Field(
        description="sha256 (hex) of the forgotten sample IDs, sorted and joined by newlines (UTF-8); "
        "the audit report's `provenance.sets.forget_ids_sha256` uses the same rule."
    )
    class_: int | None = Field(default=None, serialization_alias="class")


class VersionRef(BaseModel):
    version_id: str
    sha256: str


class Headline(BaseModel):
    """The four figures of DESIGN section 10, in percent."""

    UA: float
    RA: float
    TA: float
    MIA: float


class AuditSummary(BaseModel):
    before: Headline
    after: Headline
    reference: Headline | None = None
    avg_disparity_after: float | None = Field(
        default=None, description="Avg. Disparity of the new version to the retrained reference, if any."
    )
    report_sha256: str | None = Field(
        default=None, description="The hash of the full JSON report, as the `report.issued` event records it."
    )


class Acceptance(BaseModel):
    """Why the service may certify this run: the acceptance policy and the figures that passed it."""

    policy: dict[str, Any] | None
    test: str | None = Field(description="class-accuracy | membership-gap | per-sample-loss")
    passed: bool
    accepted_by: str = Field(description="policy, or exact retrain (retrained without the forgotten data)")
    figures: dict[str, Any] = Field(description="The figures of the test on the kept model.")
    rungs: list[str] = Field(description="The acceptance ladder climbed: method, escalated, retrain.")


class ParentRetirement(BaseModel):
    """The pre-deletion version still holds the forgotten data: it is retired, its file purged."""

    version_id: str
    retired_at: datetime | None
    purge_after: datetime | None = Field(description="When its checkpoint is (or was) due to be purged.")
    purged_at: datetime | None = Field(description="When its checkpoint file was deleted; null until then.")


class PurgedCopies(BaseModel):
    """What the service had derived from images in its own cache, removed after this deletion."""

    cache_root: str | None
    removed: list[str]


class ChainPosition(BaseModel):
    """An audit-log event this certificate rests on: an exported log slice (GET
    /v1/audit-log/slice?request_id=...) proves offline that it is in the chain, unaltered."""

    event: str
    event_id: int
    hash: str


class Timestamps(BaseModel):
    received_at: datetime
    due_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    issued_at: datetime


class Certificate(BaseModel):
    format: Literal["unlearn-service/deletion-certificate/v2"] = CERTIFICATE_FORMAT
    request_id: str
    external_ref: str | None
    model_id: str
    method: str
    params: dict[str, Any]
    forgotten: ForgottenSet
    parent: VersionRef
    new: VersionRef
    audit: AuditSummary | None = Field(description="Null only if the worker issued no audit report.")
    acceptance: Acceptance | None = Field(description="Null for reports written before acceptance existed.")
    parent_retirement: ParentRetirement
    purged_copies: PurgedCopies | None = Field(description="Null if the purge has not run (yet).")
    timestamps: Timestamps
    audit_chain: list[ChainPosition] = Field(description="version.created, report.issued, request.succeeded")
    checkpoint: Checkpoint = Field(
        description="The signed head of the audit chain this certificate rests on: at or after its events."
    )


class Signature(BaseModel):
    """Ed25519 (`kid` in the published key set) over the canonical JSON of this object without `value`;
    `sha256` and `fields` bind it to the certificate and name an altered field (see `core.evidence`)."""

    algorithm: Literal["EdDSA"]
    kid: str = Field(description="The signing key's id in /.well-known/jwks.json.")
    sha256: str = Field(description="sha256 (hex) of the canonical JSON of `certificate`.")
    fields: dict[str, str] = Field(description="Dotted path of every leaf of `certificate` -> its sha256.")
    value: str = Field(description="Unpadded base64url Ed25519 signature.")


class SignedCertificate(BaseModel):
    certificate: Certificate
    signature: Signature


class VerifyRequest(BaseModel):
    """A certificate exactly as it was received. `certificate` stays untyped: a tampered field must come
    back as `valid: false`, not be coerced or refused before it is checked."""

    model_config = ConfigDict(extra="forbid")

    certificate: dict[str, Any]
    signature: dict[str, Any]


class VerifyResult(BaseModel):
    valid: bool
    reason: str
    field: str | None = Field(default=None, description="What failed (dotted path), when invalid.")
    kid: str | None = Field(default=None, description="The key that signed a valid Ed25519 certificate.")
