"""Sync or async handlers? The same GET of one deletion request served four ways by one uvicorn app, each
driven by `wrk` in turn, with the API's CPU per request (utime + stime of the uvicorn processes):

- `sync-orm`:   `def` handler (FastAPI runs it in the threadpool), SQLAlchemy ORM session, `get`;
- `sync-core`:  `async def` handler, one threadpool call, SQLAlchemy Core select on an autocommit engine
                (what GET /v1/deletion-requests/{id} does);
- `async-sa`:   `async def` handler, SQLAlchemy asyncio engine (psycopg async, greenlet), Core select
                (skipped without `greenlet`: `pip install greenlet`);
- `async-pg`:   `async def` handler, psycopg AsyncConnectionPool, one prepared SQL statement.

Each serves `DeletionRequestOut` from the row, like the API. No auth, no middleware: the difference is
the handler's concurrency model and the database layer alone.

    .venv/bin/python bench/sync_vs_async.py [--workers 2] [--duration 5] [--connections 16,64]

The figures that decided the API's design are in README ("Load and outages").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load_api import _cpu_seconds, _tree, admin_key, free_port, new_model, throwaway_database  # noqa: E402

try:
    import greenlet  # noqa: F401  (SQLAlchemy's asyncio layer needs it)

    VARIANTS: tuple[str, ...] = ("sync-orm", "sync-core", "async-sa", "async-pg")
except ImportError:
    VARIANTS = ("sync-orm", "sync-core", "async-pg")

LUA = r"""
local threads = {}
local counter = 0
function setup(thread) thread:set("tid", counter); counter = counter + 1; table.insert(threads, thread) end
function init(args)
  prefix = args[1]
  ids = {}
  for line in io.lines(args[2]) do table.insert(ids, line) end
  n = tid * 7919
  bad = 0
