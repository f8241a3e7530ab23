"""Offline verification: a certificate, the published key set and an exported log slice are enough to
check a deletion, with `unlearn verify` (no database, no server) naming the first thing that fails.

Real components: the app on a migrated database (SQLite, and PostgreSQL when configured), its HTTP
routes, the CLI through typer's CliRunner and as a subprocess, and the key set fetched from the app
served by uvicorn on a loopback port.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers_loader import assert_problem
from evidence_helpers import Succeeded, tampered
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.main import app as cli_app
from core.evidence import KeySet, event_hash, leaves, verify_certificate
from core.signing import public_pem, write_private_key

ROOT = Path(__file__).resolve().parents[2]
CERT = "/v1/deletion-requests/{}/certificate"
JWKS = "/.well-known/jwks.json"
runner = CliRunner()


def _evidence(client: TestClient, auditor: dict[str, str], request_id: str) -> dict[str, Any]:
    """What a regulator takes away: the certificate, the key set and the log slice, as served."""
    certificate = client.get(CERT.format(request_id), headers=auditor)
    assert certificate.status_code == 200, certificate.text
    jwks = client.get(JWKS)
    assert jwks.status_code == 200 and "public" in jwks.headers["cache-control"], jwks.text
    log = client.get("/v1/audit-log/slice", params={"request_id": request_id}, headers=auditor)
    assert log.status_code == 200, log.text
    return {"certificate": certificate.json(), "keys": jwks.json(), "log": log.json()}


def _write(directory: Path, evidence: dict[str, Any]) -> dict[str, str]:
    paths = {}
    for name, document in evidence.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(document))
        paths[name] = str(path)
    return paths


def _verify_cli(paths: dict[str, str], *, with_log: bool = True) -> tuple[int, str]:
    args = ["verify", paths["certificate"], "--keys", paths["keys"]]
    result = runner.invoke(cli_app, [*args, *(["--log", paths["log"]] if with_log else [])])
    return result.exit_code, result.output.strip()


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        document = document[int(key)] if isinstance(document, list) else document[key]
    if isinstance(document, list):
        document[int(last)] = value
    else:
        document[last] = value


@pytest.fixture
def evidence(
    client: TestClient, keys: Any, admin: dict[str, str], ready_model: Any, succeeded: Succeeded
) -> Any:
    """The evidence of a succeeded request, issued after more events were appended to the chain, so
    that the checkpoint (and the slice) reach past the certificate's own events."""
    response = client.post(
        "/v1/deletion-requests", json={"model_id": ready_model.model_id, "class": 2}, headers=admin
    )
    assert response.status_code == 202, response.text
    return _evidence(client, keys.headers("auditor"), succeeded.request_id)


def test_a_genuine_certificate_verifies_offline_with_its_log_slice(evidence, tmp_path) -> None:
    certificate, log = evidence["certificate"], evidence["log"]
    positions = certificate["certificate"]["audit_chain"]
    checkpoint = certificate["certificate"]["checkpoint"]
    assert [event["id"] for event in log["events"]][0] == positions[0]["event_id"]
    assert log["events"][-1]["id"] == checkpoint["event_id"] > positions[-1]["event_id"]
    assert [c["id"] for c in log["checkpoints"]] == [checkpoint["id"]]
    assert [e["event"] for e in log["events"]][-1] == "request.received"  # the later request's event

    verdict = verify_certificate(certificate, KeySet.from_jwks(evidence["keys"]), log)
    assert verdict.valid and verdict.kid == "dev", verdict
    code, output = _verify_cli(_write(tmp_path, evidence))
    assert code == 0 and output.startswith("valid: certificate of request "), output
    assert f"checkpoint {checkpoint['id']}" in output and f"{len(log['events'])} events" in output
    code, output = _verify_cli(_write(tmp_path, evidence), with_log=False)
    assert code == 0 and "log slice" not in output, output


