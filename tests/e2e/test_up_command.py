"""`unlearn up` as a user runs it: a real process tree started from the CLI, stopped with Ctrl-C (SIGINT)
or SIGTERM, leaving no process behind, and its data kept in the var dir for the next `unlearn up`."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cli.stack import free_tcp_port, redis_ping

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is left (the worker leads its own group, pool children included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class UpProcess:
    def __init__(self, var_dir: Path, port: int, log: Path) -> None:
        self.var_dir, self.port, self.log = var_dir, port, log
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        for variable in ("UNLEARN_DATABASE_URL", "UNLEARN_BROKER_URL", "UNLEARN_VAR_DIR"):
            env.pop(variable, None)
        self.handle = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "up",
                "--port",
                str(port),
                "--var-dir",
                str(var_dir),
                "--torch-threads",
                "1",
            ],
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            env=env,
            # as a background job of a non-interactive shell starts it (CI, nohup ... &): SIGINT ignored,
            # which Python keeps unless the program sets its own handler; Ctrl-C must still stop it
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # noqa: PLW1509
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_up(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"unlearn up exited early:\n{self.log.read_text()}"
            if "is up" in self.log.read_text():
                return
            time.sleep(0.2)
        raise AssertionError(f"unlearn up did not come up in {timeout_s} s:\n{self.log.read_text()}")

    def stop(self, signum: int) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.handle.close()


def test_up_serves_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    first = UpProcess(var_dir, free_tcp_port(), tmp_path / "up-1.log")
    try:
        first.wait_up()
        key_file = var_dir / "admin-key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert key in first.log.read_text(), "the admin key is printed"
        assert first.url in first.log.read_text(), "the URL is printed"
        client = httpx.Client(base_url=first.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        created = client.post("/v1/datasets", json={"name": "digits", "format": "digits"})
        assert created.status_code == 201, created.text
        worker_pid = int((var_dir / "worker.ready").read_text())
        assert group_alive(worker_pid)
    finally:
        code = first.stop(signal.SIGINT)
    assert code == 0, first.log.read_text()
    assert "stopped." in first.log.read_text()
    assert not group_alive(worker_pid), "the Celery worker (or a pool child) outlived `unlearn up`"
    assert not redis_ping(var_dir / "redis.sock"), "the Redis server outlived `unlearn up`"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{first.url}/healthz", timeout=2)

    # A later `unlearn up` in the same directory shows the same data and accepts the same key.
    second = UpProcess(var_dir, free_tcp_port(), tmp_path / "up-2.log")
    try:
        second.wait_up()
        assert (var_dir / "admin-key").read_text().strip() == key
        listed = httpx.get(
            f"{second.url}/v1/datasets", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert [dataset["name"] for dataset in listed.json()["data"]] == ["digits"]
        worker_pid = int((var_dir / "worker.ready").read_text())
    finally:
        code = second.stop(signal.SIGTERM)
    assert code == 0, second.log.read_text()
    assert not group_alive(worker_pid)
    assert not redis_ping(var_dir / "redis.sock")
