"""The write path under load: the real stack (uvicorn with N processes, PostgreSQL, Redis; no worker)
driven by `wrk`, for POST /v1/deletion-requests (1-5 fresh ids each), the batch endpoint (1,000 items of
1-3 fresh ids) and GET of one request, at each connection count, on a model with no pending request and
on one with `--preload` (10,000) pending requests. Prints req/s, p50/p95/p99 and answers by status per
cell, then checks that the rows equal the accepted answers (nothing lost, nothing doubled).

    .venv/bin/python bench/load_api.py [--workers 2] [--duration 5] [--connections 16,64,256]
        [--scenarios post,batch,get] [--preload 10000] [--json FILE]

Needs `wrk` (apt-get install wrk), PostgreSQL (`--database-url`, a server where it may create and drop a
throw-away database) and Redis (`--redis-url`; the bench uses its own queue name and deletes its keys).
Each cell uses a fresh model on one registered npz dataset (`--samples` ids), so what one cell leaves
pending does not weigh on the next; the "pending" cells preload theirs through the batch endpoint.
Timed figures belong here, never in tests (tests/api/test_api_load_burst.py checks the same
invariants at 64+ concurrent requests without timing anything).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_wrk import ID_FORMAT, LUA_BATCH, LUA_GET, LUA_POST, run_wrk  # noqa: E402


@dataclass
class Cell:
    scenario: str
    pending: int
    connections: int
    model_id: str = ""
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    items_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    accepted: int = 0
    api_cpu_ms: float = 0.0
    api_sys_ms: float = 0.0
    db_cpu_ms: float = 0.0
    """CPU per answered request of the uvicorn processes and of every PostgreSQL process."""
    rows: int | None = None
    check: str = ""


def _cpu_seconds(pids: list[int], fields_at: tuple[int, ...] = (11, 12)) -> float:
    """utime + stime (or the fields asked for) of the processes, in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(fields[at]) for at in fields_at)
    return total / ticks


