"""Evidence anyone can check offline: signed deletion certificates, signed audit-log checkpoints and
exported slices of the audit log. The formats and the ONE implementation of their checks.

Pure: no database, no web framework (the server, `unlearn verify` and the tests all use this module; the
command line needs neither a database nor the server). Only `cryptography` (Ed25519) and the standard
library.

Canonical JSON: keys sorted, no whitespace, UTF-8, NaN refused. Signed documents are additionally
normalised so that a number with an integral value is written without a fraction (`50`, not `50.0`):
a client that re-serialises the JSON (JavaScript drops `.0`, reorders keys) still verifies.

Detached signature (certificates and checkpoints), an object next to the signed content:

    {"algorithm": "EdDSA", "kid": KEY_ID, "sha256": HEX, ["fields": {PATH: HEX, ...},] "value": B64URL}

`sha256` is the digest of the content's canonical bytes; `fields` (certificates only) maps every leaf of
the content (dotted path, `audit.after.UA`, `audit_chain.0.hash`; an empty object or list is a leaf) to the
digest of that leaf's canonical bytes, so a verifier can name the field that was altered. `value` is the
unpadded base64url Ed25519 signature of the canonical bytes of the signature object without `value`,
under the key `kid` of the published key set (a JWK set: RFC 7517/8037 OKP Ed25519 keys, each with a
`status` of `active` or `retired`; revoked keys are listed apart, under `revoked`).

Audit events hash as `core.db.audit` chains them: `hash = sha256(prev_hash || canonical JSON of the event
without id and hash)` (here without the integral-number rule: the stored bytes are what was hashed).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

CERTIFICATE_FORMAT: Final = "unlearn-service/deletion-certificate/v2"
LEGACY_CERTIFICATE_FORMAT: Final = "unlearn-service/deletion-certificate/v1"
CHECKPOINT_FORMAT: Final = "unlearn-service/audit-checkpoint/v1"
SLICE_FORMAT: Final = "unlearn-service/audit-log-slice/v1"
ALGORITHM: Final = "EdDSA"
LEGACY_ALGORITHM: Final = "HMAC-SHA256"
GENESIS_HASH: Final = "0" * 64
MAX_NESTING: Final = 64
EVENT_FIELDS: Final = (
    "created_at",
    "event",
    "actor",
    "request_id",
    "model_id",
    "version_id",
    "job_id",
    "data",
    "prev_hash",
)
"""The hashed content of an audit event: every column but `id` and `hash`."""
KEY_STATUSES: Final = ("active", "retired")
KID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


# --- canonical bytes -------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the string that is hashed."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def normalised(value: Any, depth: int = 0) -> Any:
    """Integral floats as ints, all the way down. Raises ValueError past MAX_NESTING levels."""
    if depth > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: normalised(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [normalised(item, depth + 1) for item in value]
    return value


def canonical_bytes(value: Any) -> bytes:
    """The signed bytes of a document. Raises ValueError for what JSON cannot carry (NaN, too deep)."""
    return canonical_json(normalised(value)).encode("utf-8", "surrogatepass")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def event_hash(payload: Mapping[str, Any]) -> str:
    """The chain hash of an audit event from its hashed content (`EVENT_FIELDS`)."""
    content = payload["prev_hash"] + canonical_json({name: payload[name] for name in EVENT_FIELDS})
    return sha256_hex(content.encode("utf-8", "surrogatepass"))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Unpadded base64url; raises ValueError on anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as error:
        raise ValueError(f"not unpadded base64url: {error}") from None
    if b64url(data) != text:  # one encoding per value: unused bits must be zero
        raise ValueError("not canonical base64url")
    return data


def leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf, keys in sorted order; an empty object or list is a leaf."""
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from leaves(value[key], (*path, str(key)))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaves(item, (*path, str(index)))
    else:
        yield ".".join(path), value


def field_digests(content: dict[str, Any]) -> dict[str, str]:
    return {path: sha256_hex(canonical_bytes(value)) for path, value in leaves(content)}


# --- failures --------------------------------------------------------------------------------------


class EvidenceInvalid(Exception):
    """A check failed: `field` names what failed (a dotted path into the checked documents)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def fail(field: str, message: str) -> NoReturn:
    raise EvidenceInvalid(field, message)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(where, f"must be a JSON object, not {type(value).__name__}")
    return value


# --- keys ------------------------------------------------------------------------------------------


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_jwk(kid: str, key: Ed25519PublicKey, status: str) -> dict[str, Any]:
    """An RFC 8037 OKP JWK with the key's `status` (active | retired | revoked)."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": ALGORITHM,
        "use": "sig",
        "kid": kid,
        "x": b64url(raw_public_key(key)),
        "status": status,
    }


