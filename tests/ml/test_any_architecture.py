"""Architectures a user already has: torchvision and timm models and in-house plugins as `Classifier`s
(features and head by the head rule of `models.backbone`), checkpoints in the module's own tensor names
that load back strictly into a fresh module, pruning on any convolution and linear weight but the head."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision
from pydantic import ValidationError
from safetensors.torch import load_file, save_file
from torch import nn

from models.backbone import BackboneClassifier
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.checkpoint_header import FORMAT_KEY, FORMAT_VALUE, SPEC_KEY, read_tensors, write_with_metadata
from models.registry import UnknownArchitecture, UnsupportedArchitecture, build_model
from models.spec import ModelSpec
from unlearning.pruning import magnitude_prune, prunable_parameters

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


sys.path.append(str(Path(__file__).parents[1] / "plugin"))
byom = importlib.import_module("byom")


@pytest.fixture(autouse=True, scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with byom.installed(tmp_path_factory.mktemp("plugin")) as folder:
        yield folder


def spec(architecture: str, **overrides: object) -> ModelSpec:
    fields: dict[str, object] = dict(
        architecture=architecture, num_classes=3, in_channels=3, image_size=16, mean=MEAN, std=STD
    )
    fields.update(overrides)
    return ModelSpec(**fields)


def timm_param(name: str) -> object:
    missing = importlib.util.find_spec("timm") is None
    return pytest.param(name, marks=pytest.mark.skipif(missing, reason="the optional timm extra is absent"))


ARCHITECTURES = [
    "torchvision/resnet18",
    "torchvision/mobilenet_v3_small",
    "plugin/tiny_cnn",
    timm_param("timm/resnet10t"),
]


def fresh_module(architecture: str) -> nn.Module:
    """The user's own module, built without the service."""
    source, name = architecture.split("/")
    if source == "torchvision":
        return torchvision.models.get_model(name, num_classes=3)
    if source == "timm":
        import timm

        return timm.create_model(name, num_classes=3)
    return byom.plugin_module().TinyCNN(num_classes=3)


def normalised(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def with_batch_statistics(model: nn.Module) -> nn.Module:
    """Batch-norm statistics off their defaults, so buffers must round-trip too."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 16, 16))
    return model.eval()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_head_composes_with_the_features_on_any_architecture(architecture: str) -> None:
    model = build_model(spec(architecture)).eval()
    assert isinstance(model, BackboneClassifier)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (4, model.feature_dim)
        assert torch.allclose(model.head(features), model(x), atol=1e-5)
    assert isinstance(model.head, nn.Linear) and model.head.out_features == 3
    head_params = [name for name, param in model.named_parameters() if param is model.head.weight]
    assert len(head_params) == 1, "the head is a view into the backbone, registered once"
    assert "input_mean" not in model.state_dict(), "normalisation lives in the spec, not the state dict"


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_checkpoints_keep_the_modules_own_names_and_load_back_strictly(
    architecture: str, tmp_path: Path
) -> None:
    model = with_batch_statistics(build_model(spec(architecture)))
    path = tmp_path / "model.safetensors"
    save_checkpoint(model, path, {"dataset_id": "ds_1"})
    state = load_file(str(path))
    users = fresh_module(architecture)
    users.load_state_dict(state, strict=True)
    users.eval()
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(users(normalised(x)), model(x), atol=1e-5)
        loaded = load_checkpoint(path)
        assert torch.equal(loaded.model(x), model(x))
    assert loaded.model.spec == model.spec and loaded.metadata == {"dataset_id": "ds_1"}


def test_a_plain_state_dict_becomes_a_checkpoint_by_its_metadata_alone(tmp_path: Path) -> None:
    users = with_batch_statistics(torchvision.models.mobilenet_v3_small(num_classes=3))
    plain = tmp_path / "plain.safetensors"
    save_file(users.state_dict(), str(plain))
    with pytest.raises(CheckpointError, match="no 'spec'"):
        load_checkpoint(plain)
    stored = tmp_path / "stored.safetensors"
    model_spec = spec("torchvision/mobilenet_v3_small")
    write_with_metadata(plain, stored, {SPEC_KEY: model_spec.model_dump_json(), FORMAT_KEY: FORMAT_VALUE})
    assert read_tensors(stored).tensors == read_tensors(plain).tensors
    assert all(torch.equal(load_file(str(stored))[k], v) for k, v in load_file(str(plain)).items())
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(load_checkpoint(stored).model(x), users(normalised(x)), atol=1e-5)


def test_a_torchvision_model_on_greyscale_takes_one_channel_in_its_first_convolution() -> None:
    model = build_model(spec("torchvision/resnet18", in_channels=1, mean=[0.5], std=[0.25]))
    assert model.backbone.conv1.weight.shape == (64, 1, 7, 7)
    users = torchvision.models.resnet18(num_classes=3)
    users.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)  # how users adapt it
    users.load_state_dict(model.checkpoint_state(), strict=True)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 3)


def test_unknown_and_unsupported_architectures_are_refused_by_name() -> None:
    with pytest.raises(UnknownArchitecture, match="did you mean resnet18"):
        build_model(spec("torchvision/resnet19"))
    with pytest.raises(UnknownArchitecture, match="tiny_cnn"):
        build_model(spec("plugin/tiny_cnm"))
    with pytest.raises(UnsupportedArchitecture, match="no nn.Linear classifier layer with 3 outputs"):
        build_model(spec("torchvision/squeezenet1_0", image_size=64))
    for bad in ("vgg", "torchvision/", "keras/resnet", "torchvision/res net"):
        with pytest.raises(ValidationError, match="architecture"):
            spec(bad)
    with pytest.raises(ValidationError, match="width applies"):
        spec("torchvision/resnet18", width=8)


def test_timm_names_the_optional_extra_when_it_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(UnknownArchitecture, match=r"unlearn-service\[timm\]"):
        build_model(spec("timm/resnet10t"))


def test_pruning_masks_every_convolution_and_linear_weight_but_the_head(tmp_path: Path) -> None:
    model = build_model(spec("torchvision/mobilenet_v3_small"))
    names = prunable_parameters(model)
    assert "backbone.features.0.0.weight" in names  # the stem convolution
    assert "backbone.classifier.0.weight" in names  # the hidden linear layer
    assert "backbone.classifier.3.weight" not in names  # the head
    pruned = magnitude_prune(model, 0.9)
    path = tmp_path / "sparse.safetensors"
    save_checkpoint(pruned, path)
    stored = read_tensors(path).tensors
    assert "mask.classifier.0.weight" in stored and "mask.features.0.0.weight" in stored
    loaded = load_checkpoint(path).model
    assert set(loaded.masks) == set(pruned.masks)
    assert all(torch.equal(loaded.masks[name], mask) for name, mask in pruned.masks.items())


def test_attention_projections_are_prunable_too() -> None:
    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 8, 4, stride=4)
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens = self.embed(x).flatten(2).transpose(1, 2)
            return self.fc(self.attention(tokens, tokens, tokens)[0].mean(1))

    model = BackboneClassifier(spec("plugin/attention"), Attention())
    assert set(prunable_parameters(model)) == {
        "backbone.embed.weight",
        "backbone.attention.in_proj_weight",
        "backbone.attention.out_proj.weight",
    }
    assert model.head is model.backbone.fc


def test_a_pickle_is_refused_as_such_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"zip archive \(what torch.save writes\).*save_file"):
        read_tensors(path)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="Python pickle"):
        read_tensors(legacy)
