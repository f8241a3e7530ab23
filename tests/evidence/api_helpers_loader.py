"""tests/api/api_helpers.py under its own module name (this directory is not on the API tests' path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "unlearn_api_helpers"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).resolve().parents[1] / "api" / "api_helpers.py"
    )
    assert _spec is not None and _spec.loader is not None
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])

assert_problem = sys.modules[_NAME].assert_problem
count_rows = sys.modules[_NAME].count_rows
