"""Deletion certificates: issued only for a succeeded request, carrying a hash (not the IDs) of what was
forgotten, the checkpoints, the audit figures, the audit-log events and the signed checkpoint of the chain
that covers them; any tampering fails verification (the offline checks: test_offline_verification.py)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from typing import Any

from api_helpers_loader import assert_problem
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from evidence_helpers import succeed_request, synthetic_report, tampered

from app.certificates.service import sign
from core.evidence import sign_detached
from core.storage import local_path

CERT = "/v1/deletion-requests/{}/certificate"
VERIFY = "/v1/certificates/verify"
LEGACY_FORMAT = "unlearn-service/deletion-certificate/v1"


def _hmac(secret: str, certificate: dict[str, Any]) -> dict[str, str]:
    """A v1 signature, as the service issued them before v2: HMAC-SHA256 over the canonical JSON."""
    return {
        "algorithm": "HMAC-SHA256",
        "value": hmac.new(secret.encode(), _canonical(certificate), "sha256").hexdigest(),
    }


def _request(client, admin, body) -> str:
    response = client.post("/v1/deletion-requests", json=body, headers=admin)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _canonical(value: Any) -> bytes:
    """The documented rule, written again: sorted keys, no spaces, integral numbers without a fraction."""

    def integral(value: Any) -> Any:
        if isinstance(value, float) and value == int(value):
            return int(value)
        if isinstance(value, dict):
            return {k: integral(v) for k, v in value.items()}
        if isinstance(value, list):
            return [integral(v) for v in value]
        return value

    return json.dumps(integral(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _independently_verified(jwks: dict[str, Any], content: dict[str, Any], signature: dict[str, Any]) -> bool:
    """Ed25519 over the signature object without `value`, whose sha256 is that of the content."""
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == signature["kid"]]
    public = Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"]))
    unsigned = {name: value for name, value in signature.items() if name != "value"}
    public.verify(_b64url_decode(signature["value"]), _canonical(unsigned))  # raises if it does not hold
    return signature["sha256"] == hashlib.sha256(_canonical(content)).hexdigest()


def test_certificate_carries_the_evidence_and_verifies(
    client, keys, ready_model, succeeded, settings
) -> None:
    auditor = keys.headers("auditor")
    response = client.get(CERT.format(succeeded.request_id), headers=auditor)
    assert response.status_code == 200, response.text
    signed = response.json()
    cert = signed["certificate"]
    assert cert["request_id"] == succeeded.request_id and cert["external_ref"] == "gdpr-ticket-42"
    assert cert["model_id"] == ready_model.model_id and cert["method"] == "dau"
    expected_digest = hashlib.sha256("\n".join(sorted(succeeded.forgotten)).encode()).hexdigest()
    assert cert["forgotten"] == {"kind": "samples", "count": 7, "ids_sha256": expected_digest, "class": None}
    assert not any(sample_id in response.text for sample_id in succeeded.forgotten)  # a hash, not the IDs
    assert cert["parent"] == {"version_id": ready_model.version_id, "sha256": ready_model.sha256}
    assert cert["new"] == {"version_id": succeeded.version_id, "sha256": succeeded.sha256}
    report = succeeded.report
    for side in ("before", "after", "reference"):
        assert cert["audit"][side] == {m: report[side][m] for m in ("UA", "RA", "TA", "MIA")}
    assert cert["audit"]["avg_disparity_after"] == report["disparity"]["after"]["average"]
    assert cert["audit"]["before"]["UA"] < cert["audit"]["after"]["UA"]  # the synthetic forgetting shows
    times = cert["timestamps"]
    assert times["received_at"] <= times["finished_at"] <= times["issued_at"] < times["due_at"]

    log = client.get("/v1/audit-log", params={"limit": 500}, headers=auditor).json()["data"]
    by_id = {event["id"]: event for event in log}
    assert [p["event"] for p in cert["audit_chain"]] == [
        "version.created",
        "report.issued",
        "request.succeeded",
    ]
    for position in cert["audit_chain"]:
        event = by_id[position["event_id"]]
        assert event["hash"] == position["hash"] and event["event"] == position["event"]
    issued = by_id[cert["audit_chain"][1]["event_id"]]
    assert cert["audit"]["report_sha256"] == issued["data"]["report_sha256"]
    assert client.get("/v1/audit-log/verify", headers=auditor).json()["ok"] is True

    last = max(position["event_id"] for position in cert["audit_chain"])
    checkpoint = cert["checkpoint"]
    assert checkpoint["event_id"] >= last and by_id[checkpoint["event_id"]]["hash"] == checkpoint["hash"]
    jwks = client.get("/.well-known/jwks.json").json()  # public: no API key
    assert [(key["kid"], key["status"]) for key in jwks["keys"]] == [("dev", "active")]
    assert signed["signature"]["algorithm"] == "EdDSA" and signed["signature"]["kid"] == "dev"
    assert _independently_verified(jwks, cert, signed["signature"])
    checkpoint_content = {name: value for name, value in checkpoint.items() if name != "signature"}
    assert _independently_verified(jwks, checkpoint_content, checkpoint["signature"])
    verdict = client.post(VERIFY, json=signed, headers=auditor)
    assert verdict.status_code == 200 and verdict.json()["valid"] is True, verdict.text
    assert succeeded.request_id in verdict.json()["reason"] and verdict.json()["kid"] == "dev"

    legacy_cert = {**{k: v for k, v in cert.items() if k != "checkpoint"}, "format": LEGACY_FORMAT}
    legacy = {"certificate": legacy_cert, "signature": _hmac(settings.server_secret, legacy_cert)}
    verdict = client.post(VERIFY, json=legacy, headers=auditor).json()
    assert verdict["valid"] is True, verdict  # certificates issued before v2 still verify
    legacy["certificate"]["external_ref"] = "gdpr-ticket-43"
    verdict = client.post(VERIFY, json=legacy, headers=auditor).json()
    assert verdict["valid"] is False and verdict["field"] == "signature", verdict


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, (*path, index))]
    return [path]


def test_tampering_with_any_field_fails_verification(client, keys, succeeded) -> None:
    auditor = keys.headers("auditor")
    signed = client.get(CERT.format(succeeded.request_id), headers=auditor).json()
    leaves = _leaves(signed["certificate"])
    assert len(leaves) >= 40
    for path in leaves:
        forged = copy.deepcopy(signed)
        parent = forged["certificate"]
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = tampered(parent[path[-1]])
        verdict = client.post(VERIFY, json=forged, headers=auditor).json()
        named = ".".join(str(part) for part in ("certificate", *path))
        assert verdict["valid"] is False and verdict["field"] == named, (path, verdict)

    dropped = copy.deepcopy(signed)
    del dropped["certificate"]["external_ref"]
    added = copy.deepcopy(signed)
    added["certificate"]["note"] = "also forgot everything else"
    bad_signature = copy.deepcopy(signed)
    bad_signature["signature"]["value"] = tampered(signed["signature"]["value"])
    other_algorithm = copy.deepcopy(signed)
    other_algorithm["signature"]["algorithm"] = "none"
    foreign = copy.deepcopy(signed)  # another key under the same key id
    foreign["signature"] = sign_detached(
        signed["certificate"], "dev", Ed25519PrivateKey.generate(), fields=True
    )
    non_ascii = copy.deepcopy(signed)
    non_ascii["signature"]["value"] = "é" * 86
    legacy = copy.deepcopy(signed)  # an HMAC signature on a v2 certificate
    legacy["signature"] = {
        "algorithm": "HMAC-SHA256",
        "value": sign("another-server-secret-0123456789abcdef", signed["certificate"]),
    }
    expected = {
        "dropped": (dropped, "certificate.external_ref"),
        "added": (added, "certificate.note"),
        "bad_signature": (bad_signature, "signature"),
        "other_algorithm": (other_algorithm, "signature.algorithm"),
        "foreign": (foreign, "signature"),
        "non_ascii": (non_ascii, "signature.value"),
        "legacy": (legacy, "certificate.format"),
    }
    for name, (forged, field) in expected.items():
        verdict = client.post(VERIFY, json=forged, headers=auditor).json()
        assert verdict["valid"] is False and verdict["reason"], (name, verdict)
        assert verdict["field"].startswith(field), (name, verdict)


def test_a_reserialised_certificate_still_verifies(client, keys, admin, ready_model, settings) -> None:
    """JavaScript writes 3.0 as 3 and may reorder keys: neither changes what is signed."""
    body = {
        "model_id": ready_model.model_id,
        "sample_ids": ready_model.train_ids[:3],
        "params": {"alpha": 3.0},
    }
    request_id = _request(client, admin, body)
    succeed_request(
        settings.database_url, local_path(settings.artifact_url), request_id, synthetic_report().to_dict()
    )
    auditor = keys.headers("auditor")
    response = client.get(CERT.format(request_id), headers=auditor)
    assert '"alpha":3.0' in response.text  # sent as Python wrote it
    signed = response.json()
    cert = signed["certificate"]
    cert["params"]["alpha"] = 3
    cert["audit"]["before"] = dict(reversed(list(cert["audit"]["before"].items())))
    as_javascript = {"signature": signed["signature"], "certificate": dict(reversed(list(cert.items())))}
    assert client.post(VERIFY, json=as_javascript, headers=auditor).json()["valid"] is True
    cert["params"]["alpha"] = 3.5
    assert client.post(VERIFY, json=as_javascript, headers=auditor).json()["valid"] is False
    assert sign("s", {"x": 50.0, "y": [1.0, 2.5]}) == sign("s", {"y": [1, 2.5], "x": 50})
    assert sign("s", {"x": 50.0}) != sign("s", {"x": 50.5}) != sign("t", {"x": 50.5})


def test_nan_or_absurd_certificates_are_invalid_not_errors(client, keys, succeeded) -> None:
    auditor = {**keys.headers("auditor"), "Content-Type": "application/json"}
    signed = client.get(CERT.format(succeeded.request_id), headers=keys.headers("auditor")).json()
    text = json.dumps(signed)
    with_nan = text.replace(f'"UA": {json.dumps(signed["certificate"]["audit"]["after"]["UA"])}', '"UA": NaN')
    assert with_nan != text
    for body in (with_nan, text.replace('"external_ref": "gdpr-ticket-42"', '"external_ref": "\\ud800"')):
        response = client.post(VERIFY, content=body.encode(), headers=auditor)
        assert response.status_code in (200, 400, 422), response.text
        if response.status_code == 200:
            assert response.json()["valid"] is False
    assert_problem(client.post(VERIFY, json={"certificate": {}}, headers=auditor), 422, "signature")
    assert_problem(client.post(VERIFY, json=[1, 2], headers=auditor), 422)


def test_certificate_is_409_until_succeeded_404_when_unknown_and_needs_audit_read(
    client, keys, admin, ready_model, settings
) -> None:
    request_id = _request(
        client, admin, {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:2]}
    )
    auditor = keys.headers("auditor")
    body = assert_problem(client.get(CERT.format(request_id), headers=auditor), 409)
    assert "queued" in body["detail"]
    assert client.post(f"/v1/deletion-requests/{request_id}/cancel", headers=admin).status_code == 200
    assert "cancelled" in assert_problem(client.get(CERT.format(request_id), headers=auditor), 409)["detail"]
    assert_problem(client.get(CERT.format("req_unknown"), headers=auditor), 404)
    assert_problem(client.get(CERT.format(request_id), headers=keys.headers("reader")), 403)
    assert_problem(client.get(CERT.format(request_id)), 401)
    assert_problem(client.post(VERIFY, json={"certificate": {}, "signature": {}}), 401)


def test_class_request_certificate_hashes_the_class_tombstones(
    client, keys, admin, ready_model, settings
) -> None:
    request_id = _request(client, admin, {"model_id": ready_model.model_id, "class": 4})
    done = succeed_request(
        settings.database_url, local_path(settings.artifact_url), request_id, synthetic_report().to_dict()
    )
    cert = client.get(CERT.format(request_id), headers=keys.headers("auditor")).json()["certificate"]
    assert cert["forgotten"]["kind"] == "class" and cert["forgotten"]["class"] == 4
    assert cert["forgotten"]["count"] == len(done.forgotten) > 50
    assert (
        cert["forgotten"]["ids_sha256"]
        == hashlib.sha256("\n".join(sorted(done.forgotten)).encode()).hexdigest()
    )


def test_the_audit_page_names_the_signing_key_and_the_offline_check(
    client, admin, ready_model, settings, tmp_path
) -> None:
    body = {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[20:23]}
    created = client.post("/v1/deletion-requests", json=body, headers=admin).json()
    page = tmp_path / "page.html"
    page.write_text("<!DOCTYPE html><html><body><h1>Unlearning audit report</h1></body></html>")
    succeed_request(
        settings.database_url,
        local_path(settings.artifact_url),
        created["id"],
        synthetic_report().to_dict(),
        html_uri=str(page),
    )
    response = client.get(f"/v1/deletion-requests/{created['id']}/audit.html", headers=admin)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    jwks = client.get("/.well-known/jwks.json").json()
    active = [key["kid"] for key in jwks["keys"] if key.get("status", "active") == "active"]
    assert active and any(kid in response.text for kid in active)
    assert "unlearn verify" in response.text and "Unlearning audit report" in response.text
