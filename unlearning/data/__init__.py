"""Data with stable sample ids: image sets, datasets and their loaders, and unlearning splits."""

from unlearning.data.arrays import load_digits, load_npz
from unlearning.data.cache import cache_dir, unpack_archive
from unlearning.data.cifar import load_cifar10_cpu_preset, load_cifar10_full, unpack_cifar10
from unlearning.data.imagefolder import load_imagefolder
from unlearning.data.imageset import SPLITS, Dataset, ImageSet, channel_stats, make_dataset
from unlearning.data.splits import (
    ForgetClassOutOfRange,
    SplitError,
    UnknownSampleIds,
    UnlearningSplits,
    make_splits,
)

__all__ = [
    "SPLITS",
    "Dataset",
    "ForgetClassOutOfRange",
    "ImageSet",
    "SplitError",
    "UnknownSampleIds",
    "UnlearningSplits",
    "cache_dir",
    "channel_stats",
    "load_cifar10_cpu_preset",
    "load_cifar10_full",
    "load_digits",
    "load_imagefolder",
    "load_npz",
    "make_dataset",
    "make_splits",
    "unpack_archive",
    "unpack_cifar10",
]
