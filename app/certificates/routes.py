"""Signed deletion certificates: what the compliance system files as proof that a request was carried
out, and the public keys that let anyone check them offline."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import SessionDep, SettingsDep
from app.audit_log.schemas import JWKSet
from app.auth import AuditRead
from app.certificates import service
from app.certificates.keys import KeyRingDep
from app.certificates.schemas import SignedCertificate, VerifyRequest, VerifyResult

router = APIRouter(tags=["certificates"])

JWKS_PATH = "/.well-known/jwks.json"


@router.get(
    "/v1/deletion-requests/{request_id}/certificate",
    response_model=SignedCertificate,
    responses={409: {"description": "The request has not succeeded (yet)."}},
)
def get_certificate(request_id: str, session: SessionDep, keyring: KeyRingDep, _: AuditRead) -> JSONResponse:
    """A signed certificate that the request was carried out: what was forgotten (as a hash), the parent
    and new checkpoints, the audit figures, the audit-log events it rests on and the signed checkpoint of
    the chain that covers them. Signed with the service's active Ed25519 key (`signature.kid`, published
    at /.well-known/jwks.json): check it offline with `unlearn verify CERTIFICATE --keys JWKS` (add `--log`
    with GET /v1/audit-log/slice?request_id=... to check its events in the chain too)."""
    document = service.signed_certificate(session, keyring, request_id)
    session.commit()  # the checkpoint it rests on, if it was signed now
    return JSONResponse(document)


@router.post("/v1/certificates/verify", response_model=VerifyResult)
def verify_certificate(
    body: VerifyRequest, settings: SettingsDep, keyring: KeyRingDep, _: AuditRead
) -> VerifyResult:
    """`valid: true` only for a certificate this server signed, unchanged in every field: an Ed25519
    certificate by a key of its key set that is not revoked, or a v1 certificate (HMAC-SHA256 under the
    server secret). `field` names what failed."""
    return service.verify(settings.server_secret, keyring.keys, body.certificate, body.signature)


@router.get(JWKS_PATH, response_model=JWKSet, tags=["keys"])
def jwks(keyring: KeyRingDep) -> JSONResponse:
    """The public keys that sign certificates and audit-log checkpoints (RFC 7517 JWK set of Ed25519
    keys). No API key needed: public keys are public."""
    return JSONResponse(keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})