end
function request()
  n = n + 1
  return wrk.format("GET", prefix .. ids[(n % #ids) + 1])
end
function response(status) if status ~= 200 then bad = bad + 1 end end
function done(summary, latency)
  local total_bad = 0
  for _, t in ipairs(threads) do total_bad = total_bad + t:get("bad") end
  io.write(string.format('WRK_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"bad":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), total_bad))
end
"""


def create_app() -> Any:
    """The app uvicorn serves (`--factory bench.sync_vs_async:create_app`); UNLEARN_DATABASE_URL."""
    from fastapi import FastAPI, Response
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.orm import Session
    from starlette.concurrency import run_in_threadpool

    from core.db.models import DeletionRequest
    from core.db.session import get_engine, get_read_engine
    from core.resources import DeletionRequestOut

    url = os.environ["UNLEARN_DATABASE_URL"]
    engine = get_engine(url, pool_size=10, max_overflow=2, pre_ping=False)
    read_engine = get_read_engine(url, pool_size=10, max_overflow=2, pre_ping=False)
    async_engine = (
        create_async_engine(
            url, pool_size=10, max_overflow=2, isolation_level="AUTOCOMMIT", pool_pre_ping=False
        )
        if "async-sa" in VARIANTS
        else None
    )
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    pool = AsyncConnectionPool(conninfo, min_size=10, max_size=10, open=False, kwargs={"autocommit": True})
    table = DeletionRequest.__table__
    sql = "SELECT * FROM deletion_requests WHERE id = %s"

    def respond(row: Any) -> Response:
        out = DeletionRequestOut.model_validate(row)
        return Response(out.model_dump_json(by_alias=True), media_type="application/json")

    app = FastAPI()

    @app.on_event("startup")
    async def open_pool() -> None:
        await pool.open()

    @app.get("/sync-orm/{request_id}")
    def sync_orm(request_id: str) -> Response:
        with Session(engine) as session:
            return respond(session.get(DeletionRequest, request_id))

    @app.get("/sync-core/{request_id}")
    async def sync_core(request_id: str) -> Response:
        def read() -> Any:
            with read_engine.connect() as connection:
                return connection.execute(select(table).where(table.c.id == request_id)).one()

        return respond(await run_in_threadpool(read))

    @app.get("/async-sa/{request_id}")
    async def async_sa(request_id: str) -> Response:
        assert async_engine is not None
        async with async_engine.connect() as connection:
            row = (await connection.execute(select(table).where(table.c.id == request_id))).one()
        return respond(row)

    class Row(dict):  # type: ignore[type-arg]
        __getattr__ = dict.__getitem__

    @app.get("/async-pg/{request_id}")
    async def async_pg(request_id: str) -> Response:
        async with pool.connection() as connection:
            cursor = connection.cursor(row_factory=dict_row)
            await cursor.execute(sql, (request_id,), prepare=True)
            row = await cursor.fetchone()
        return respond(Row(row))

    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sync-async-")))
        url = stack.enter_context(throwaway_database(args.database_url))
        ids = seed(url, tmp)
        port = free_port()
        env = {**os.environ, "UNLEARN_DATABASE_URL": url, "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "uvicorn", "--factory", "bench.sync_vs_async:create_app"]
        server = subprocess.Popen(
            [*command, "--port", str(port), "--workers", str(args.workers), "--loop", "uvloop", "--http",
             "httptools", "--no-access-log", "--log-level", "warning"],
            cwd=REPO, env=env, start_new_session=True,
        )  # fmt: skip
        stack.callback(lambda: (os.killpg(server.pid, 15), server.wait(timeout=20)))
        time.sleep(4)
        script = tmp / "get.lua"
        script.write_text(LUA)
        print(f"{'variant':<10} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'api cpu ms/req':>15}")
        for connections in [int(c) for c in args.connections.split(",")]:
            for variant in VARIANTS:
                pids = _tree(server.pid)
                before = _cpu_seconds(pids)
                output = subprocess.run(
                    ["wrk", "-t", "2", "-c", str(connections), "-d", f"{args.duration}s", "-s", str(script),
                     f"http://127.0.0.1:{port}", "--", f"/{variant}/", str(ids)],
                    capture_output=True, text=True, check=True,
                ).stdout  # fmt: skip
                line = next(x for x in output.splitlines() if x.startswith("WRK_RESULT "))
                result = json.loads(line.removeprefix("WRK_RESULT "))
                cpu_ms = (_cpu_seconds(pids) - before) / max(1, result["requests"]) * 1000
                row = {
                    "variant": variant,
                    "connections": connections,
                    "rps": round(result["requests"] / (result["duration_us"] / 1e6), 1),
                    "p50_ms": round(result["p50_us"] / 1000, 1),
                    "p99_ms": round(result["p99_us"] / 1000, 1),
                    "api_cpu_ms": round(cpu_ms, 3),
                    "non_200": result["bad"],
                }
                results.append(row)
                print(
                    f"{variant:<10} {connections:>5} {row['rps']:>8.1f} {row['p50_ms']:>7.1f} "
                    f"{row['p99_ms']:>7.1f} {row['api_cpu_ms']:>15.3f}"
                    + (f"  non-200: {row['non_200']}" if row["non_200"] else ""),
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def seed(url: str, tmp: Path) -> Path:
    """A dataset, a model and 2,000 requests; their ids, one per line."""
    from sqlalchemy import text

    from app.deletion.intake import store_accepted
    from app.deletion.schemas import DeletionRequestCreate
    from core.db.models import RequestKind
    from core.db.session import session_scope

    admin_key(url)
    with session_scope(url) as session:
        session.execute(
            text(
                "INSERT INTO datasets (id, name, format, options, num_classes, class_names, split_counts, "
                "created_at) VALUES ('ds_bench', 'bench', 'npz', '{}', 10, '[]', '{}', now())"
            )
        )
    model_id = new_model(url, "ds_bench", tmp)
    from app.deletion.intake import Accepted

    with session_scope(url) as session:
        accepted = [
            Accepted(
                body=DeletionRequestCreate(model_id=model_id, sample_ids=[f"s{i}"], external_ref=f"r{i}"),
                kind=RequestKind.samples,
                forget_class=None,
                pending=[("s", f"s{i}")],
            )
            for i in range(2000)
        ]
        store_accepted(session, accepted)
        ids = [item.request.id for item in accepted if item.request is not None]
    path = tmp / "ids.txt"
    path.write_text("\n".join(ids) + "\n")
    return path


if __name__ == "__main__":
    main()
