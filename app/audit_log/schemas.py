"""What the audit-log routes serve: events, signed checkpoints, exported slices and the public key set.
The formats are defined (and checked) in `core.evidence`."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.evidence import CHECKPOINT_FORMAT, SLICE_FORMAT


class AuditEventOut(BaseModel):
    id: int
    created_at: datetime
    event: str
    actor: str | None
    request_id: str | None
    model_id: str | None
    version_id: str | None
    job_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


class ChainVerificationOut(BaseModel):
    ok: bool
    checked: int
    first_bad_id: int | None
    reason: str | None
    last_hash: str | None


class DetachedSignature(BaseModel):
    """Ed25519 over the canonical JSON of this object without `value` (see `core.evidence`)."""

    algorithm: Literal["EdDSA"]
    kid: str = Field(description="The signing key's id in /.well-known/jwks.json.")
    sha256: str = Field(description="sha256 (hex) of the canonical JSON of the signed document.")
    value: str = Field(description="Unpadded base64url Ed25519 signature.")


class Checkpoint(BaseModel):
    """A signed head of the audit chain: event `event_id` had hash `hash` at `signed_at`."""

    format: Literal["unlearn-service/audit-checkpoint/v1"] = CHECKPOINT_FORMAT
    id: str
    event_id: int
    hash: str
    signed_at: str = Field(description="ISO 8601 (UTC, microseconds), exactly as signed.")
    signature: DetachedSignature


class SliceEvent(AuditEventOut):
    """An audit event exactly as it was hashed."""

    created_at: str = Field(description="ISO 8601 (UTC, microseconds): the hashed string.")  # type: ignore[assignment]


class LogSlice(BaseModel):
    """A contiguous run of the chain and the signed checkpoints that fall on it: checked offline by
    `unlearn verify CERTIFICATE --keys JWKS --log SLICE`."""

    format: Literal["unlearn-service/audit-log-slice/v1"] = SLICE_FORMAT
    events: list[SliceEvent]
    checkpoints: list[Checkpoint]


class PublicJWK(BaseModel):
    """An RFC 8037 Ed25519 public key."""

    model_config = ConfigDict(extra="allow")

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    alg: Literal["EdDSA"]
    use: Literal["sig"]
    kid: str
    x: str
    status: Literal["active", "retired", "revoked"]


class RevokedKey(BaseModel):
    model_config = ConfigDict(extra="allow")

    kid: str
    status: Literal["revoked"]


class JWKSet(BaseModel):
    """The keys that sign certificates and checkpoints: `keys` are trusted (one `active`, the rest
    `retired`: they signed earlier certificates); `revoked` keys are not (their signatures fail)."""

    keys: list[PublicJWK]
    revoked: list[RevokedKey]
