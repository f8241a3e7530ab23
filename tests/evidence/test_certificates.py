"""Deletion certificates: issued only for a succeeded request, carrying a hash (not the IDs) of what was
forgotten, the checkpoints, the audit figures and the audit-log events; any tampering fails verification."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

import pytest
from api_helpers_loader import assert_problem
from evidence_helpers import Succeeded, succeed_request, synthetic_report

from app.certificates.service import sign

CERT = "/v1/deletion-requests/{}/certificate"
VERIFY = "/v1/certificates/verify"


def _request(client, admin, body) -> str:
    response = client.post("/v1/deletion-requests", json=body, headers=admin)
    assert response.status_code == 202, response.text
    return response.json()["id"]


@pytest.fixture
def succeeded(client, admin, ready_model, settings) -> Succeeded:
    ids = ready_model.train_ids[10:17]
    request_id = _request(
        client,
        admin,
        {"model_id": ready_model.model_id, "sample_ids": ids, "external_ref": "gdpr-ticket-42"},
    )
    report = synthetic_report().to_dict()
    return succeed_request(settings.database_url, settings.artifacts, request_id, report)


def _independent_signature(secret: str, certificate: dict[str, Any]) -> str:
    """The documented rule, written again: sorted keys, no spaces, integral numbers without a fraction."""

    def integral(value: Any) -> Any:
        if isinstance(value, float) and value == int(value):
            return int(value)
        if isinstance(value, dict):
            return {k: integral(v) for k, v in value.items()}
        if isinstance(value, list):
            return [integral(v) for v in value]
        return value

    text = json.dumps(integral(certificate), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


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

    assert signed["signature"] == {
        "algorithm": "HMAC-SHA256",
        "value": _independent_signature(settings.server_secret, cert),
    }
    verdict = client.post(VERIFY, json=signed, headers=auditor)
    assert verdict.status_code == 200 and verdict.json()["valid"] is True, verdict.text
    assert succeeded.request_id in verdict.json()["reason"]


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in _leaves(item, (*path, index))]
    return [path]


def _tampered(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 0.5
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1") if value else "x"
    return "x"  # None


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
        parent[path[-1]] = _tampered(parent[path[-1]])
        verdict = client.post(VERIFY, json=forged, headers=auditor).json()
        assert verdict["valid"] is False, (path, verdict)

    dropped = copy.deepcopy(signed)
    del dropped["certificate"]["external_ref"]
    added = copy.deepcopy(signed)
    added["certificate"]["note"] = "also forgot everything else"
    bad_signature = copy.deepcopy(signed)
    bad_signature["signature"]["value"] = _tampered(signed["signature"]["value"])
    other_algorithm = copy.deepcopy(signed)
    other_algorithm["signature"]["algorithm"] = "none"
    foreign = copy.deepcopy(signed)
    foreign["signature"]["value"] = sign("another-server-secret-0123456789abcdef", signed["certificate"])
    non_hex = copy.deepcopy(signed)
    non_hex["signature"]["value"] = "é" * 64  # compare_digest would raise TypeError on non-ASCII str
    for forged in (dropped, added, bad_signature, other_algorithm, foreign, non_hex):
        verdict = client.post(VERIFY, json=forged, headers=auditor).json()
        assert verdict["valid"] is False and verdict["reason"], verdict


def test_a_reserialised_certificate_still_verifies(client, keys, admin, ready_model, settings) -> None:
    """JavaScript writes 3.0 as 3 and may reorder keys: neither changes what is signed."""
    body = {
        "model_id": ready_model.model_id,
        "sample_ids": ready_model.train_ids[:3],
        "params": {"alpha": 3.0},
    }
    request_id = _request(client, admin, body)
    succeed_request(settings.database_url, settings.artifacts, request_id, synthetic_report().to_dict())
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
        settings.database_url, settings.artifacts, request_id, synthetic_report().to_dict()
    )
    cert = client.get(CERT.format(request_id), headers=keys.headers("auditor")).json()["certificate"]
    assert cert["forgotten"]["kind"] == "class" and cert["forgotten"]["class"] == 4
    assert cert["forgotten"]["count"] == len(done.forgotten) > 50
    assert (
        cert["forgotten"]["ids_sha256"]
        == hashlib.sha256("\n".join(sorted(done.forgotten)).encode()).hexdigest()
    )
