"""Evidence tests reuse the API fixtures (a migrated database, the app, API keys, a ready model) from
tests/api/conftest.py, loaded under their own module name so both directories can run in one session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_TESTS = Path(__file__).resolve().parents[1]
_api = _load("unlearn_api_fixtures", _TESTS / "api" / "conftest.py")

database_url = _api.database_url
db = _api.db
settings = _api.settings
enqueued = _api.enqueued
client = _api.client
keys = _api.keys
admin = _api.admin
digits_dataset = _api.digits_dataset
ready_model = _api.ready_model