def wait_idle(pids: list[int], limit_s: float = 120.0) -> None:
    """Until the processes use less than a tenth of a core (the previous cell's work is done)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = _cpu_seconds(pids)
        time.sleep(0.5)
        if _cpu_seconds(pids) - before < 0.05:
            return


def _tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    if children.exists():
        for child in children.read_text().split():
            found += _tree(int(child))
    return found


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in ("postgres", "postmaster"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def throwaway_database(server_url: str) -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    from core.db.migrate import upgrade
    from core.db.session import dispose_engine

    parsed = make_url(server_url)
    name = f"unlearn_bench_{uuid.uuid4().hex[:10]}"
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = parsed.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_engine(url)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def write_dataset(path: Path, samples: int) -> None:
    import numpy as np

    ids = np.array([ID_FORMAT % i for i in range(samples)])
    split = np.full(samples, "train")
    split[-100:] = "test"
    np.savez(
        path, x=np.zeros((samples, 1), dtype=np.uint8), y=np.arange(samples) % 10, sample_id=ids, split=split
    )


def admin_key(database_url: str) -> str:
    from app.auth import issue_api_key
    from core.db.session import session_scope

    with session_scope(database_url) as session:
        return issue_api_key(session, "bench", "admin")[1]


def new_model(database_url: str, dataset_id: str, artifacts: Path) -> str:
    """A ready model (version 1 an opaque file: the API never loads it), made the way an upload is."""
    from core import lifecycle
    from core.db.audit import AuditEventType
    from core.db.models import Model, ModelStatus
    from core.db.session import session_scope

    with session_scope(database_url) as session:
        model = Model(name="bench", architecture="mlp", dataset_id=dataset_id)
        lifecycle.model_created(
            session, model, ModelStatus.ready, actor="bench", event=AuditEventType.model_registered, data={}
        )
        path = artifacts / f"{model.id}.safetensors"
        path.write_bytes(b"bench")
        lifecycle.version_created(
            session, model, checkpoint_uri=str(path), sha256="0" * 64, size_bytes=5, method="upload"
        )
        return model.id


class Stack:
    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        import httpx

        self.args = args
        self.tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-api-")))
        self.database_url = stack.enter_context(throwaway_database(args.database_url))
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.key = admin_key(self.database_url)
        self.env = {
            **os.environ,
            "UNLEARN_ENV": "test",  # no model-check child (torch) per process: nothing is uploaded here
            "UNLEARN_DATABASE_URL": self.database_url,
            "UNLEARN_BROKER_URL": args.redis_url,
            "UNLEARN_QUEUE_NAME": self.queue,
            "UNLEARN_VAR_DIR": str(self.tmp / "var"),
            "UNLEARN_CHECKPOINT_INTERVAL_S": "0",
            "UNLEARN_RATE_LIMIT": "1000000/second",
            "UNLEARN_MAX_SAMPLE_IDS": "10000",
            **dict(item.split("=", 1) for item in args.env),
        }
        self.server = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
                "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(args.workers),
                "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                "--backlog", "4096",
            ],
            cwd=REPO,
            env=self.env,
            start_new_session=True,
        )  # fmt: skip
        stack.callback(self.stop)
        stack.callback(self.clean_redis)
        self.http = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.key}"}, timeout=600
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise SystemExit("uvicorn did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)

    def clean_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.args.redis_url)
        keys = [self.queue, *client.scan_iter(f"unlearn:queued:{self.queue}:*")]
        client.delete(*keys)

    def register_dataset(self, samples: int) -> str:
        path = self.tmp / "var" / "datasets" / "bench.npz"  # under the default UNLEARN_DATASET_ROOTS
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dataset(path, samples)
        started = time.perf_counter()
        response = self.http.post("/v1/datasets", json={"name": "bench", "format": "npz", "uri": str(path)})
        response.raise_for_status()
        print(f"dataset of {samples} ids registered in {time.perf_counter() - started:.1f} s", flush=True)
        return str(response.json()["id"])

    def preload(self, model_id: str, count: int, top: int) -> None:
        """`count` pending requests of 1 id each, from the top of the id range down (batch endpoint)."""
        for start in range(0, count, 1000):
            items = [
                {"model_id": model_id, "sample_ids": [ID_FORMAT % (top - i)], "external_ref": f"pre-{i}"}
                for i in range(start, min(start + 1000, count))
            ]
            response = self.http.post("/v1/deletion-requests/batch", json={"requests": items})
            response.raise_for_status()
            assert response.json()["accepted"] == len(items), response.text[:500]


def stored_refs(database_url: str, model_id: str, tag: str) -> list[str]:
    """external_ref of every request of the model that carries the cell's tag (doubles included)."""
    from sqlalchemy import text

    from core.db.session import session_scope

    with session_scope(database_url, readonly=True) as session:
        return list(
            session.execute(
                text(
                    "SELECT external_ref FROM deletion_requests "
                    "WHERE model_id = :m AND external_ref LIKE :tag"
                ),
                {"m": model_id, "tag": f"{tag}-%"},
            ).scalars()
        )


def check_rows(accepted: list[str], stored: list[str], in_flight: int) -> str:
    """Every accepted answer has exactly one row; rows without an answer are at most the requests that
    were in flight when wrk stopped (their answers were dropped, their transactions committed)."""
    problems = []
    counts: dict[str, int] = {}
    for ref in stored:
        counts[ref] = counts.get(ref, 0) + 1
    doubled = sum(1 for count in counts.values() if count > 1)
    lost = sum(1 for ref in accepted if ref not in counts)
    unanswered = len(set(counts) - set(accepted))
    if doubled:
        problems.append(f"{doubled} doubled")
    if lost:
        problems.append(f"{lost} accepted but not stored")
    if len(set(accepted)) != len(accepted):
        problems.append("an answer repeated")
    if unanswered > in_flight:
        problems.append(f"{unanswered} stored without an answer (more than the {in_flight} in flight)")
    return "; ".join(problems) or f"ok ({len(counts)} rows, {unanswered} in flight at the stop)"


