"""A deletion request's `params`: the method's hyperparameters plus the service's own options.

- `"reference": "retrain"` adds a retrained model to the audit, as the yardstick of the new version;
- `"allow_retrain": true` lets this request's acceptance ladder end in an exact retrain even where the
  deployment's `retrain_fallback` is off.

The API validates them at POST and the worker reads them at run time, both through `split_reference`.
"""

from typing import Any

REFERENCE_PARAM = "reference"
AUDIT_REFERENCES = ("retrain",)
ALLOW_RETRAIN_PARAM = "allow_retrain"


class ServiceParamError(ValueError):
    """A service-level param of `params` is invalid; `field` names it (`params.reference`)."""

    def __init__(self, field: str, message: str, value: Any) -> None:
        super().__init__(f"{field} {message}, got {value!r}")
        self.field, self.message, self.value = field, message, value


def split_reference(params: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(the audit reference or None, the method's own params); ServiceParamError naming a bad option."""
    method_params = dict(params)
    reference = method_params.pop(REFERENCE_PARAM, None)
    allow_retrain = method_params.pop(ALLOW_RETRAIN_PARAM, False)
    if reference is not None and reference not in AUDIT_REFERENCES:
        message = f"must be one of {list(AUDIT_REFERENCES)} or absent"
        raise ServiceParamError(f"params.{REFERENCE_PARAM}", message, reference)
    if not isinstance(allow_retrain, bool):
        raise ServiceParamError(f"params.{ALLOW_RETRAIN_PARAM}", "must be true or false", allow_retrain)
    return reference, method_params


def allows_retrain(params: dict[str, Any]) -> bool:
    return params.get(ALLOW_RETRAIN_PARAM) is True