def _parse_jwk(jwk: Any, where: str) -> tuple[str, Ed25519PublicKey]:
    jwk = _object(jwk, where)
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        fail(f"{where}.kid", "must be a non-empty string")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        fail(where, f"key {kid!r} is not an Ed25519 key (kty OKP, crv Ed25519)")
    try:
        raw = b64url_decode(str(jwk.get("x", "")))
        if len(raw) != 32:
            raise ValueError(f"{len(raw)} bytes, not 32")
        return kid, Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as error:
        fail(f"{where}.x", f"key {kid!r}: not an Ed25519 public key ({error})")


@dataclass(frozen=True)
class KeySet:
    """Published public keys: usable ones (`active` or `retired`) by kid, and the revoked kids."""

    keys: Mapping[str, Ed25519PublicKey]
    statuses: Mapping[str, str]
    revoked: Mapping[str, Ed25519PublicKey | None] = field(default_factory=dict)

    @classmethod
    def from_jwks(cls, document: Any, where: str = "keys") -> KeySet:
        """Read a JWK set as `/.well-known/jwks.json` serves it."""
        document = _object(document, where)
        entries = document.get("keys")
        if not isinstance(entries, list):
            fail(f"{where}.keys", "must be a list of JWKs")
        keys: dict[str, Ed25519PublicKey] = {}
        statuses: dict[str, str] = {}
        for index, jwk in enumerate(entries):
            kid, key = _parse_jwk(jwk, f"{where}.keys.{index}")
            if kid in keys:
                fail(f"{where}.keys.{index}.kid", f"key id {kid!r} is listed twice")
            keys[kid], statuses[kid] = key, str(jwk.get("status", "active"))
        revoked: dict[str, Ed25519PublicKey | None] = {}
        listed = document.get("revoked", [])
        if not isinstance(listed, list):
            fail(f"{where}.revoked", "must be a list of JWKs")
        for index, entry in enumerate(listed):
            entry = _object(entry, f"{where}.revoked.{index}")
            kid = entry.get("kid")
            if not isinstance(kid, str) or not kid:
                fail(f"{where}.revoked.{index}.kid", "must be a non-empty string")
            revoked[kid] = _parse_jwk(entry, f"{where}.revoked.{index}")[1] if "x" in entry else None
        for kid in set(keys) & set(revoked):  # a key listed as revoked is revoked, wherever else it is
            del keys[kid], statuses[kid]
        return cls(keys, statuses, revoked)

    def to_jwks(self) -> dict[str, Any]:
        revoked = [
            public_jwk(kid, key, "revoked") if key is not None else {"kid": kid, "status": "revoked"}
            for kid, key in sorted(self.revoked.items())
        ]
        ordered = sorted(self.keys, key=lambda kid: (self.statuses[kid] != "active", kid))
        return {
            "keys": [public_jwk(kid, self.keys[kid], self.statuses[kid]) for kid in ordered],
            "revoked": revoked,
        }

    def key(self, kid: Any, where: str) -> Ed25519PublicKey:
        """The usable key `kid`, or a failure naming `where` (revoked, unknown)."""
        if not isinstance(kid, str) or not kid:
            fail(where, "must name the signing key (a non-empty string)")
        if kid in self.revoked:
            fail(where, f"signed with key {kid!r}, which is revoked: its signatures are no longer trusted")
        if kid not in self.keys:
            fail(where, f"signed with key {kid!r}, which is not in the key set ({sorted(self.keys)})")
        return self.keys[kid]


# --- detached signatures ---------------------------------------------------------------------------


def sign_detached(
    content: dict[str, Any], kid: str, private_key: Ed25519PrivateKey, *, fields: bool = False
) -> dict[str, Any]:
    """The signature object of `content` under `kid` (see the module docstring)."""
    unsigned: dict[str, Any] = {
        "algorithm": ALGORITHM,
        "kid": kid,
        "sha256": sha256_hex(canonical_bytes(content)),
    }
    if fields:
        unsigned["fields"] = field_digests(content)
    return {**unsigned, "value": b64url(private_key.sign(canonical_bytes(unsigned)))}


