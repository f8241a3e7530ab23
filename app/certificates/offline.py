"""What the HTML audit page says about the request's certificate: the key that signs it and the three
commands that verify it offline (the same as in README.md).

The page itself is rendered by the worker (`unlearning.audit.html`, which knows nothing of certificates);
the API adds this section when it serves the page: `audit_page_with_verification`.
"""

from html import escape

from core.settings import Settings
from core.signing import keyring_for

SECTION_ID = "offline-verification"


def offline_commands(base_url: str, request_id: str) -> list[str]:
    """Fetch the certificate and its log slice (API key with audit:read), then verify with no server."""
    base = base_url.rstrip("/")
    auth = '-H "Authorization: Bearer $UNLEARN_API_KEY"'
    return [
        f"curl -s {auth} {base}/v1/deletion-requests/{request_id}/certificate -o certificate.json",
        f'curl -s {auth} "{base}/v1/audit-log/slice?request_id={request_id}" -o log-slice.json',
        f"unlearn verify certificate.json --keys {base}/.well-known/jwks.json --log log-slice.json",
    ]


def verification_section(request_id: str, kid: str, base_url: str) -> str:
    """An HTML section: the signing key id and the offline verification."""
    jwks = f"{base_url.rstrip('/')}/.well-known/jwks.json"
    commands = "\n".join(escape(command) for command in offline_commands(base_url, request_id))
    return (
        f'<section id="{SECTION_ID}">\n'
        "<h2>Verify the deletion certificate offline</h2>\n"
        f'<p>The certificate of this request is signed with the Ed25519 key <code class="kid">{escape(kid)}'
        f'</code>, published with the service\'s other keys at <a href="{escape(jwks)}">{escape(jwks)}</a>. '
        "It names the audit-log events it rests on and carries a signed checkpoint of the log. Anyone can "
        "check it without the service's database and without taking the service's word for it:</p>\n"
        f"<pre>{commands}</pre>\n"
        "<p><code>unlearn verify</code> prints <code>valid</code>, or <code>invalid</code> and the first "
        "field that fails. The key set may also be a file kept from earlier: a retired key still verifies "
        "the certificates it signed, a revoked one does not.</p>\n"
        "</section>\n"
    )


def with_verification_section(page: str, *, request_id: str, kid: str, base_url: str) -> str:
    """`page` with the section inserted before `</body>` (appended when there is none)."""
    section = verification_section(request_id, kid, base_url)
    end = page.lower().rfind("</body>")
    return page[:end] + section + page[end:] if end >= 0 else page + section


def audit_page_with_verification(page: str, settings: Settings, request_id: str, base_url: str) -> str:
    """The stored HTML audit report of `request_id` (`page`), with the offline verification of its
    certificate."""
    kid = keyring_for(settings).active_kid
    return with_verification_section(page, request_id=request_id, kid=kid, base_url=base_url)