def test_every_field_altered_fails_offline_with_the_field_named(evidence, tmp_path) -> None:
    paths = _write(tmp_path, evidence)
    genuine = evidence["certificate"]
    fields = [path for path, _ in leaves(genuine["certificate"])]
    assert len(fields) >= 45 and "checkpoint.signature.value" in fields and "audit.after.UA" in fields
    for field in fields:
        forged = copy.deepcopy(genuine)
        old = dict(leaves(forged["certificate"]))[field]
        _set(forged["certificate"], field, tampered(old))
        Path(paths["certificate"]).write_text(json.dumps(forged))
        code, output = _verify_cli(paths)
        assert code == 1 and output.startswith(f"invalid: certificate.{field}: was altered"), (field, output)

    for name, change, expected in (
        (
            "dropped",
            lambda c: c["certificate"].pop("external_ref"),
            "invalid: certificate.external_ref: is missing",
        ),
        ("added", lambda c: c["certificate"].update(note="and more"), "invalid: certificate.note: was added"),
        (
            "kid",
            lambda c: c["signature"].update(kid="other"),
            "invalid: signature.kid: signed with key 'other'",
        ),
        (
            "digest",
            lambda c: c["signature"]["fields"].update(method="0" * 64),
            "invalid: signature: does not",
        ),
        ("no signature", lambda c: c.pop("signature"), "invalid: signature: must be a JSON object"),
    ):
        forged = copy.deepcopy(genuine)
        change(forged)
        Path(paths["certificate"]).write_text(json.dumps(forged))
        code, output = _verify_cli(paths)
        assert code == 1 and output.startswith(expected), (name, output)
    Path(paths["certificate"]).write_text("{not json")
    code, output = _verify_cli(paths)
    assert code == 1 and output.startswith("invalid: certificate: ") and "not JSON" in output, output


def _slice_verdict(evidence: dict[str, Any], log: dict[str, Any]) -> tuple[str | None, str]:
    verdict = verify_certificate(evidence["certificate"], KeySet.from_jwks(evidence["keys"]), log)
    assert not verdict.valid
    return verdict.field, verdict.reason


def test_a_log_slice_with_an_event_altered_removed_or_reordered_fails(evidence, tmp_path) -> None:
    genuine = evidence["log"]
    events = genuine["events"]
    assert len(events) >= 4

    altered = copy.deepcopy(genuine)
    altered["events"][1]["actor"] = "mallory"
    field, reason = _slice_verdict(evidence, altered)
    assert field == "log.events.1" and f"event {events[1]['id']} was altered" in reason

    rehashed = copy.deepcopy(genuine)  # altered, and its hash recomputed: the next link breaks
    rehashed["events"][1]["data"] = {"report_sha256": "0" * 64}
    rehashed["events"][1]["hash"] = event_hash(rehashed["events"][1])
    field, reason = _slice_verdict(evidence, rehashed)
    assert field == "log.events.2.prev_hash" and "removed, inserted or reordered" in reason

    removed = copy.deepcopy(genuine)
    del removed["events"][1]
    field, reason = _slice_verdict(evidence, removed)
    assert field == "log.events.1.prev_hash" and f"event {events[2]['id']} does not follow" in reason

    reordered = copy.deepcopy(genuine)
    reordered["events"][1], reordered["events"][2] = reordered["events"][2], reordered["events"][1]
    field, reason = _slice_verdict(evidence, reordered)
    assert field == "log.events.1.prev_hash", reason

    renumbered = copy.deepcopy(genuine)  # reordered and the ids swapped back: the links still break
    first, second = renumbered["events"][1], renumbered["events"][2]
    renumbered["events"][1], renumbered["events"][2] = (
        {**second, "id": first["id"]},
        {**first, "id": second["id"]},
    )
    assert _slice_verdict(evidence, renumbered)[0] == "log.events.1.prev_hash"

    head_cut = copy.deepcopy(genuine)  # without the certificate's first event
    del head_cut["events"][0]
    field, reason = _slice_verdict(evidence, head_cut)
    assert field == "certificate.audit_chain.0" and "not in the log slice" in reason

    tail_cut = copy.deepcopy(genuine)  # without the checkpoint's event: nothing ties it to a signed head
    del tail_cut["events"][-1]
    tail_cut["checkpoints"] = []
    field, reason = _slice_verdict(evidence, tail_cut)
    assert field == "log" and "no signed checkpoint" in reason

    forged_checkpoint = copy.deepcopy(genuine)
    forged_checkpoint["checkpoints"][0]["hash"] = "0" * 64
    assert _slice_verdict(evidence, forged_checkpoint)[0] == "log.checkpoints.0"

    paths = _write(tmp_path, {**evidence, "log": removed})
    code, output = _verify_cli(paths)
    assert code == 1 and output.startswith("invalid: log.events.1.prev_hash: "), output


