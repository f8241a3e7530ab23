"""Dataset-condensation unlearning on digits: sub-classes, condensed images, the reduced retain set,
the per-version cache, the modular schedule, forgetting and cancellation."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from baselines_helpers import FORGET_CLASS, digits_problem, one_thread, stop_after  # noqa: F401

from unlearning.methods import get_method, parse_params
from unlearning.methods.condensation.condense import (
    CONDENSED_PREFIX,
    CondenseSettings,
    condensed_retain_set,
    condensed_set,
    find_subclasses,
    penultimate_features,
    weights_digest,
)
from unlearning.methods.condensation.method import module_of
from unlearning.training import accuracy
from unlearning.types import Cancelled, never_stop, no_progress


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Condensed sets are cached under UNLEARN_CACHE_DIR: a private one, shared by this module's tests."""
    directory = tmp_path_factory.mktemp("condensed-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNLEARN_CACHE_DIR", str(directory))
        yield directory


def train_set():  # type: ignore[no-untyped-def]
    splits = digits_problem().random_splits
    return splits.retain.concat(splits.forget)


def run(splits, should_stop=never_stop, **params):  # type: ignore[no-untyped-def]
    config = parse_params("condensation", params)
    return get_method("condensation").run(digits_problem().model, splits, config, no_progress, should_stop)


def test_subclasses_split_each_class_into_the_asked_number_of_groups() -> None:
    data = train_set()
    features = penultimate_features(digits_problem().model, data.images)
    assignment = find_subclasses(features, data.labels, 10, seed=0)
    for label in range(10):
        in_class = assignment[data.labels == label].unique()
        assert 1 < len(in_class) <= math.ceil(int((data.labels == label).sum()) / 10)
        assert (data.labels[torch.isin(assignment, in_class)] == label).all()  # one label per sub-class
    assert torch.equal(assignment.unique(), torch.arange(int(assignment.max()) + 1))  # dense numbering


def test_condensed_images_match_their_subclass_mean_features_better_than_a_random_member() -> None:
    model = digits_problem().model
    condensed, _ = condensed_set(model, train_set(), CondenseSettings())
    data = train_set()
    order = sorted(range(len(data)), key=data.sample_ids.__getitem__)
    assert [data.sample_ids[row] for row in order] == condensed.train_ids
    features = penultimate_features(model, data.images[order])
    sizes = torch.bincount(condensed.assignment)
    means = torch.zeros(len(sizes), features.shape[1]).index_add_(0, condensed.assignment, features)
    means /= sizes[:, None]
    generator = torch.Generator().manual_seed(0)
    members = condensed.assignment.argsort(stable=True).split(sizes.tolist())
    random_member = torch.cat([rows[torch.randint(len(rows), (1,), generator=generator)] for rows in members])
    condensed_gap = (penultimate_features(model, condensed.images) - means).norm(dim=1)
    member_gap = (features[random_member] - means).norm(dim=1)
    several = sizes > 1
    assert condensed.images.dtype == torch.uint8 and condensed.images.shape[1:] == (1, 8, 8)
    assert condensed_gap[several].mean() < 0.5 * member_gap[several].mean()
    assert (condensed_gap[several] < member_gap[several]).float().mean() > 0.9


