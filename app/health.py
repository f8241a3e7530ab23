from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from app.api.deps import SettingsDep
from app.errors import ProblemError, error_item
from app.queue import broker_ping
from core.db.session import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Database or broker unreachable."}})
def readyz(request: Request, settings: SettingsDep) -> dict[str, str]:
    """The database answers a query and the broker accepts a connection."""
    problems = []
    try:
        with get_engine(settings.database_url).connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        problems.append(error_item("database", f"{type(error).__name__}: {error}"[:300], where="service"))
    checker = getattr(request.app.state, "broker_ping", None) or broker_ping
    reason = checker(settings.broker_url)
    if reason is not None:
        problems.append(error_item("broker", reason, where="service"))
    if problems:
        raise ProblemError(
            503,
            "not ready: " + ", ".join(p.field for p in problems) + " unreachable",
            slug="not-ready",
            errors=problems,
        )
    return {"status": "ready"}


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: request counts by route/method/status and latency histograms."""
    return request.app.state.metrics.render()  # type: ignore[no-any-return]
