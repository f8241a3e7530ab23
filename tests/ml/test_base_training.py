"""Training machinery: augmentation, seeded minibatches, base training, masks, cancellation, inference."""

from __future__ import annotations

import pytest
import torch

from models.registry import build_model
from models.spec import ModelSpec
from unlearning.data import ImageSet, load_digits
from unlearning.pipeline import load_dataset, spec_for, train_base_model
from unlearning.training import (
    TrainRecipe,
    accuracy,
    augment,
    batch_stream,
    epoch_batches,
    predict_probs,
    seeded_generator,
    to_float,
    train_model,
)
from unlearning.types import Cancelled


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_to_float_scales_to_unit_range() -> None:
    images = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert to_float(images).tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_augment_outputs_shifted_or_flipped_windows_of_the_padded_input() -> None:
    batch = torch.rand(16, 3, 32, 32) * 0.9 + 0.1  # no zeros inside, so padding is recognisable
    out = augment(batch, seeded_generator(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    padded = torch.nn.functional.pad(batch, (4, 4, 4, 4))
    flipped = 0
    for row in range(16):
        candidates = [
            (flip, top, left)
            for flip in (False, True)
            for top in range(9)
            for left in range(9)
            if torch.equal(
                out[row],
                padded[row, :, top : top + 32, left : left + 32].flip(2)
                if flip
                else padded[row, :, top : top + 32, left : left + 32],
            )
        ]
        assert candidates, f"image {row} is not a crop of its padded input"
        flipped += candidates[0][0]
    assert 0 < flipped < 16, "flips are random per image"
    assert not torch.equal(out, batch)


def test_augment_is_seeded_and_skips_tiny_images() -> None:
    batch = torch.rand(8, 3, 32, 32)
    assert torch.equal(augment(batch, seeded_generator(1)), augment(batch, seeded_generator(1)))
    assert not torch.equal(augment(batch, seeded_generator(1)), augment(batch, seeded_generator(2)))
    tiny = torch.rand(8, 1, 8, 8)
    assert torch.equal(augment(tiny, seeded_generator(0)), tiny)


def test_epoch_batches_cover_every_row_once() -> None:
    batches = list(epoch_batches(10, 4, seeded_generator(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert [len(b) for b in epoch_batches(10, 4, seeded_generator(0), drop_last=True)] == [4, 4]


def test_a_last_batch_of_one_joins_the_one_before_when_asked() -> None:
    """BatchNorm on a 1x1 map cannot train on one sample: training loops fold a lone last sample in."""
    folded = list(epoch_batches(9, 4, seeded_generator(0), fold_single=True))
    assert [len(b) for b in folded] == [4, 5]
    assert sorted(torch.cat(folded).tolist()) == list(range(9))
    assert [len(b) for b in epoch_batches(9, 4, seeded_generator(0))] == [4, 4, 1]
    assert [len(b) for b in epoch_batches(10, 4, seeded_generator(0), fold_single=True)] == [4, 4, 2]
    assert [len(b) for b in epoch_batches(1, 4, seeded_generator(0), fold_single=True)] == [1]


def test_batch_stream_is_endless_and_in_unit_range(digits) -> None:
    stream = batch_stream(digits.val, 100, seeded_generator(0))
    batches = [next(stream) for _ in range(8)]  # more than one pass over 360 images
    images, labels = batches[0]
    assert images.shape == (100, 1, 8, 8) and images.dtype == torch.float32
    assert float(images.max()) <= 1.0 and labels.shape == (100,)


def test_training_on_digits_beats_chance_quickly(digits) -> None:
    model = train_base_model(digits, "mlp", TrainRecipe(epochs=8), device="cpu")  # about 1 s on 2 idle cores
    assert accuracy(model, digits.train) > 85.0  # chance is 10%
    assert accuracy(model, digits.test) > 75.0
    assert model.spec.mean == list(digits.mean)
    assert not model.training


def test_runs_too_short_for_a_one_cycle_schedule_still_train(digits) -> None:
    few = digits.train.subset(list(range(300)))  # 1 epoch of batch 128: 3 steps, no room for a warm-up
    model = build_model(spec_for(digits, "mlp"))
    before = [p.detach().clone() for p in model.parameters()]
    train_model(model, few, TrainRecipe(epochs=1), device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_training_is_reproducible_with_a_seed(digits) -> None:
    recipe = TrainRecipe(epochs=1, seed=5)
    first = train_base_model(digits, "mlp", recipe, device="cpu")
    second = train_base_model(digits, "mlp", recipe, device="cpu")
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_training_keeps_pruned_weights_at_zero(digits) -> None:
    torch.manual_seed(0)
    model = build_model(spec_for(digits, "mlp"))
    weight = model.body[1].weight
    mask = torch.rand_like(weight) > 0.9
    model.set_masks({"body.1.weight": mask})
    before = weight.detach().clone()
    train_model(model, digits.train, TrainRecipe(epochs=2), device="cpu")
    after = model.body[1].weight.detach()
    assert torch.all(after[~mask] == 0)
    assert not torch.equal(after[mask], before[mask]), "unpruned weights still train"


def test_progress_and_cancellation(digits) -> None:
    seen: list[float] = []
    model = build_model(spec_for(digits, "mlp"))
    train_model(
        model, digits.train, TrainRecipe(epochs=2), progress=lambda f, s: seen.append(f), device="cpu"
    )
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) == 2 * 9
    calls = iter(range(1000))
    with pytest.raises(Cancelled):
        train_model(
            model, digits.train, TrainRecipe(epochs=2), should_stop=lambda: next(calls) >= 3, device="cpu"
        )


def test_residual_net_trains_with_augmentation_and_predicts() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 16, 16), dtype=torch.uint8, generator=generator)
    labels = torch.arange(40) % 2
    images[labels == 1, 0] = 255  # class 1 is red: learnable in a few steps
    data = ImageSet(images, labels, [f"s{i}" for i in range(40)])
    spec = ModelSpec(
        architecture="resnet_small",
        num_classes=2,
        in_channels=3,
        image_size=16,
        mean=[0.5] * 3,
        std=[0.3] * 3,
        width=4,
    )
    torch.manual_seed(0)
    model = train_model(
        build_model(spec), data, TrainRecipe(epochs=6, batch_size=20, lr_max=0.1), device="cpu"
    )
    probs = predict_probs(model, data)
    assert probs.shape == (40, 2)
    assert torch.allclose(probs.sum(dim=1), torch.ones(40), atol=1e-5)
    assert accuracy(model, data) > 80.0
    assert model.stem[0].weight.is_contiguous(), "model handed back in the default memory format"


def test_load_dataset_dispatch_and_errors(tmp_path) -> None:
    assert load_dataset("digits").name == "digits"
    with pytest.raises(ValueError, match="unknown dataset format 'csv'"):
        load_dataset("csv", str(tmp_path))
    with pytest.raises(ValueError, match="needs a uri"):
        load_dataset("imagefolder")
    with pytest.raises(FileNotFoundError):
        load_dataset("imagefolder", str(tmp_path / "absent"))