def test_reduced_retain_set_keeps_real_images_exactly_where_a_forget_sample_was() -> None:
    problem = digits_problem()
    splits = problem.random_splits
    reduced = condensed_retain_set(problem.model, splits)
    condensed, hit = condensed_set(problem.model, train_set(), CondenseSettings())
    assert hit
    subclass_of = dict(zip(condensed.train_ids, condensed.assignment.tolist(), strict=True))
    dirty = {subclass_of[sample_id] for sample_id in splits.forget.sample_ids}
    real_ids = [sample_id for sample_id in reduced.sample_ids if not sample_id.startswith(CONDENSED_PREFIX)]
    expected_real = [sample_id for sample_id in splits.retain.sample_ids if subclass_of[sample_id] in dirty]
    assert real_ids == expected_real and not set(real_ids) & set(splits.forget.sample_ids)
    kept = splits.retain.select_ids(real_ids)
    assert torch.equal(reduced.images[: len(real_ids)], kept.images)
    assert torch.equal(reduced.labels[: len(real_ids)], kept.labels)
    clean = {subclass_of[sample_id] for sample_id in splits.retain.sample_ids} - dirty
    condensed_rows = [
        int(sample_id.removeprefix(CONDENSED_PREFIX))
        for sample_id in reduced.sample_ids
        if sample_id.startswith(CONDENSED_PREFIX)
    ]
    assert sorted(condensed_rows) == sorted(clean)
    assert torch.equal(reduced.images[len(real_ids) :], condensed.images[condensed_rows])
    assert len(reduced) < len(splits.retain)


def test_condensed_set_is_cached_per_model_version(private_cache: Path) -> None:
    model = digits_problem().model
    settings = CondenseSettings(steps=5)
    entries = set((private_cache / "condensed").rglob("*.npz"))
    first, first_hit = condensed_set(model, train_set(), settings)
    assert len(set((private_cache / "condensed").rglob("*.npz")) - entries) == 1
    second, second_hit = condensed_set(model, train_set(), settings)
    assert (first_hit, second_hit) == (False, True)
    assert torch.equal(first.images, second.images) and torch.equal(first.assignment, second.assignment)
    newer = copy.deepcopy(model)
    with torch.no_grad():
        newer.head.bias.add_(0.01)
    assert condensed_set(newer, train_set(), settings)[1] is False
    assert condensed_set(model, train_set(), settings.model_copy(update={"cache": False}))[1] is False


def test_modules_split_the_mlp_into_beginning_intermediate_and_final() -> None:
    modules = module_of(digits_problem().model, 0.5)
    assert modules == {
        "body.1.weight": "beginning",
        "body.1.bias": "beginning",
        "body.3.weight": "intermediate",
        "body.3.bias": "intermediate",
        "head.weight": "final",
        "head.bias": "final",
    }


def test_condensation_forgets_a_class_on_a_reduced_set_and_leaves_the_input_model_alone() -> None:
    problem = digits_problem()
    splits = problem.class_splits
    version = weights_digest(problem.model)
    model, info = run(splits)
    forgotten_test = splits.test.of_class(FORGET_CLASS)
    assert accuracy(problem.model, splits.forget) > 90 and accuracy(model, splits.forget) < 10
    assert accuracy(model, forgotten_test) < 10  # the class is gone, not only its train images
    assert accuracy(model, splits.retain) > accuracy(problem.model, splits.retain) - 10
    reduced = info["reduced_retain"]
    assert reduced["real"] == 0 and reduced["condensed"] < len(splits.retain) / 5  # clean sub-classes only
    assert weights_digest(problem.model) == version
    assert set(info["seconds"]) == {"condense", "beginning", "final", "intermediate"}


def test_random_forgetting_second_request_loads_the_condensed_set() -> None:
    splits = digits_problem().random_splits
    _, first = run(splits, condense={"steps": 3, "images_per_subclass": 4})
    _, second = run(splits, condense={"steps": 3, "images_per_subclass": 4})
    assert (first["condensed_cache_hit"], second["condensed_cache_hit"]) == (False, True)
    assert first["reduced_retain"] == second["reduced_retain"]


@pytest.mark.parametrize("calls", [2, 40])
def test_condensation_stops_when_asked(calls: int) -> None:
    """Two calls in: during condensation (a fresh cache key); forty: during training on the reduced set."""
    should_stop = stop_after(calls)
    with pytest.raises(Cancelled):
        run(digits_problem().random_splits, should_stop=should_stop, condense={"steps": 4, "seed": calls})
    assert should_stop.count["n"] == calls + 1
