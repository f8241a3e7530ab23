"""The service's signing keys: which Ed25519 key signs now, and the key set it publishes.

Configuration (`core.settings`): `signing_keys_dir` holds `<kid>.pem` (a PKCS#8 Ed25519 private key) and
`<kid>.pub.pem` (the public half of a retired key whose private half was taken away); `signing_key_id`
names the key that signs; `revoked_signing_key_ids` lists kids that are no longer trusted. Every key in
the folder is published (`/.well-known/jwks.json`): the active one as `active`, the others as `retired`
(old certificates still verify), revoked ones apart under `revoked` (their certificates no longer do).
Rotation: add `<new>.pem`, set UNLEARN_SIGNING_KEY_ID=<new>, restart.

On the embedded default (no `signing_key_id`) the key `dev` is generated on first use under
`var_dir/signing-keys` (mode 600); production settings refuse to start without a configured key.
No database here: formats and checks are in `core.evidence`.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from core.evidence import KID_PATTERN, KeySet, raw_public_key, sign_detached
from core.settings import Settings

DEV_KEY_ID = "dev"
PRIVATE_SUFFIX = ".pem"
PUBLIC_SUFFIX = ".pub.pem"


class SigningKeyError(RuntimeError):
    """The configured keys cannot be used (missing, unreadable, not Ed25519, inconsistent)."""


@dataclass(frozen=True)
class KeyRing:
    """The active private key and the published key set."""

    active_kid: str
    private_key: Ed25519PrivateKey
    keys: KeySet

    def sign(self, content: dict[str, Any], *, fields: bool = False) -> dict[str, Any]:
        """The detached signature of `content` (`core.evidence.sign_detached`) under the active key."""
        return sign_detached(content, self.active_kid, self.private_key, fields=fields)

    def jwks(self) -> dict[str, Any]:
        return self.keys.to_jwks()


def check_kid(kid: str) -> str:
    if not KID_PATTERN.fullmatch(kid) or kid.endswith(".pub"):
        raise SigningKeyError(f"key id {kid!r}: use 1-64 of A-Z a-z 0-9 . _ - (not ending in .pub)")
    return kid


def write_private_key(directory: Path, kid: str) -> Path:
    """Generate an Ed25519 key as `<directory>/<kid>.pem`, mode 600; never replaces an existing file
    (a concurrent creator's key wins and is kept)."""
    check_kid(kid)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{kid}{PRIVATE_SUFFIX}"
    pem = Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=f".{kid}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, 0o600)
        os.write(descriptor, pem)
        os.fsync(descriptor)
        os.close(descriptor)
        os.link(temporary, target)  # atomic, and fails if the key exists
    except FileExistsError:
        pass
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def _read_key(path: Path) -> Ed25519PrivateKey | Ed25519PublicKey:
    try:
        data = path.read_bytes()
        key: Any = (
            load_pem_public_key(data)
            if path.name.endswith(PUBLIC_SUFFIX)
            else load_pem_private_key(data, password=None)
        )
    except (OSError, ValueError, TypeError) as error:
        raise SigningKeyError(f"signing key {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
    return key  # type: ignore[no-any-return]


def _kid_of(path: Path) -> str:
    suffix = PUBLIC_SUFFIX if path.name.endswith(PUBLIC_SUFFIX) else PRIVATE_SUFFIX
    return path.name[: -len(suffix)]


def read_keyring(directory: Path, active: str, revoked: tuple[str, ...]) -> KeyRing:
    """The key ring from the files in `directory` (see the module docstring)."""
    private: dict[str, Ed25519PrivateKey] = {}
    public: dict[str, Ed25519PublicKey] = {}
    paths = sorted(directory.glob(f"*{PRIVATE_SUFFIX}")) if directory.is_dir() else []
    for path in paths:
        kid = check_kid(_kid_of(path))
        key = _read_key(path)
        half = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
        if kid in public and raw_public_key(public[kid]) != raw_public_key(half):
            raise SigningKeyError(f"{kid}{PRIVATE_SUFFIX} and {kid}{PUBLIC_SUFFIX} in {directory} differ")
        public[kid] = half
        if isinstance(key, Ed25519PrivateKey):
            private[kid] = key
    if active not in private:
        raise SigningKeyError(
            f"no private key {active}{PRIVATE_SUFFIX} in {directory} for signing_key_id {active!r}"
        )
    if active in revoked:
        raise SigningKeyError(f"the signing key {active!r} is listed as revoked")
    usable = {kid: key for kid, key in public.items() if kid not in revoked}
    statuses = {kid: "active" if kid == active else "retired" for kid in usable}
    keys = KeySet(usable, statuses, {kid: public.get(kid) for kid in revoked})
    return KeyRing(active, private[active], keys)


@lru_cache(maxsize=16)
def _cached(directory: Path, active: str, revoked: tuple[str, ...], _version: tuple[Any, ...]) -> KeyRing:
    return read_keyring(directory, active, revoked)


def keyring_for(settings: Settings) -> KeyRing:
    """The settings' key ring, read once per change of the key folder; on the embedded default (no
    signing_key_id) the `dev` key is generated on first use."""
    directory = settings.signing_keys
    active = settings.signing_key_id
    if not active:
        if settings.env == "production":
            raise SigningKeyError("UNLEARN_SIGNING_KEY_ID is required when UNLEARN_ENV=production")
        active = DEV_KEY_ID
        if not (directory / f"{active}{PRIVATE_SUFFIX}").exists():
            write_private_key(directory, active)
    try:
        stat = directory.stat()
        version: tuple[Any, ...] = (stat.st_mtime_ns, stat.st_ino)
    except OSError:
        version = ()
    return _cached(directory, active, tuple(sorted(set(settings.revoked_signing_key_ids))), version)