def pending_consistent(database_url: str, model_id: str) -> bool:
    """Every sample id of the model's queued requests has exactly its pending row (one statement, tried
    for a while: a transaction that was in flight when wrk stopped may still commit)."""
    from sqlalchemy import text

    from core.db.session import session_scope

    statement = text(
        "SELECT (SELECT COALESCE(SUM(json_array_length(sample_ids)), 0) FROM deletion_requests "
        "WHERE model_id = :m AND status IN ('queued', 'running')) = "
        "(SELECT COUNT(*) FROM pending_items WHERE model_id = :m)"
    )
    for _ in range(30):
        with session_scope(database_url, readonly=True) as session:
            if session.execute(statement, {"m": model_id}).scalar_one():
                return True
        time.sleep(1)
    return False


def request_ids(database_url: str, limit: int) -> list[str]:
    from sqlalchemy import text

    from core.db.session import session_scope

    with session_scope(database_url, readonly=True) as session:
        return list(
            session.execute(text("SELECT id FROM deletion_requests ORDER BY random() LIMIT :n"), {"n": limit})
            .scalars()
            .all()
        )


def run(args: argparse.Namespace) -> list[Cell]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    cells: list[Cell] = []
    with ExitStack() as stack:
        bench = Stack(args, stack)
        dataset_id = bench.register_dataset(args.samples)
        train_top = args.samples - 101
        artifacts = bench.tmp / "artifacts"
        artifacts.mkdir()
        span = (train_top - args.preload) // 2 - 1  # ids per wrk thread (2 threads), below the preloaded ones
        warm_up(bench, dataset_id, artifacts, span, args.batch_size)
        for pending in args.pending:
            for scenario in args.scenarios:
                for connections in args.connections:
                    cell = Cell(scenario, pending, connections)
                    tag = f"{scenario}{pending}c{connections}"
                    if scenario == "get":
                        if not request_ids(bench.database_url, 1):
                            bench.preload(
                                new_model(bench.database_url, dataset_id, artifacts), 1000, train_top
                            )
                        ids_file = bench.tmp / "ids.txt"
                        ids_file.write_text("\n".join(request_ids(bench.database_url, 5000)) + "\n")
                        wrk_args = ["-", bench.key, str(ids_file)]
                        script = LUA_GET
                    else:
                        cell.model_id = new_model(bench.database_url, dataset_id, artifacts)
                        if pending:
                            bench.preload(cell.model_id, pending, train_top)
                        wrk_args = [cell.model_id, bench.key, tag, "0", str(span)]
                        script = LUA_POST
                        if scenario == "batch":
                            wrk_args.append(str(args.batch_size))
                            script = LUA_BATCH
                    profile = None
                    if args.profile_dir is not None:
                        args.profile_dir.mkdir(parents=True, exist_ok=True)
                        profile = (bench.server.pid, args.profile_dir / f"{tag}.txt")
                    api_pids = _tree(bench.server.pid)
                    wait_idle(api_pids)
                    api_before, db_before = _cpu_seconds(api_pids), _cpu_seconds(_postgres_pids())
                    api_sys_before = _cpu_seconds(api_pids, (12,))
                    result = run_wrk(
                        script, bench.base, connections, args.duration, wrk_args, bench.tmp, profile
                    )
                    answered = max(1, sum(result["statuses"].values()))
                    cell.api_cpu_ms = round((_cpu_seconds(api_pids) - api_before) / answered * 1000, 2)
                    cell.db_cpu_ms = round((_cpu_seconds(_postgres_pids()) - db_before) / answered * 1000, 2)
                    cell.api_sys_ms = round(
                        (_cpu_seconds(api_pids, (12,)) - api_sys_before) / answered * 1000, 2
                    )
                    seconds = result["duration_us"] / 1e6
                    cell.requests = result["requests"]
                    cell.seconds = round(seconds, 2)
                    cell.rps = round(result["requests"] / seconds, 1)
                    cell.accepted = result["accepted"]
                    cell.items_per_s = round(result["accepted"] / seconds, 1)
                    cell.p50_ms, cell.p95_ms, cell.p99_ms, cell.max_ms = (
                        round(result[name] / 1000, 1) for name in ("p50_us", "p95_us", "p99_us", "max_us")
                    )
                    cell.statuses = dict(sorted(result["statuses"].items()))
                    cell.socket_errors = {k: v for k, v in result["socket_errors"].items() if v}
                    if scenario != "get":
                        pending_ok = pending_consistent(bench.database_url, cell.model_id)  # settles too
                        stored = stored_refs(bench.database_url, cell.model_id, tag)
                        cell.rows = len(stored)
                        in_flight = connections * (args.batch_size if scenario == "batch" else 1)
                        cell.check = check_rows(result["refs"], stored, in_flight)
                        if not pending_ok:
                            cell.check += "; pending_items disagree with the queued requests"
                    cells.append(cell)
                    print(format_row(cell), flush=True)
    return cells


