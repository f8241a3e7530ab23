"""The four sets an unlearning run works on: forget, retain, val (non-members) and test."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from unlearning.data.imageset import Dataset, ImageSet


class SplitError(ValueError):
    """A forget request that does not fit the dataset."""


class UnknownSampleIds(SplitError):
    """Some forget ids do not exist, or exist but are not train (member) samples."""

    def __init__(self, unknown: list[str], not_in_train: list[str]) -> None:
        self.unknown = unknown
        self.not_in_train = not_in_train
        parts = []
        if unknown:
            parts.append(f"{len(unknown)} unknown sample ids (first: {unknown[:100]})")
        if not_in_train:
            parts.append(f"{len(not_in_train)} ids not in the train split (first: {not_in_train[:100]})")
        super().__init__("; ".join(parts))


class ForgetClassOutOfRange(SplitError):
    def __init__(self, forget_class: int, num_classes: int) -> None:
        self.forget_class = forget_class
        self.num_classes = num_classes
        super().__init__(f"forget_class {forget_class} is out of range 0..{num_classes - 1}")


@dataclass(frozen=True)
class UnlearningSplits:
    forget: ImageSet
    retain: ImageSet
    """Train minus forget minus tombstones (`excluded_ids`)."""
    val: ImageSet
    test: ImageSet
    num_classes: int
    forget_class: int | None = None

    def sample_ids(self) -> dict[str, list[str]]:
        """`{"forget", "retain", "val", "test"}` id lists, as bench's `splits.json` writes them."""
        return {name: list(getattr(self, name).sample_ids) for name in ("forget", "retain", "val", "test")}


def make_splits(
    dataset: Dataset,
    *,
    forget_ids: Sequence[str] | None = None,
    forget_class: int | None = None,
    excluded_ids: Iterable[str] = (),
) -> UnlearningSplits:
    """Forget either the train samples `forget_ids` or every train sample of `forget_class`.

    `excluded_ids` are tombstones (samples forgotten earlier): they never enter retain again. Ids in both
    `forget_ids` and `excluded_ids` stay in forget. Val and test are the dataset's, whole, in both modes.
    """
    if (forget_ids is None) == (forget_class is None):
        raise SplitError("give exactly one of forget_ids or forget_class")
    train = dataset.train
    if forget_class is not None:
        if isinstance(forget_class, bool) or not 0 <= int(forget_class) < dataset.num_classes:
            raise ForgetClassOutOfRange(int(forget_class), dataset.num_classes)
        in_forget = train.labels == int(forget_class)
    else:
        assert forget_ids is not None
        unique_ids = list(dict.fromkeys(forget_ids))
        if not unique_ids:
            raise SplitError("forget_ids is empty")
        found = dataset.index_of(unique_ids)
        unknown = [sample_id for sample_id in unique_ids if sample_id not in found]
        not_in_train = [
            sample_id for sample_id in unique_ids if sample_id in found and found[sample_id][0] != "train"
        ]
        if unknown or not_in_train:
            raise UnknownSampleIds(unknown, not_in_train)
        in_forget = torch.zeros(len(train), dtype=torch.bool)
        in_forget[[found[sample_id][1] for sample_id in unique_ids]] = True
    excluded = set(excluded_ids)
    is_excluded = torch.tensor([sample_id in excluded for sample_id in train.sample_ids], dtype=torch.bool)
    forget = train.subset(in_forget)
    if len(forget) == 0:
        raise SplitError(f"forget set is empty (forget_class={forget_class})")
    return UnlearningSplits(
        forget=forget,
        retain=train.subset(~in_forget & ~is_excluded),
        val=dataset.val,
        test=dataset.test,
        num_classes=dataset.num_classes,
        forget_class=None if forget_class is None else int(forget_class),
    )
