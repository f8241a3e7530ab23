"""Evidence tests reuse the API fixtures (a migrated database, the app, API keys, a ready model) from
tests/api/conftest.py, loaded under their own module name so both directories can run in one session."""

from __future__ import annotations

from typing import Any

import pytest
from evidence_helpers import Succeeded, succeed_request, synthetic_report
from load_by_path import TESTS, load_module

from core.storage import local_path

_api = load_module("unlearn_api_fixtures", TESTS / "api" / "conftest.py")

database_url = _api.database_url
db = _api.db
settings = _api.settings
enqueued = _api.enqueued
client = _api.client
keys = _api.keys
admin = _api.admin
digits_dataset = _api.digits_dataset
ready_model = _api.ready_model


@pytest.fixture
def succeeded(client: Any, admin: dict[str, str], ready_model: Any, settings: Any) -> Succeeded:
    """A succeeded request for seven training samples of the ready model, with a synthetic report."""
    body = {
        "model_id": ready_model.model_id,
        "sample_ids": ready_model.train_ids[10:17],
        "external_ref": "gdpr-ticket-42",
    }
    response = client.post("/v1/deletion-requests", json=body, headers=admin)
    assert response.status_code == 202, response.text
    report = synthetic_report().to_dict()
    return succeed_request(
        settings.database_url, local_path(settings.artifact_url), response.json()["id"], report
    )
