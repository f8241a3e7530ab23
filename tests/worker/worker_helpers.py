"""Helpers the worker tests import: seeded-model record, a fast DAU budget, queued-request factory, claim."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.jobs import ClaimOutcome


def _load_services() -> Any:
    """tests/worker/services.py under a unique module name (tests/e2e loads the same file)."""
    name = "unlearn_test_services"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("services.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


services = _load_services()


@dataclass(frozen=True)
class SeededModel:
    model_id: str
    dataset_id: str
    version_id: str
    train_ids: list[str]


FAST_DAU: dict[str, Any] = {
    "iterations": 4,
    "attacker_warmup": 4,
    "batch_size": 32,
    "eval_every": 2,
    "retain_probe": 32,
    "sensitivity_copies": 1,
    "attacker": {"token_dim": 8, "layers": 1, "heads": 2, "ff_dim": 16, "hidden_dim": 8},
}
"""A DAU budget of well under a second on digits: the worker tests test the plumbing, not the method."""


def add_request(
    database_url: str,
    model_id: str,
    sample_ids: list[str] | None = None,
    *,
    forget_class: int | None = None,
    params: dict[str, Any] | None = None,
    method: str = "dau",
    age_s: float = 0.0,
) -> str:
    """A queued deletion request as the API would store it (received `age_s` seconds ago)."""
    import hashlib
    import json

    from core.db import DeletionRequest, RequestKind, RequestStatus, session_scope, utcnow

    received = utcnow() - timedelta(seconds=age_s)
    body = {"sample_ids": sample_ids, "class": forget_class, "params": params}
    with session_scope(database_url) as session:
        request = DeletionRequest(
            model_id=model_id,
            kind=RequestKind.class_ if forget_class is not None else RequestKind.samples,
            sample_ids=sample_ids,
            forget_class=forget_class,
            method=method,
            params=dict(FAST_DAU if params is None and method == "dau" else params or {}),
            status=RequestStatus.queued,
            received_at=received,
            due_at=received + timedelta(days=30),
            request_hash=hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest(),
        )
        session.add(request)
        session.flush()
        return request.id


def claim(settings: Any, model_id: str, worker_id: str) -> ClaimOutcome:
    """One unlearning claim by `worker_id`, committed, as the worker's task makes it."""
    from core.db import JobKind, session_scope
    from core.jobs.loop import claim_job

    with session_scope(settings.database_url) as session:
        return claim_job(session, JobKind.unlearn, model_id, worker_id, settings)
