"""Checkpoints: exact round trip, file hash, masks, and refusal of broken or foreign files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.checkpoint_header import read_header
from models.registry import build_model
from models.spec import ModelSpec


def small_spec(architecture: str = "resnet_small", **overrides: object) -> ModelSpec:
    fields: dict[str, object] = dict(
        architecture=architecture,
        num_classes=4,
        in_channels=3,
        image_size=16,
        mean=[0.4, 0.5, 0.6],
        std=[0.2, 0.25, 0.3],
        width=4,
    )
    fields.update(overrides)
    return ModelSpec(**fields)


def trained_like(spec: ModelSpec) -> torch.nn.Module:
    """A model whose batch-norm statistics are not the defaults, so buffers must round-trip too."""
    torch.manual_seed(0)
    model = build_model(spec)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, spec.in_channels, spec.image_size, spec.image_size))
    return model.eval()


@pytest.mark.parametrize("architecture", ["resnet_small", "resnet18", "mlp"])
def test_round_trip_gives_identical_outputs_and_metadata(tmp_path: Path, architecture: str) -> None:
    spec = small_spec(architecture)
    model = trained_like(spec)
    path = tmp_path / "model.safetensors"
    info = save_checkpoint(model, path, {"dataset_id": "ds_123"})
    loaded = load_checkpoint(path)
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.model(x))
    assert loaded.model.spec == spec
    assert loaded.metadata == {"dataset_id": "ds_123"}
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.size_bytes == path.stat().st_size
    assert loaded.info == info
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_masks_survive_round_trip_and_zero_their_weights(tmp_path: Path) -> None:
    model = trained_like(small_spec())
    weight_name = "stem.0.weight"
    mask = torch.rand_like(dict(model.named_parameters())[weight_name]) > 0.5
    model.set_masks({weight_name: mask})
    path = tmp_path / "pruned.safetensors"
    save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert set(loaded.masks) == {weight_name}
    assert torch.equal(loaded.masks[weight_name], mask)
    weight = dict(loaded.model.named_parameters())[weight_name]
    assert torch.all(weight[~mask] == 0)
    assert torch.any(weight[mask] != 0)
    assert read_header(path).mask_names == [weight_name]


def test_header_is_readable_without_loading_weights(tmp_path: Path) -> None:
    spec = small_spec("mlp", in_channels=1, mean=[0.3], std=[0.4], image_size=8)
    path = tmp_path / "m.safetensors"
    save_checkpoint(build_model(spec), path, {"dataset_id": "ds_9"})
    header = read_header(path)
    assert header.spec == spec
    assert header.metadata["dataset_id"] == "ds_9"
    assert header.tensors["head.weight"].shape == (4, 4)


def test_reserved_metadata_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(build_model(small_spec()), tmp_path / "x.safetensors", {"spec": "mine"})


def test_not_safetensors_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "pickle.safetensors"
    path.write_bytes(b"\x80\x04\x95 definitely a pickle, not safetensors" * 4)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(path)


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_truncated_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_checkpoint(build_model(small_spec()), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_safetensors_without_spec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"framework": "pt"})
    with pytest.raises(CheckpointError, match="no 'spec'"):
        load_checkpoint(path)


def test_invalid_spec_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad-spec.safetensors"
    spec = small_spec().model_dump()
    spec["architecture"] = "vgg11"
    save_file({"weight": torch.zeros(2)}, str(path), metadata={"spec": json.dumps(spec)})
    with pytest.raises(CheckpointError, match="architecture"):
        load_checkpoint(path)


def test_weights_of_another_width_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "mismatch.safetensors"
    narrow = build_model(small_spec(width=4))
    tensors = {name: t.contiguous() for name, t in narrow.state_dict().items()}
    wider_spec = small_spec(width=8).model_dump_json()
    save_file(tensors, str(path), metadata={"spec": wider_spec})
    with pytest.raises(
        CheckpointError,
        match=r"does not fit architecture 'resnet_small'.*head.weight: file \[4, 32\] vs model \[4, 64\]",
    ):
        load_checkpoint(path)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    path = tmp_path / "partial.safetensors"
    spec = small_spec("mlp", in_channels=1, mean=[0.3], std=[0.4], image_size=8)
    tensors = {
        name: t.contiguous() for name, t in build_model(spec).state_dict().items() if name != "head.bias"
    }
    save_file(tensors, str(path), metadata={"spec": spec.model_dump_json()})
    with pytest.raises(CheckpointError, match="missing tensors \\['head.bias'\\]"):
        load_checkpoint(path)


def test_mask_with_wrong_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "badmask.safetensors"
    spec = small_spec("mlp", in_channels=1, mean=[0.3], std=[0.4], image_size=8)
    tensors = {name: t.contiguous() for name, t in build_model(spec).state_dict().items()}
    tensors["mask.head.weight"] = torch.ones(3, 3, dtype=torch.bool)
    save_file(tensors, str(path), metadata={"spec": spec.model_dump_json()})
    with pytest.raises(CheckpointError, match="mask for 'head.weight' has shape"):
        load_checkpoint(path)


def test_spec_rejects_inconsistent_normalisation() -> None:
    with pytest.raises(ValueError, match="mean has 1 values but in_channels is 3"):
        small_spec(mean=[0.5])
    with pytest.raises(ValueError, match="std values must be > 0"):
        small_spec(std=[0.2, 0.0, 0.3])


def test_features_and_head_compose_to_forward() -> None:
    model = build_model(small_spec()).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (3, model.feature_dim)
        assert torch.allclose(model.head(features), model(x))


def test_resnet18_uses_the_cifar_stem() -> None:
    model = build_model(small_spec("resnet18", image_size=32, width=8))
    first_conv = model.stem[0]
    assert first_conv.kernel_size == (3, 3) and first_conv.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert len(model.stages) == 8  # [2, 2, 2, 2] basic blocks
