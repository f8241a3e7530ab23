"""Evidence tests reuse the API fixtures (a migrated database, the app, API keys, a ready model) from
tests/api/conftest.py, loaded under their own module name so both directories can run in one session."""

from __future__ import annotations

from load_by_path import TESTS, load_module

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
