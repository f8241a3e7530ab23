"""Data with stable sample ids: image sets, datasets and their loaders, the registry of dataset formats,
and unlearning splits.

Names are imported on first use, so the torch-free modules (`formats`, `listing`, the format modules,
`folder_layout`) can be imported, and a dataset listed, without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {  # module -> the names it exports here
    "cache": ("cache_dir", "unpack_archive"),
    "cifar": ("load_cifar10_cpu_preset", "load_cifar10_full", "unpack_cifar10"),
    "digits": ("load_digits",),
    "folder_layout": ("SPLITS",),
    "formats": ("FORMAT_NAMES", "FORMATS", "DatasetFormat", "get_format"),
    "imagefolder": ("load_imagefolder",),
    "imageset": ("Dataset", "ImageSet", "channel_stats", "dataset_from_catalog", "make_dataset"),
    "listing": ("Catalog", "CatalogError", "SampleRow"),
    "npz": ("load_npz",),
    "splits": ("ForgetClassOutOfRange", "SplitError", "UnknownSampleIds", "UnlearningSplits", "make_splits"),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
