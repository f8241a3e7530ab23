"""tests/api/api_helpers.py under its own module name (this directory is not on the API tests' path)."""

from __future__ import annotations

from load_by_path import TESTS, load_module

_api_helpers = load_module("unlearn_api_helpers", TESTS / "api" / "api_helpers.py")

assert_problem = _api_helpers.assert_problem
count_rows = _api_helpers.count_rows