def _check_signature(signature: Any, keys: KeySet, where: str) -> dict[str, Any]:
    """The signature object is intact and made by a trusted key; returns it."""
    signature = _object(signature, where)
    algorithm = signature.get("algorithm")
    if algorithm == LEGACY_ALGORITHM:
        fail(
            f"{where}.algorithm",
            "an HMAC-SHA256 (v1) certificate can only be checked by the service that holds the secret: "
            "POST it to /v1/certificates/verify",
        )
    if algorithm != ALGORITHM:
        fail(f"{where}.algorithm", f"must be {ALGORITHM!r}, not {algorithm!r}")
    kid = signature.get("kid")
    key = keys.key(kid, f"{where}.kid")
    value = signature.get("value")
    try:
        raw = b64url_decode(value if isinstance(value, str) else "-")
        if len(raw) != 64:
            raise ValueError(f"{len(raw)} bytes, not 64")
    except ValueError as error:
        fail(f"{where}.value", f"not an Ed25519 signature ({error})")
    unsigned = {name: item for name, item in signature.items() if name != "value"}
    try:
        key.verify(raw, canonical_bytes(unsigned))
    except (InvalidSignature, ValueError, RecursionError):
        fail(where, f"does not match: the signature was altered or not made with key {kid!r}")
    return signature


def _check_content(content: dict[str, Any], signature: dict[str, Any], where: str, what: str) -> None:
    """The content is what the (verified) signature covers; names the first altered field if it can."""
    try:
        whole = sha256_hex(canonical_bytes(content))
    except (ValueError, RecursionError) as error:
        fail(what, f"is not canonical JSON: {error}")
    digests = signature.get("fields")
    if isinstance(digests, dict):
        seen = set()
        for path, value in leaves(content):
            seen.add(path)
            named = f"{what}.{path}" if path else what
            if path not in digests:
                fail(named, "was added: the signature does not cover this field")
            if digests[path] != sha256_hex(canonical_bytes(value)):
                fail(named, "was altered: it is not the signed value")
        for path in digests:
            if path not in seen:
                fail(f"{what}.{path}", "is missing: the signature covers a field the document lacks")
    if signature.get("sha256") != whole:
        fail(what, f"was altered: its canonical JSON is not what {where} covers")


# --- checkpoints -----------------------------------------------------------------------------------


