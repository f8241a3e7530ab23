from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import SessionDep, SettingsDep
from app.auth import AuditRead
from app.certificates import service
from app.certificates.schemas import SignedCertificate, VerifyRequest, VerifyResult

router = APIRouter(prefix="/v1", tags=["certificates"])


@router.get(
    "/deletion-requests/{request_id}/certificate",
    response_model=SignedCertificate,
    responses={409: {"description": "The request has not succeeded (yet)."}},
)
def get_certificate(
    request_id: str, session: SessionDep, settings: SettingsDep, _: AuditRead
) -> JSONResponse:
    """A signed certificate that the request was carried out: what was forgotten (as a hash), the parent
    and new checkpoints, the audit figures and the audit-log events it rests on. HMAC-SHA256 under the
    server secret over the canonical JSON of `certificate` (sorted keys, no spaces, integral numbers
    without `.0`)."""
    return JSONResponse(service.signed_certificate(session, settings.server_secret, request_id))


@router.post("/certificates/verify", response_model=VerifyResult)
def verify_certificate(body: VerifyRequest, settings: SettingsDep, _: AuditRead) -> VerifyResult:
    """`valid: true` only for a certificate this server signed, unchanged in every field."""
    return service.verify(settings.server_secret, body.certificate, body.signature)
