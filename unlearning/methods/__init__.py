"""Unlearning methods behind one interface (`base.py`), selected by name.

Importing this package loads no method (and no torch): `get_method(name)` imports a built-in method's
module on first use, and params are validated against its torch-free config module.

Add a method: a torch-free `MethodConfig` subclass, a module with a class with `name`, `Config` and `run`
that calls `register(...)` once, and a row in `base.BUILTIN_METHODS`. Subclassing `common.Method` gives
the class its `run`: it then implements `unlearn(job)`, the algorithm alone.
"""

from unlearning.methods.base import (
    BUILTIN_METHODS,
    MethodConfig,
    UnknownMethodError,
    UnlearningMethod,
    available_methods,
    config_class,
    get_method,
    parse_params,
    register,
)

__all__ = [
    "BUILTIN_METHODS",
    "MethodConfig",
    "UnknownMethodError",
    "UnlearningMethod",
    "available_methods",
    "config_class",
    "get_method",
    "parse_params",
    "register",
]
