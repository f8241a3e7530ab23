"""Callback targets (SSRF guard): a callback URL whose host is, or resolves to, a loopback, private,
link-local, ... address is refused at POST with a 422 naming `callback_url` (per item in a batch) and
nothing is stored, unless `callback_allow_networks` lists its network."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import assert_problem, count_rows
from fastapi.testclient import TestClient

from core.netguard import (
    TargetRefused,
    TargetUnresolved,
    address_refusal,
    check_target,
    parse_networks,
)

REFUSED_ADDRESSES = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "10.1.2.3": "private",
    "172.16.5.4": "private",
    "192.168.0.10": "private",
    "169.254.169.254": "link-local",
    "100.64.1.1": "CGNAT",
    "0.0.0.0": "unspecified",
    "224.0.0.251": "multicast",
    "240.0.0.1": "",  # reserved (Python versions differ on the words)
    "255.255.255.255": "",
    "192.0.2.10": "",  # documentation range
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fd12:3456::1": "private",
    "ff02::1": "multicast",
    "::ffff:127.0.0.1": "embeds 127.0.0.1",
    "::ffff:169.254.169.254": "embeds 169.254.169.254",
    "::ffff:10.0.0.1": "embeds 10.0.0.1",
    "2002:a9fe:a9fe::1": "embeds 169.254.169.254",  # 6to4
    "64:ff9b::7f00:1": "embeds 127.0.0.1",  # NAT64
}


@pytest.mark.parametrize("address", sorted(REFUSED_ADDRESSES))
def test_special_addresses_are_refused(address: str) -> None:
    reason = address_refusal(ipaddress.ip_address(address))
    assert reason is not None and REFUSED_ADDRESSES[address] in reason, reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_opens_exactly_its_networks() -> None:
    allow = parse_networks("127.0.0.1/32, 10.0.0.0/8,::1/128")
    for address in ("127.0.0.1", "10.200.0.1", "::1", "::ffff:127.0.0.1"):
        assert address_refusal(ipaddress.ip_address(address), allow) is None, address
    for address in ("127.0.0.2", "169.254.169.254", "192.168.1.1", "fe80::1"):
        assert address_refusal(ipaddress.ip_address(address), allow) is not None, address
    with pytest.raises(ValueError, match="not-a-network"):
        parse_networks("10.0.0.0/8,not-a-network")


def test_only_http_and_https_urls_with_a_host_are_checked() -> None:
    for url in ("ftp://8.8.8.8/x", "file:///etc/passwd", "gopher://8.8.8.8:6379/_INFO", "http:///x"):
        with pytest.raises(TargetRefused):
            check_target(url)
    target = check_target("https://8.8.8.8/hook")
    assert (target.scheme, target.host, target.port, str(target.address)) == (
        "https",
        "8.8.8.8",
        443,
        "8.8.8.8",
    )
    with pytest.raises(TargetUnresolved) as unresolved:
        check_target("http://no-such-host.invalid/hook")
    assert not unresolved.value.temporary


@pytest.fixture
def api(settings: Any, enqueued: Any) -> Iterator[Any]:
    """`api(allow)`: a TestClient of the app whose settings allow-list `allow` (CIDRs, comma-separated)."""
    from app.main import create_app

    with_clients: list[TestClient] = []

    def make(allow: str = "") -> TestClient:
        app = create_app(
            settings.model_copy(update={"callback_allow_networks": parse_networks(allow)}), enqueue=enqueued
        )
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        with_clients.append(client)
        return client

    yield make
    for client in with_clients:
        client.__exit__(None, None, None)


INTERNAL_TARGETS = [
    ("http://127.0.0.1:8080/hook", "127.0.0.1/32"),
    ("http://10.1.2.3/hook", "10.0.0.0/8"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254/32"),
    ("http://[::1]:8080/hook", "::1/128"),
    ("http://localhost:8080/hook", "127.0.0.1/32,::1/128"),  # a name that resolves to loopback
]


@pytest.mark.parametrize(("url", "allow"), INTERNAL_TARGETS)
def test_an_internal_target_is_refused_at_post_unless_allow_listed(
    api, admin, ready_model, db, url: str, allow: str
) -> None:
    body = {"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:2], "callback_url": url}
    refused = api().post("/v1/deletion-requests", json=body, headers=admin)
    problem = assert_problem(refused, 422, "callback_url")
    assert "UNLEARN_CALLBACK_ALLOW_NETWORKS" in problem["detail"], problem
    assert count_rows(db, "deletion_requests") == 0 and count_rows(db, "callback_outbox") == 0

    accepted = api(allow).post("/v1/deletion-requests", json=body, headers=admin)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["callback_url"].startswith(url.split("/hook")[0].split("/latest")[0])
    assert count_rows(db, "deletion_requests") == 1 and count_rows(db, "callback_outbox") == 1


def test_a_batch_refuses_only_the_items_with_internal_targets(api, admin, ready_model, db) -> None:
    ids = ready_model.train_ids
    items = [
        {"model_id": ready_model.model_id, "sample_ids": ids[0:2], "callback_url": "http://8.8.8.8/hook"},
        {"model_id": ready_model.model_id, "sample_ids": ids[2:4], "callback_url": "http://10.1.2.3/hook"},
        {"model_id": ready_model.model_id, "sample_ids": ids[4:6]},
        {"model_id": ready_model.model_id, "sample_ids": ids[6:8], "callback_url": "http://[::1]/x"},
    ]
    response = api().post("/v1/deletion-requests/batch", json={"requests": items}, headers=admin)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert [result["status"] for result in answer["results"]] == [202, 422, 202, 422]
    for index in (1, 3):
        problem = answer["results"][index]["problem"]
        assert [error["field"] for error in problem["errors"]] == [f"requests.{index}.callback_url"], problem
    assert count_rows(db, "deletion_requests") == 2 and count_rows(db, "callback_outbox") == 1


def test_a_name_that_does_not_resolve_is_422_and_a_failing_resolver_503(
    api, admin, ready_model, db, monkeypatch
) -> None:
    body = {
        "model_id": ready_model.model_id,
        "sample_ids": ready_model.train_ids[:2],
        "callback_url": "https://hooks.no-such-host.invalid/unlearn",
    }
    client = api()
    assert_problem(client.post("/v1/deletion-requests", json=body, headers=admin), 422, "callback_url")

    def resolver_down(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", resolver_down)
    unavailable = client.post("/v1/deletion-requests", json=body, headers=admin)
    assert_problem(unavailable, 503, "callback_url")
    assert unavailable.headers["Retry-After"].isdigit()
    assert count_rows(db, "deletion_requests") == 0
