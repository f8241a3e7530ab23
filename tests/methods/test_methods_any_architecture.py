"""Every registered method on architectures the service did not write: an in-house plugin module and a
torchvision model, both pruned so the masks are exercised too. Methods find penultimate features by the
head rule (`models.backbone`), so DAU's Barlow Twins term, condensation and the rest run unchanged; the
result keeps the user's tensor names and loads strictly into the user's module."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file

from models.backbone import BackboneClassifier
from models.base import Classifier
from models.checkpoint import save_checkpoint
from unlearning.data import Dataset, UnlearningSplits, load_npz, make_splits
from unlearning.methods import available_methods, get_method, parse_params
from unlearning.pipeline import train_base_model
from unlearning.pruning import magnitude_prune
from unlearning.training import TrainRecipe
from unlearning.types import never_stop, no_progress

SMALL_ATTACKER = {"token_dim": 8, "layers": 1, "heads": 2, "ff_dim": 16, "hidden_dim": 8}
QUICK_CONDENSE = {"steps": 5, "images_per_subclass": 4, "cache": False}
QUICK: dict[str, dict] = {
    "condensation": {
        "condense": QUICK_CONDENSE,
        "beginning_epochs": 1,
        "final_epochs": 1,
        "intermediate_epochs": 1,
        "batch_size": 32,
    },
    "dau": {
        "iterations": 4,
        "attacker_warmup": 2,
        "eval_every": 2,
        "batch_size": 16,
        "attacker": SMALL_ATTACKER,
    },
    "ff": {"fisher_samples": 16, "probe_size": 16},
    "ft": {"epochs": 1},
    "ga": {"epochs": 1, "lr": 0.01},
    "iu": {"retain_samples": 16, "probe_size": 16},
    "l1-sparse": {"epochs": 1, "gamma": 1e-3},
    "multigan": {"gan": {"steps": 4}, "forget_gan_steps": 2, "finetune_epochs": 1},
    "retrain": {"recipe": {"epochs": 1, "batch_size": 32, "augment": False}},
    "salun": {"epochs": 1},
    "scrub": {"epochs": 1, "max_epochs": 1, "lr": 0.01},
}
CASES = [(name, QUICK[name]) for name in sorted(QUICK)] + [
    ("dau", {**QUICK["dau"], "retain_source": "condensed", "condense": QUICK_CONDENSE}),
]
ARCHITECTURES = ["plugin/tiny_cnn", "torchvision/mobilenet_v3_small"]


sys.path.append(str(Path(__file__).parents[1] / "plugin"))
byom = importlib.import_module("byom")
FOLDER: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The plugin is installed: `retrain` builds a fresh model of the same architecture by name."""
    with byom.installed(tmp_path_factory.mktemp("plugin")) as folder:
        FOLDER[:] = [folder]
        yield


@functools.cache
def dataset() -> Dataset:
    path = FOLDER[0] / "images.npz"
    return load_npz(byom.write_npz(path, train_per_class=16, holdout_per_class=6))


@functools.cache
def sparse_model(architecture: str) -> Classifier:
    torch.manual_seed(0)
    model = train_base_model(dataset(), architecture, TrainRecipe(epochs=2, batch_size=16, augment=False))
    return magnitude_prune(model, 0.5)


def splits() -> UnlearningSplits:
    return make_splits(dataset(), forget_ids=[dataset().train.sample_ids[row] for row in range(0, 48, 8)])


def test_the_cases_cover_every_registered_method() -> None:
    assert set(QUICK) == set(available_methods())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize(("name", "params"), CASES, ids=[f"{name}-{i}" for i, (name, _) in enumerate(CASES)])
def test_every_method_runs_on_any_architecture_and_keeps_its_masks(
    architecture: str, name: str, params: dict, tmp_path: Path
) -> None:
    original = sparse_model(architecture)
    before = {key: value.clone() for key, value in original.state_dict().items()}
    model, _ = get_method(name).run(original, splits(), parse_params(name, params), no_progress, never_stop)
    assert all(torch.equal(value, before[key]) for key, value in original.state_dict().items())
    assert isinstance(model, BackboneClassifier) and model.spec == original.spec
    assert set(model.masks) == set(original.masks)
    params_by_name = dict(model.named_parameters())
    for key, mask in model.masks.items():
        assert torch.count_nonzero(params_by_name[key][~mask]) == 0, key
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (4, 3) and torch.isfinite(model(x)).all()
    path = tmp_path / "result.safetensors"
    save_checkpoint(model, path, masks={})
    state = load_file(str(path))
    users = (
        torchvision.models.mobilenet_v3_small(num_classes=3)
        if architecture.startswith("torchvision/")
        else byom.plugin_module().TinyCNN(num_classes=3)
    )
    users.load_state_dict(state, strict=True)
