"""Torch-free catalogue for the HTTP edge: the dataset formats and the unlearning methods.

Dataset formats come from their one registry, `unlearning.data.formats`: `list_samples` is the very
function the loaders list a source with before decoding it, so the samples the API stores are the ones
the worker loads. Method names and params models come from `unlearning.methods.base.BUILTIN_METHODS`.
Importing this module loads no torch.
"""

from __future__ import annotations

from unlearning.data.formats import FORMAT_NAMES, list_samples
from unlearning.data.listing import Catalog, CatalogError, SampleRow
from unlearning.methods.base import BUILTIN_METHODS, MethodConfig, config_class

__all__ = [
    "DATASET_FORMATS",
    "METHOD_NAMES",
    "Catalog",
    "CatalogError",
    "SampleRow",
    "list_samples",
    "method_config",
]

METHOD_NAMES: tuple[str, ...] = tuple(BUILTIN_METHODS)
"""Every built-in method (the one table is `unlearning.methods.base.BUILTIN_METHODS`)."""
DATASET_FORMATS: tuple[str, ...] = FORMAT_NAMES
"""Every dataset format (the one registry is `unlearning.data.formats.FORMATS`)."""


def method_config(name: str) -> type[MethodConfig]:
    """The pydantic Config class of method `name`, without importing the method (nor torch).

    Raises `unlearning.methods.UnknownMethodError` (a KeyError) for an unknown name."""
    return config_class(name)