def test_a_rotated_out_key_still_verifies_and_a_revoked_one_does_not(
    settings, enqueued, keys, succeeded, tmp_path
) -> None:
    from app.main import create_app

    auditor = keys.headers("auditor")

    def served(**changes: Any) -> TestClient:
        return TestClient(create_app(settings.model_copy(update=changes), enqueue=enqueued))

    with served() as client:
        old = _evidence(client, auditor, succeeded.request_id)
    assert old["certificate"]["signature"]["kid"] == "dev"
    directory = settings.signing_keys
    assert stat.S_IMODE((directory / "dev.pem").stat().st_mode) == 0o600  # generated on first use

    write_private_key(directory, "2027-01")
    with served(signing_key_id="2027-01") as client:
        rotated = _evidence(client, auditor, succeeded.request_id)
        assert client.post("/v1/certificates/verify", json=old["certificate"], headers=auditor).json()[
            "valid"
        ]
    statuses = [(key["kid"], key["status"]) for key in rotated["keys"]["keys"]]
    assert statuses == [("2027-01", "active"), ("dev", "retired")] and rotated["keys"]["revoked"] == []
    assert rotated["certificate"]["signature"]["kid"] == "2027-01"
    assert rotated["certificate"]["certificate"]["checkpoint"]["signature"]["kid"] == "dev"  # still trusted
    for document in (old, rotated):  # the certificate signed by the retired key, checked with today's keys
        paths = _write(tmp_path, {**document, "keys": rotated["keys"]})
        code, output = _verify_cli(paths)
        assert code == 0, output

    # The retired key's private half taken away: its public half keeps old certificates verifiable.
    private = directory / "dev.pem"
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    (directory / "dev.pub.pem").write_bytes(public_pem(load_pem_private_key(private.read_bytes(), None)))
    private.unlink()
    with served(signing_key_id="2027-01") as client:
        assert [k["kid"] for k in client.get(JWKS).json()["keys"]] == ["2027-01", "dev"]

    with served(signing_key_id="2027-01", revoked_signing_key_ids=["dev"]) as client:
        revoked = _evidence(client, auditor, succeeded.request_id)
        verdict = client.post("/v1/certificates/verify", json=old["certificate"], headers=auditor).json()
        assert verdict["valid"] is False and verdict["field"] == "signature.kid", verdict
    assert [k["kid"] for k in revoked["keys"]["keys"]] == ["2027-01"]
    assert [(k["kid"], k["status"]) for k in revoked["keys"]["revoked"]] == [("dev", "revoked")]
    code, output = _verify_cli(_write(tmp_path, {**old, "keys": revoked["keys"]}))
    assert code == 1 and output.startswith("invalid: signature.kid: signed with key 'dev', which is revoked")
    # A certificate by the new key that still leaned on a checkpoint signed by the revoked key fails there...
    code, output = _verify_cli(_write(tmp_path, {**rotated, "keys": revoked["keys"]}))
    assert code == 1 and output.startswith("invalid: certificate.checkpoint.signature.kid: "), output
    # ... so the service now rests its certificates on a checkpoint signed by a trusted key.
    assert revoked["certificate"]["certificate"]["checkpoint"]["signature"]["kid"] == "2027-01"
    assert _verify_cli(_write(tmp_path, revoked))[0] == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served_app(settings, enqueued) -> Iterator[str]:
    """The app served by uvicorn on a loopback port; yields its base URL."""
    import uvicorn

    from app.main import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, enqueue=enqueued), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_the_cli_takes_the_key_set_from_a_url_and_needs_no_database(
    served_app, client, evidence, tmp_path
) -> None:
    paths = _write(tmp_path, evidence)
    environment = {
        **os.environ,
        "UNLEARN_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/nothing",
        "UNLEARN_VAR_DIR": str(tmp_path / "no-var"),
    }
    command = [sys.executable, "-X", "importtime", "-m", "cli.main", "verify", paths["certificate"]]
    url = f"{served_app}{JWKS}"
    done = subprocess.run(
        [*command, "--keys", url, "--log", paths["log"]],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith("valid: "), done.stdout + done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "core.evidence" in imported and "cryptography" in imported  # what it did import, it listed
    assert not {name for name in imported if name.split(".")[0] in ("sqlalchemy", "fastapi", "psycopg")}
    assert not (tmp_path / "no-var").exists()

    code, output = _verify_cli({**paths, "keys": f"{served_app}/.well-known/nothing.json"})
    assert code == 1 and output.startswith("invalid: keys: GET ") and "404" in output, output
    code, output = _verify_cli({**paths, "keys": f"http://127.0.0.1:{_free_port()}{JWKS}"})
    assert code == 1 and output.startswith("invalid: keys: cannot fetch"), output


def test_checkpoints_are_listed_fetched_and_signed_on_a_schedule(client, keys, evidence, settings) -> None:
    from core.db.checkpoints import CheckpointSchedule
    from core.signing import keyring_for

    auditor = keys.headers("auditor")
    page = client.get("/v1/audit-log/checkpoints", headers=auditor).json()
    (listed,) = page["data"]
    assert listed == evidence["certificate"]["certificate"]["checkpoint"] and page["next_cursor"] is None
    assert client.get(f"/v1/audit-log/checkpoints/{listed['id']}", headers=auditor).json() == listed
    assert_problem(client.get("/v1/audit-log/checkpoints/ckp_nope", headers=auditor), 404, "id")
    assert_problem(client.get("/v1/audit-log/checkpoints", headers=keys.headers("reader")), 403)

    schedule = CheckpointSchedule(settings.database_url, lambda: keyring_for(settings), 0.05)
    assert schedule.run_once() is None  # the head has not moved since the certificate's checkpoint
    cancel = f"/v1/deletion-requests/{_queued(client, auditor)}/cancel"
    assert client.post(cancel, headers=keys.headers("admin")).status_code == 200  # the head moves
    schedule.start()
    try:
        deadline = time.monotonic() + 20
        while len(client.get("/v1/audit-log/checkpoints", headers=auditor).json()["data"]) < 2:
            assert time.monotonic() < deadline, "no scheduled checkpoint"
            time.sleep(0.05)
    finally:
        schedule.stop()
    newest = client.get("/v1/audit-log/checkpoints", headers=auditor).json()["data"][-1]
    head = client.get("/v1/audit-log/verify", headers=auditor).json()["last_hash"]
    assert newest["hash"] == head
    assert schedule.run_once() is None


def _queued(client: TestClient, auditor: dict[str, str]) -> str:
    events = client.get("/v1/audit-log", params={"event": "request.received"}, headers=auditor).json()["data"]
    return str(events[-1]["request_id"])


def test_the_slice_endpoint_takes_ranges_and_names_the_offending_parameter(
    client, keys, evidence, settings
) -> None:
    auditor = keys.headers("auditor")
    checkpoint = evidence["certificate"]["certificate"]["checkpoint"]
    first = evidence["log"]["events"][0]["id"]
    ranged = client.get(
        "/v1/audit-log/slice",
        params={"from_event": first, "to_checkpoint": checkpoint["id"]},
        headers=auditor,
    )
    assert ranged.status_code == 200 and ranged.json() == evidence["log"], ranged.text
    backwards = {"from_checkpoint": checkpoint["id"], "to_event": first}
    assert_problem(client.get("/v1/audit-log/slice", params=backwards, headers=auditor), 422, "to_event")
    for params, status, field in (
        ({"from_event": first}, 422, "to_event"),
        ({"from_event": first, "from_checkpoint": checkpoint["id"], "to_event": first}, 422, "from_event"),
        ({"from_checkpoint": "ckp_nope", "to_event": first}, 404, "from_checkpoint"),
        ({"request_id": "req_nope"}, 404, "request_id"),
        (
            {"request_id": evidence["certificate"]["certificate"]["request_id"], "to_event": 3},
            422,
            "to_event",
        ),
        ({"from_event": 10**9, "to_event": 10**9 + 1}, 404, "to_event"),
        ({"request_id": _queued(client, auditor)}, 409, None),
    ):
        assert_problem(client.get("/v1/audit-log/slice", params=params, headers=auditor), status, field)
    assert_problem(client.get("/v1/audit-log/slice", params={"from_event": 1, "to_event": 2}), 401)
    client.app.state.settings = settings.model_copy(update={"max_log_slice_events": 2})
    too_long = client.get(
        "/v1/audit-log/slice", params={"from_event": first, "to_event": first + 5}, headers=auditor
    )
    assert_problem(too_long, 422, "to_event")
    assert "at most 2" in too_long.json()["detail"]


def test_the_audit_page_section_shows_the_key_id_and_the_offline_commands(settings, tmp_path) -> None:
    from app.certificates.offline import audit_page_with_verification, offline_commands

    page = "<html><body><h1>Audit</h1></body></html>"
    served = audit_page_with_verification(page, settings, "req_1", "http://testserver/")
    section = served[served.index('<section id="offline-verification">') : served.index("</body>")]
    assert '<code class="kid">dev</code>' in section
    commands = offline_commands("http://testserver/", "req_1")
    assert len(commands) == 3 and commands[2].startswith("unlearn verify certificate.json --keys ")
    for command in commands:
        assert command.replace('"', "&quot;") in section
    assert "http://testserver/.well-known/jwks.json" in commands[2]


def test_signing_key_create_writes_a_private_key_once_and_prints_its_public_jwk(tmp_path) -> None:
    created = runner.invoke(cli_app, ["signing-key", "create", "--kid", "2027-02", "--dir", str(tmp_path)])
    assert created.exit_code == 0, created.output
    jwk = json.loads(created.stdout.strip().splitlines()[-1])
    assert jwk["kid"] == "2027-02" and jwk["crv"] == "Ed25519" and "d" not in jwk
    assert stat.S_IMODE((tmp_path / "2027-02.pem").stat().st_mode) == 0o600
    again = runner.invoke(cli_app, ["signing-key", "create", "--kid", "2027-02", "--dir", str(tmp_path)])
    assert again.exit_code == 2 and "exists already" in again.output
    bad = runner.invoke(cli_app, ["signing-key", "create", "--kid", "../x", "--dir", str(tmp_path)])
    assert bad.exit_code == 2