def checkpoint_content(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What a checkpoint's signature covers: the document without `signature`."""
    return {name: value for name, value in checkpoint.items() if name != "signature"}


def verify_checkpoint(checkpoint: Any, keys: KeySet, where: str = "checkpoint") -> dict[str, Any]:
    """A signed head of the audit chain, intact and signed by a trusted key; returns it."""
    checkpoint = _object(checkpoint, where)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        fail(f"{where}.format", f"must be {CHECKPOINT_FORMAT!r}")
    for name, kind in (("event_id", int), ("hash", str), ("signed_at", str), ("id", str)):
        if not isinstance(checkpoint.get(name), kind) or isinstance(checkpoint.get(name), bool):
            fail(f"{where}.{name}", f"must be a {kind.__name__}")
    signature = _check_signature(checkpoint.get("signature"), keys, f"{where}.signature")
    _check_content(checkpoint_content(checkpoint), signature, f"{where}.signature", where)
    return checkpoint


# --- log slices ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceSummary:
    first_id: int
    last_id: int
    events: int
    anchors: list[str]
    """Ids of the signed checkpoints the slice is tied to."""


def _check_event(event: Any, where: str) -> dict[str, Any]:
    event = _object(event, where)
    if not isinstance(event.get("id"), int) or isinstance(event.get("id"), bool):
        fail(f"{where}.id", "must be an integer")
    for name in (*EVENT_FIELDS, "hash"):
        if name not in event:
            fail(f"{where}.{name}", f"is missing from event {event['id']}")
    for name in ("prev_hash", "hash"):
        if not isinstance(event[name], str):
            fail(f"{where}.{name}", "must be a string")
    return event


def verify_log_slice(
    document: Any,
    keys: KeySet,
    *,
    anchors: Sequence[tuple[str, dict[str, Any]]] = (),
    positions: Sequence[tuple[str, Mapping[str, Any]]] = (),
    where: str = "log",
) -> SliceSummary:
    """An exported run of audit events is a contiguous, unaltered part of the chain, tied to a signed
    checkpoint (one carried in the slice, or one of `anchors`: (name, verified checkpoint)), and holds
    each of `positions` ((name, {event, event_id, hash})) exactly. The first failure is raised.
    Carried checkpoints by a revoked key are ignored; any other must verify."""
    document = _object(document, where)
    if document.get("format") != SLICE_FORMAT:
        fail(f"{where}.format", f"must be {SLICE_FORMAT!r}")
    events = document.get("events")
    if not isinstance(events, list) or not events:
        fail(f"{where}.events", "must be a non-empty list of audit events")
    by_id: dict[int, dict[str, Any]] = {}
    previous: dict[str, Any] | None = None
    for index, raw in enumerate(events):
        at = f"{where}.events.{index}"
        event = _check_event(raw, at)
        if previous is not None:
            if event["id"] <= previous["id"]:
                fail(f"{at}.id", f"event {event['id']} comes after event {previous['id']}: reordered")
            if event["prev_hash"] != previous["hash"]:
                fail(
                    f"{at}.prev_hash",
                    f"event {event['id']} does not follow event {previous['id']} in the chain "
                    "(an event was removed, inserted or reordered)",
                )
        try:
            recomputed = event_hash(event)
        except (TypeError, ValueError, RecursionError) as error:
            fail(at, f"event {event['id']} cannot be hashed: {error}")
        if recomputed != event["hash"]:
            fail(at, f"event {event['id']} was altered: its content does not match its hash")
        by_id[event["id"]] = event
        previous = event
    carried = document.get("checkpoints", [])
    if not isinstance(carried, list):
        fail(f"{where}.checkpoints", "must be a list of signed checkpoints")
    tied: list[str] = []
    candidates = [*anchors]
    for index, checkpoint in enumerate(carried):
        name = f"{where}.checkpoints.{index}"
        signature = checkpoint.get("signature") if isinstance(checkpoint, dict) else None
        if isinstance(signature, dict) and signature.get("kid") in keys.revoked:
            continue  # no evidence, and no reason to refuse the slice: another checkpoint may tie it
        candidates.append((name, verify_checkpoint(checkpoint, keys, name)))
    for name, checkpoint in candidates:
        event = by_id.get(checkpoint["event_id"])
        if event is None:
            continue
        if event["hash"] != checkpoint["hash"]:
            fail(
                f"{name}.hash",
                f"checkpoint {checkpoint['id']} signed event {checkpoint['event_id']} with another hash "
                "than the slice's event has",
            )
        tied.append(checkpoint["id"])
    if not tied:
        fail(where, "no signed checkpoint falls on an event of the slice: it is not tied to a signed head")
    for name, position in positions:
        event_id = position.get("event_id")
        event = by_id.get(event_id) if isinstance(event_id, int) else None
        if event is None:
            fail(name, f"event {position.get('event_id')} ({position.get('event')}) is not in the log slice")
        if event["hash"] != position.get("hash") or event["event"] != position.get("event"):
            fail(name, f"event {event['id']} in the log slice is not the event the certificate names")
    first, last = events[0]["id"], events[-1]["id"]
    return SliceSummary(first, last, len(events), tied)


# --- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str
    field: str | None = None
    kid: str | None = None


def verify_certificate(document: Any, keys: KeySet, log_slice: Any | None = None) -> Verdict:
    """Check a signed certificate (`{"certificate": ..., "signature": ...}`) against a published key set
    and, given one, an exported log slice. Valid, or the first thing that fails, named."""
    try:
        return _verify_certificate(document, keys, log_slice)
    except EvidenceInvalid as failure:
        return Verdict(False, str(failure), failure.field)


def _verify_certificate(document: Any, keys: KeySet, log_slice: Any | None) -> Verdict:
    document = _object(document, "document")
    certificate = _object(document.get("certificate"), "certificate")
    signature = _check_signature(document.get("signature"), keys, "signature")
    _check_content(certificate, signature, "signature", "certificate")
    if certificate.get("format") != CERTIFICATE_FORMAT:
        fail("certificate.format", f"must be {CERTIFICATE_FORMAT!r}")
    checkpoint = verify_checkpoint(certificate.get("checkpoint"), keys, "certificate.checkpoint")
    chain = certificate.get("audit_chain")
    if not isinstance(chain, list) or not all(isinstance(p, dict) for p in chain):
        fail("certificate.audit_chain", "must be a list of audit-log positions")
    positions = [(f"certificate.audit_chain.{i}", position) for i, position in enumerate(chain)]
    for name, position in positions:
        event_id = position.get("event_id")
        if not isinstance(event_id, int) or event_id > checkpoint["event_id"]:
            fail(
                f"{name}.event_id",
                f"event {event_id} is not covered by checkpoint {checkpoint['id']} "
                f"(event {checkpoint['event_id']})",
            )
    kid = signature["kid"]
    reason = (
        f"certificate of request {certificate.get('request_id')} is signed by key {kid!r} "
        f"({keys.statuses.get(kid)}); it rests on checkpoint {checkpoint['id']} (event "
        f"{checkpoint['event_id']}, signed {checkpoint['signed_at']})"
    )
    if log_slice is not None:
        summary = verify_log_slice(
            log_slice, keys, anchors=[("certificate.checkpoint", checkpoint)], positions=positions
        )
        reason += (
            f"; the log slice (events {summary.first_id}..{summary.last_id}, {summary.events} events) is "
            f"an unaltered part of the chain tied to {', '.join(summary.anchors)} and holds its "
            f"{len(positions)} events"
        )
    return Verdict(True, reason, None, kid)
