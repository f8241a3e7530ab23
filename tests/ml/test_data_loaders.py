"""Data loaders: stable ids, deterministic seeded splits, faithful pixels, clear errors."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ml_helpers import write_image
from PIL import Image

from unlearning.data import (
    CatalogError,
    ForgetClassOutOfRange,
    ImageSet,
    SplitError,
    UnknownSampleIds,
    load_digits,
    load_imagefolder,
    load_npz,
    make_splits,
)
from unlearning.data.cifar import load_cifar10_slices
from unlearning.pipeline import load_dataset


def all_ids(dataset) -> list[str]:
    return dataset.train.sample_ids + dataset.val.sample_ids + dataset.test.sample_ids


def test_digits_has_every_image_once_with_stable_ids() -> None:
    dataset = load_digits()
    ids = all_ids(dataset)
    assert len(ids) == len(set(ids)) == 1797
    assert sorted(ids)[0] == "digits/0000" and sorted(ids)[-1] == "digits/1796"
    assert dataset.train.images.shape[1:] == (1, 8, 8)
    assert dataset.train.images.dtype == torch.uint8
    assert int(dataset.train.images.max()) == 255  # 16 scaled to 255
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (1077, 360, 360)
    for split in (dataset.train, dataset.val, dataset.test):
        assert set(split.labels.tolist()) == set(range(10)), "stratified: every class in every split"


def test_digits_split_is_deterministic_per_seed() -> None:
    first, again, other = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert first.train.sample_ids == again.train.sample_ids
    assert torch.equal(first.train.images, again.train.images)
    assert first.train.sample_ids != other.train.sample_ids


def test_digits_pixels_match_scikit_learn() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    dataset = load_digits()
    raw = sklearn_digits()
    for index in (0, 5, 1796):
        split, row = dataset.index_of([f"digits/{index:04d}"])[f"digits/{index:04d}"]
        expected = np.rint(raw.images[index] * 255 / 16).astype(np.uint8)
        assert np.array_equal(dataset.split(split).images[row, 0].numpy(), expected)
        assert int(dataset.split(split).labels[row]) == raw.target[index]


def test_lookup_and_index_of() -> None:
    dataset = load_digits()
    train_id, test_id = dataset.train.sample_ids[3], dataset.test.sample_ids[0]
    assert dataset.index_of([train_id, "missing", test_id]) == {train_id: ("train", 3), test_id: ("test", 0)}
    assert dataset.lookup([train_id]) == {train_id: ("train", int(dataset.train.labels[3]))}
    rows = list(dataset.iter_samples())
    assert len(rows) == 1797
    assert (test_id, int(dataset.test.labels[0]), "test") in rows


def test_mean_and_std_come_from_train_pixels() -> None:
    dataset = load_digits()
    pixels = dataset.train.images.float() / 255
    assert dataset.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-5)
    assert dataset.std[0] == pytest.approx(float(pixels.std()), abs=1e-5)


def test_imagefolder_with_split_folders(split_folder: Path) -> None:
    dataset = load_imagefolder(split_folder, val_fraction=0.2, seed=0)
    assert dataset.class_names == ["cat", "dog", "emu"]
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (24, 6, 6)
    assert "test/dog/0001.png" in dataset.test.sample_ids
    assert all(i.startswith("train/") for i in dataset.train.sample_ids + dataset.val.sample_ids)
    assert not set(dataset.train.sample_ids) & set(dataset.val.sample_ids)
    assert dataset.val.labels.tolist() == [0, 0, 1, 1, 2, 2], "a fixed fraction held out per class"
    expected = np.asarray(Image.open(split_folder / "test/emu/0000.png")).transpose(2, 0, 1)
    row = dataset.test.sample_ids.index("test/emu/0000.png")
    assert np.array_equal(dataset.test.images[row].numpy(), expected)
    assert int(dataset.test.labels[row]) == 2


def test_imagefolder_is_deterministic_and_cached(split_folder: Path, private_cache: Path) -> None:
    first = load_imagefolder(split_folder, seed=3)
    assert list((private_cache / "decoded").glob("*.npz")), "decoded arrays are cached"
    second = load_imagefolder(split_folder, seed=3)
    assert first.val.sample_ids == second.val.sample_ids
    assert torch.equal(first.train.images, second.train.images)
    other_seed = load_imagefolder(split_folder, seed=4)
    assert other_seed.val.sample_ids != first.val.sample_ids


def test_imagefolder_cache_notices_changed_files(split_folder: Path) -> None:
    before = load_imagefolder(split_folder)
    target = split_folder / "test/cat/0000.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(target)
    after = load_imagefolder(split_folder)
    row = after.test.sample_ids.index("test/cat/0000.png")
    assert int(after.test.images[row].max()) == 0
    assert int(before.test.images[row].max()) > 0


def test_imagefolder_uses_a_val_folder_when_present(split_folder: Path) -> None:
    rng = np.random.default_rng(1)
    write_image(split_folder / "val" / "cat" / "v.png", rng)
    dataset = load_imagefolder(split_folder)
    assert dataset.val.sample_ids == ["val/cat/v.png"]
    assert len(dataset.train) == 30


def test_flat_imagefolder_of_greyscale_jpegs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for class_name in ("a", "b"):
        for index in range(10):
            write_image(tmp_path / "flat" / class_name / f"{index}.jpg", rng, size=16, mode="L")
    dataset = load_imagefolder(tmp_path / "flat", val_fraction=0.2, test_fraction=0.3)
    assert dataset.train.images.shape[1:] == (1, 16, 16)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (12, 2, 6)  # val: 20% of the 7 left
    assert dataset.test.sample_ids[0].startswith("a/")


def test_imagefolder_refuses_mixed_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_image(tmp_path / "f" / "a" / "0.png", rng, size=16)
    write_image(tmp_path / "f" / "a" / "1.png", rng, size=16)
    write_image(tmp_path / "f" / "b" / "0.png", rng, size=16)
    write_image(tmp_path / "f" / "b" / "1.png", rng, size=20)
    with pytest.raises(ValueError, match="20x20"):
        load_imagefolder(tmp_path / "f", val_fraction=0, test_fraction=0)
    resized = load_imagefolder(tmp_path / "f", val_fraction=0, test_fraction=0, image_size=16)
    assert resized.train.images.shape == (4, 3, 16, 16)


def test_imagefolder_per_class_limits(split_folder: Path) -> None:
    dataset = load_imagefolder(split_folder, per_class_limits={"train": 2}, val_fraction=0)
    assert len(dataset.train) == 6
    assert dataset.train.sample_ids[:2] == ["train/cat/0000.png", "train/cat/0001.png"]


def test_imagefolder_from_tar_archive(split_folder: Path, tmp_path: Path) -> None:
    archive = tmp_path / "folder.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(split_folder, arcname="mydata")
    from_archive = load_imagefolder(archive)
    from_folder = load_imagefolder(split_folder)
    assert from_archive.train.sample_ids == from_folder.train.sample_ids
    assert torch.equal(from_archive.test.images, from_folder.test.images)


def test_cifar_style_slices_follow_sorted_names(split_folder: Path) -> None:
    rule = {"train": ("train", 0, 6), "val": ("train", 6, 8), "test": ("test", 0, 1)}
    dataset = load_cifar10_slices(split_folder, rule, name="mini")
    assert len(dataset.train) == 18 and len(dataset.val) == 6 and len(dataset.test) == 3
    assert dataset.val.sample_ids[:2] == ["train/cat/0006.png", "train/cat/0007.png"]
    assert dataset.test.sample_ids == ["test/cat/0000.png", "test/dog/0000.png", "test/emu/0000.png"]
    with pytest.raises(ValueError, match="needs at least 11"):
        load_cifar10_slices(split_folder, {**rule, "val": ("train", 6, 11)}, name="too-many")


def test_npz_round_trip_channel_last_floats(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((12, 8, 8, 3)).astype(np.float32)
    path = tmp_path / "set.npz"
    np.savez(
        path,
        x=x,
        y=np.arange(12) % 3,
        sample_id=np.array([f"s{i}" for i in range(12)]),
        split=np.array(["train"] * 8 + ["val"] * 2 + ["test"] * 2),
        class_names=np.array(["x", "y", "z"]),
    )
    dataset = load_npz(path)
    assert dataset.class_names == ["x", "y", "z"]
    assert dataset.train.images.shape == (8, 3, 8, 8)
    assert dataset.val.sample_ids == ["s8", "s9"]
    expected = np.rint(x[9].transpose(2, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(dataset.val.images[1].numpy(), expected)


def test_npz_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1]))
    with pytest.raises(ValueError, match=r"lacks arrays \['sample_id', 'split'\]"):
        load_npz(path)
    np.savez(
        path,
        x=np.zeros((2, 4, 4), np.uint8),
        y=np.array([0, 1]),
        sample_id=np.array(["a", "b"]),
        split=np.array(["train", "holdout"]),
    )
    with pytest.raises(ValueError, match="holdout"):
        load_npz(path)
    np.savez(
        path,
        x=np.zeros((2, 4, 4), np.uint8),
        y=np.array([0, 1]),
        sample_id=np.array(["a", "a"]),
        split=np.array(["train", "test"]),
    )
    with pytest.raises(ValueError, match="duplicated.*'a'"):
        load_npz(path)


def test_loaders_validate_options_as_the_api_does(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="unknown option 'colour'") as caught:
        load_dataset("digits", colour=1)
    assert caught.value.field == "options.colour"
    with pytest.raises(CatalogError, match="must be < 1") as caught:
        load_digits(val_fraction=0.7, test_fraction=0.5)
    assert caught.value.field == "options.val_fraction"
    with pytest.raises(CatalogError) as caught:
        load_imagefolder(tmp_path, per_class_limits={"holdout": 1})
    assert caught.value.field == "options.per_class_limits.holdout"
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "absent.npz")


def test_make_splits_random_forgetting_and_tombstones() -> None:
    dataset = load_digits()
    forget_ids = dataset.train.sample_ids[:5]
    tombstones = dataset.train.sample_ids[5:8]
    splits = make_splits(dataset, forget_ids=forget_ids, excluded_ids=tombstones)
    assert splits.forget.sample_ids == forget_ids
    assert len(splits.retain) == len(dataset.train) - 8
    assert not set(splits.retain.sample_ids) & set(forget_ids + tombstones)
    assert splits.val is dataset.val and splits.test is dataset.test
    assert splits.forget_class is None and splits.num_classes == 10
    assert splits.sample_ids()["forget"] == forget_ids


def test_make_splits_class_forgetting() -> None:
    dataset = load_digits()
    splits = make_splits(dataset, forget_class=4)
    assert len(splits.forget) == int((dataset.train.labels == 4).sum())
    assert set(splits.forget.labels.tolist()) == {4}
    assert 4 not in splits.retain.labels.tolist()
    assert splits.forget_class == 4


def test_make_splits_lists_unknown_and_non_train_ids() -> None:
    dataset = load_digits()
    val_id = dataset.val.sample_ids[0]
    with pytest.raises(UnknownSampleIds) as caught:
        make_splits(dataset, forget_ids=[dataset.train.sample_ids[0], "digits/9999", val_id])
    assert caught.value.unknown == ["digits/9999"]
    assert caught.value.not_in_train == [val_id]
    assert "digits/9999" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_make_splits_rejects_bad_requests() -> None:
    dataset = load_digits()
    with pytest.raises(ForgetClassOutOfRange, match="10 is out of range 0..9"):
        make_splits(dataset, forget_class=10)
    with pytest.raises(ForgetClassOutOfRange):
        make_splits(dataset, forget_class=-1)
    with pytest.raises(SplitError, match="exactly one"):
        make_splits(dataset, forget_ids=["digits/0000"], forget_class=1)
    with pytest.raises(SplitError, match="empty"):
        make_splits(dataset, forget_ids=[])


def test_imageset_subset_concat_and_select() -> None:
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.uint8).reshape(4, 3, 2, 2)
    image_set = ImageSet(images, torch.tensor([0, 1, 0, 1]), ["a", "b", "c", "d"])
    picked = image_set.subset([2, 0])
    assert picked.sample_ids == ["c", "a"] and torch.equal(picked.images[0], images[2])
    assert image_set.subset(torch.tensor([False, True, False, True])).sample_ids == ["b", "d"]
    assert image_set.of_class(1).sample_ids == ["b", "d"]
    assert len(picked.concat(image_set)) == 6
    assert image_set.select_ids(["d", "a"]).labels.tolist() == [1, 0]
    with pytest.raises(KeyError, match="'zz'"):
        image_set.select_ids(["zz"])
    with pytest.raises(ValueError, match="same length"):
        ImageSet(images, torch.tensor([0, 1]), ["a", "b", "c", "d"])
