"""Unlearning methods behind one interface (`base.py`), each registered by name on import.

Add a method: a module with a `MethodConfig` subclass and a class with `name`, `Config` and `run`, that
calls `register(...)` once; import it below.
"""

from unlearning.methods import condensation, dau, ff, ft, ga, iu, l1_sparse, multigan, retrain, salun, scrub  # noqa: F401
from unlearning.methods.base import (
    MethodConfig,
    UnknownMethodError,
    UnlearningMethod,
    available_methods,
    get_method,
    parse_params,
    register,
)

__all__ = [
    "MethodConfig",
    "UnknownMethodError",
    "UnlearningMethod",
    "available_methods",
    "get_method",
    "parse_params",
    "register",
]