def warm_up(bench: Stack, dataset_id: str, artifacts: Path, span: int, batch_size: int) -> None:
    """Two seconds of each endpoint, not measured: first-use imports, prepared statements, pools."""
    for script, extra in ((LUA_POST, []), (LUA_BATCH, [str(batch_size)])):
        model_id = new_model(bench.database_url, dataset_id, artifacts)
        run_wrk(script, bench.base, 16, 2, [model_id, bench.key, "warm", "0", str(span), *extra], bench.tmp)
    ids_file = bench.tmp / "ids.txt"
    ids_file.write_text("\n".join(request_ids(bench.database_url, 5000)) + "\n")
    run_wrk(LUA_GET, bench.base, 16, 2, ["-", bench.key, str(ids_file)], bench.tmp)
    wait_idle(_tree(bench.server.pid))


HEADER = (
    f"{'endpoint':<6} {'pending':>7} {'conns':>5} {'req/s':>8} {'items/s':>8} {'p50 ms':>7} {'p95 ms':>7} "
    f"{'p99 ms':>7} {'max ms':>7} {'api cpu':>7} {'db cpu':>7}  statuses / socket errors / rows check"
)


def format_row(cell: Cell) -> str:
    statuses = " ".join(f"{k}:{v}" for k, v in cell.statuses.items())
    errors = " ".join(f"{k}:{v}" for k, v in cell.socket_errors.items()) or "-"
    return (
        f"{cell.scenario:<6} {cell.pending:>7} {cell.connections:>5} {cell.rps:>8.1f} "
        f"{cell.items_per_s:>8.1f} {cell.p50_ms:>7.1f} {cell.p95_ms:>7.1f} {cell.p99_ms:>7.1f} "
        f"{cell.max_ms:>7.1f} {cell.api_cpu_ms:>7.2f} {cell.db_cpu_ms:>7.2f}  "
        f"{statuses} / {errors} / {cell.check or '-'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn processes")
    parser.add_argument("--duration", type=int, default=5, help="seconds per cell")
    parser.add_argument("--connections", default="16,64,256")
    parser.add_argument("--scenarios", default="post,batch,get")
    parser.add_argument("--pending", default="0,10000", help="pending requests on the model per cell")
    parser.add_argument("--samples", type=int, default=600_000, help="ids in the bench dataset")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--json", type=Path, help="write the cells here too")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the API processes")
    parser.add_argument(
        "--profile-dir",
        type=Path,
        help="py-spy the API processes per cell (collapsed stacks) into this folder",
    )
    args = parser.parse_args()
    args.connections = [int(c) for c in args.connections.split(",")]
    args.scenarios = [s.strip() for s in args.scenarios.split(",")]
    args.pending = [int(p) for p in args.pending.split(",")]
    args.preload = max(args.pending)
    print(f"workers={args.workers} duration={args.duration}s cpus={os.cpu_count()}", flush=True)
    print(HEADER, flush=True)
    cells = run(args)
    print("\n" + HEADER)
    for cell in cells:
        print(format_row(cell))
    for scenario in args.scenarios:
        for connections in args.connections:
            base = [c for c in cells if (c.scenario, c.connections, c.pending) == (scenario, connections, 0)]
            loaded = [
                c for c in cells if (c.scenario, c.connections) == (scenario, connections) and c.pending
            ]
            if base and loaded and base[0].rps:
                ratio = loaded[0].rps / base[0].rps
                print(f"{scenario} at {connections}: {loaded[0].pending} pending / 0 pending = {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps([asdict(cell) for cell in cells], indent=2))


if __name__ == "__main__":
    main()
