"""Evidence commands: `unlearn verify` (offline: no database, no server) and `unlearn signing-key create`.

`unlearn verify CERTIFICATE --keys JWKS [--log SLICE]` checks a signed deletion certificate against the
published key set (a file, or the URL of /.well-known/jwks.json) and, given one, an exported audit-log
slice; it prints `valid: ...` (exit 0) or `invalid: FIELD: what failed` (exit 1). The checks are
`core.evidence`'s, the very code the service uses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

MAX_DOCUMENT_BYTES = 256 * 1024 * 1024


def register(app: typer.Typer) -> None:
    """Add the evidence commands to the `unlearn` app."""
    app.command("verify")(verify)
    keys = typer.Typer(no_args_is_help=True, help="Ed25519 keys that sign certificates and checkpoints.")
    keys.command("create")(signing_key_create)
    app.add_typer(keys, name="signing-key")


class Unreadable(Exception):
    """A document could not be read: `what` names it."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.what = what


def read_json(source: str, what: str) -> Any:
    """A JSON document from a file, or from an http(s) URL (the published key set, say)."""
    if source.startswith(("http://", "https://")):
        data = _fetch(source, what)
    else:
        try:
            path = Path(source)
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                raise Unreadable(what, f"{source} is larger than {MAX_DOCUMENT_BYTES} bytes")
            data = path.read_bytes()
        except OSError as error:
            raise Unreadable(what, f"cannot read {source}: {error}") from None
    try:
        return json.loads(data)
    except ValueError as error:
        raise Unreadable(what, f"{source} is not JSON: {error}") from None


def _fetch(url: str, what: str) -> bytes:
    import httpx

    try:
        response = httpx.get(url, timeout=10.0, follow_redirects=True)
    except httpx.HTTPError as error:
        raise Unreadable(what, f"cannot fetch {url}: {error}") from None
    if response.status_code != 200:
        raise Unreadable(what, f"GET {url} answered {response.status_code}")
    return response.content


def verify(
    certificate: Annotated[
        str, typer.Argument(help="The certificate JSON, as GET .../certificate returned it.")
    ],
    keys: Annotated[
        str,
        typer.Option(
            "--keys", help="The published key set: a JWKS file or its URL (/.well-known/jwks.json)."
        ),
    ],
    log: Annotated[
        str | None,
        typer.Option("--log", help="An exported log slice (GET /v1/audit-log/slice?request_id=...)."),
    ] = None,
) -> None:
    """Check a signed deletion certificate offline: valid, or the first thing that fails."""
    from core.evidence import EvidenceInvalid, KeySet, verify_certificate

    try:
        document = read_json(certificate, "certificate")
        key_set = KeySet.from_jwks(read_json(keys, "keys"))
        log_slice = read_json(log, "log") if log is not None else None
    except (Unreadable, EvidenceInvalid) as error:
        typer.echo(f"invalid: {error}")
        raise typer.Exit(1) from None
    verdict = verify_certificate(document, key_set, log_slice)
    typer.echo(f"{'valid' if verdict.valid else 'invalid'}: {verdict.reason}")
    if not verdict.valid:
        raise typer.Exit(1)


def signing_key_create(
    kid: Annotated[str, typer.Option("--kid", help="The new key's id, e.g. 2026-01.")],
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="Default: UNLEARN_SIGNING_KEYS_DIR or var/signing-keys."),
    ] = None,
) -> None:
    """Generate an Ed25519 signing key `<dir>/<kid>.pem` (mode 600) and print its public JWK. Make it
    the signing key with UNLEARN_SIGNING_KEY_ID=<kid>; keep the old keys in the folder (or only their
    public halves, `<kid>.pub.pem`) so that the certificates they signed still verify."""
    from core.evidence import public_jwk
    from core.settings import get_settings
    from core.signing import PRIVATE_SUFFIX, SigningKeyError, check_kid, read_keyring, write_private_key

    directory = directory or get_settings().signing_keys
    try:
        check_kid(kid)
        if (directory / f"{kid}{PRIVATE_SUFFIX}").exists():
            raise SigningKeyError(f"{directory / (kid + PRIVATE_SUFFIX)} exists already")
        path = write_private_key(directory, kid)
        keyring = read_keyring(directory, kid, ())
    except SigningKeyError as error:
        raise typer.BadParameter(str(error)) from None
    typer.echo(f"created {path}; sign with it: UNLEARN_SIGNING_KEY_ID={kid}", err=True)
    typer.echo(json.dumps(public_jwk(kid, keyring.private_key.public_key(), "active")))
