"""`unlearn api --workers 2`: one scrape of either process counts the requests both served.

The test keeps sending requests, on fresh connections, until each of the two processes has served some
(read from each process's own multiprocess file), so a per-process registry could not pass it. With JSON
logs, uvicorn's supervisor writes JSON lines too (its own logging, outside the app's processes)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cli.stack import ChildProcess, free_tcp_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

HEALTHZ_COUNT = re.compile(r'^unlearn_http_requests_total\{[^}]*route="/healthz"[^}]*\} (\S+)$', re.MULTILINE)


@pytest.fixture
def two_process_api(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_tcp_port()
    metrics_dir = tmp_path / "prometheus"
    env = {
        **os.environ,
        "UNLEARN_VAR_DIR": str(tmp_path / "var"),
        "UNLEARN_LOG_LEVEL": "INFO",
        "UNLEARN_LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    (metrics_dir).mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's file: emptied at start
    argv = [sys.executable, "-m", "cli.main", "api", "--port", str(port), "--workers", "2"]
    api = ChildProcess("api", argv, env, tmp_path / "api.log")
    api.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ok(f"{url}/healthz"), timeout_s=120, what="the API", check=api.check_alive)
        yield url, metrics_dir
    finally:
        api.stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _healthz_by_process(metrics_dir: Path) -> dict[str, float]:
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        total = 0.0
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            for sample in metric.samples:
                if sample.name == "unlearn_http_requests_total" and sample.labels["route"] == "/healthz":
                    total += sample.value
        counts[path.stem] = total
    return counts


def _get(url: str) -> int:
    return httpx.get(url, headers={"Connection": "close"}, timeout=10).status_code


def test_one_scrape_counts_the_requests_of_every_api_process(
    two_process_api: tuple[str, Path], tmp_path: Path
) -> None:
    url, metrics_dir = two_process_api
    assert not (metrics_dir / "counter_1.db").exists()
    probes = 1  # the readiness poll's last /healthz
    with ThreadPoolExecutor(4) as pool:
        for _ in range(50):
            statuses = list(pool.map(_get, [f"{url}/healthz"] * 8))
            assert statuses == [200] * 8
            probes += 8
            served = _healthz_by_process(metrics_dir)
            if len([count for count in served.values() if count > 0]) >= 2:
                break
    # a process counts a request after its response is sent: the last few may land a moment later
    deadline = time.monotonic() + 10
    while sum((served := _healthz_by_process(metrics_dir)).values()) < probes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len([count for count in served.values() if count > 0]) == 2, served
    total_served = sum(served.values())
    assert total_served >= probes  # the wait_until probes before readiness add a few

    for _ in range(4):  # several scrapes land on both processes; each one counts everything
        text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}, timeout=10).text
        assert sum(float(value) for value in HEALTHZ_COUNT.findall(text)) == total_served
    # The worker's heartbeat is the worker's: an API that exported one (at 0) would trip the alert.
    assert "unlearn_worker_heartbeat_timestamp_seconds" not in text

    raw_lines = [raw for raw in (tmp_path / "api.log").read_text().splitlines() if raw.strip()]
    assert [raw for raw in raw_lines if not raw.startswith("{")] == []
    messages = [json.loads(raw)["message"] for raw in raw_lines]
    assert any(message.startswith("Started parent process") for message in messages)
