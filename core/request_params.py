"""A deletion request's `params`: the method's hyperparameters plus the audit's own `reference` option.

The API validates them at POST and the worker reads them at run time, both through `split_reference`.
"""

from typing import Any

REFERENCE_PARAM = "reference"
AUDIT_REFERENCES = ("retrain",)
"""`"reference": "retrain"` adds a retrained model to the audit, as the yardstick of the new version."""


def split_reference(params: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(the audit reference or None, the method's own params); ValueError on an unknown reference."""
    method_params = dict(params)
    reference = method_params.pop(REFERENCE_PARAM, None)
    if reference is not None and reference not in AUDIT_REFERENCES:
        raise ValueError(
            f"params.{REFERENCE_PARAM} must be one of {list(AUDIT_REFERENCES)} or absent, got {reference!r}"
        )
    return reference, method_params
