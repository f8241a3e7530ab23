"""Turn audit dataclasses into plain JSON values, refusing NaN and infinity instead of emitting them."""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

JSON_EXCLUDE = {"json": False}
"""Field metadata that keeps a dataclass field (e.g. raw probabilities) out of the JSON form."""


def to_jsonable(value: Any, path: str = "$") -> Any:
    """Recursively convert dataclasses, mappings, sequences and numpy values; `path` names the culprit."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_jsonable(getattr(value, f.name), f"{path}.{f.name}")
            for f in dataclasses.fields(value)
            if f.metadata.get("json", True)
        }
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), path)
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            raise ValueError(f"non-finite number {value} at {path}")
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot convert {type(value).__name__} at {path} to JSON")
