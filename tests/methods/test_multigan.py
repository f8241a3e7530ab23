"""Multi-GAN unlearning on tiny problems: each step of the outline does what it says."""

from __future__ import annotations

import pytest
import torch
from baselines_helpers import FORGET_CLASS, accuracies, digits_problem, one_thread, state, stop_after  # noqa: F401
from pydantic import ValidationError

from unlearning.methods import get_method, parse_params
from unlearning.methods.multigan import method as multigan_method
from unlearning.methods.multigan.gan import (
    ConditionalDiscriminator,
    ConditionalGenerator,
    GanConfig,
    geometry,
    train_gan,
)
from unlearning.methods.multigan.method import invert_labels, readable_retain
from unlearning.training import predict_logits, seeded_generator
from unlearning.types import Cancelled, never_stop, no_progress

QUICK = {"gan": {"steps": 20, "lr": 1e-3}, "forget_gan_steps": 10, "finetune_epochs": 2, "lr_max": 0.05}
"""Short GAN training: enough to exercise every step; the fine-tune does the forgetting."""


def run(splits, should_stop=never_stop, **params):  # type: ignore[no-untyped-def]
    config = parse_params("multigan", {**QUICK, **params})
    return get_method("multigan").run(digits_problem().model, splits, config, no_progress, should_stop)


@pytest.mark.parametrize(("channels", "size", "blocks"), [(1, 8, 1), (3, 32, 3), (1, 28, 2), (3, 9, 0)])
def test_generator_makes_images_of_the_right_shape_and_range_for_every_label(channels, size, blocks) -> None:
    assert geometry(size)[1] == blocks
    config = GanConfig(width=8)
    generator = ConditionalGenerator(5, channels, size, config)
    labels = torch.arange(5).repeat_interleave(3)
    images = generator.sample(labels, seeded_generator(0))
    assert images.shape == (15, channels, size, size)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert images.std() > 0  # not a constant image
    assert ConditionalDiscriminator(5, channels, size, config)(images * 2 - 1, labels).shape == (15,)


def test_conditional_gan_on_digits_draws_the_class_it_is_asked_for() -> None:
    problem = digits_problem()
    config = GanConfig(steps=100, lr=2e-3, width=8, latent_dim=16)
    gan = train_gan(
        problem.dataset.train,
        10,
        config,
        device=torch.device("cpu"),
        generator=seeded_generator(0),
        progress=no_progress,
        should_stop=never_stop,
        stage="gan",
    )
    labels = torch.arange(10).repeat(20)
    samples = gan.sample(labels, seeded_generator(1))
    assert samples.shape == (200, 1, 8, 8) and 0 <= float(samples.min()) and float(samples.max()) <= 1
    predicted = predict_logits(problem.model, samples.mul(255).round().to(torch.uint8)).argmax(dim=1)
    assert float((predicted == labels).float().mean()) > 0.6  # chance is 0.1


def test_label_inversion_follows_each_rule() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.01, 0.6, 0.3, 0.09], [0.7, 0.1, 0.2, 0.0]])
    labels = torch.tensor([0, 2, 3])  # row 2: the label is also the class ranked lowest
    assert invert_labels(probs, labels, "least_likely", 4).tolist() == [3, 0, 1]
    assert invert_labels(probs, labels, "runner_up", 4).tolist() == [1, 1, 0]
    assert invert_labels(probs, labels, "shift", 4).tolist() == [1, 3, 0]
    random_probs = torch.rand(500, 7, generator=seeded_generator(0)).softmax(dim=1)
    random_labels = torch.randint(7, (500,), generator=seeded_generator(1))
    for rule in ("least_likely", "runner_up", "shift"):
        assert not (invert_labels(random_probs, random_labels, rule, 7) == random_labels).any()


def test_retain_fraction_bounds_the_real_retain_data_the_method_reads(monkeypatch) -> None:
    splits = digits_problem().random_splits
    subset = readable_retain(splits.retain, 0.1, seeded_generator(0))
    assert len(subset) == round(0.1 * len(splits.retain))
    assert set(subset.sample_ids) <= set(splits.retain.sample_ids)

    gan_data, finetune_data = [], []

    def recording_train_gan(data, *args, **kwargs):  # type: ignore[no-untyped-def]
        gan_data.append(data)
        return train_gan(data, *args, **kwargs)

    def recording_train_model(model, data, *args, **kwargs):  # type: ignore[no-untyped-def]
        finetune_data.append(data)
        return model

    monkeypatch.setattr(multigan_method, "train_gan", recording_train_gan)
    monkeypatch.setattr(multigan_method, "train_model", recording_train_model)
    _, info = run(splits, retain_fraction=0.1)
    retain_ids = set(splits.retain.sample_ids)
    read = [sample_id for sample_id in finetune_data[0].sample_ids if sample_id in retain_ids]
    assert len(gan_data[0]) == len(read) == round(0.1 * len(splits.retain))
    assert set(gan_data[0].sample_ids) == set(read)
    assert gan_data[1].sample_ids == splits.forget.sample_ids
    counts = info["finetune_counts"]
    assert counts["real_retain"] == len(read)
    assert counts["synthetic_retain"] == round(0.2 * len(splits.retain))
    assert counts["relabelled_forget"] == counts["relabelled_synthetic_forget"] == len(splits.forget)


def test_real_and_synthetic_forget_images_are_fine_tuned_under_inverted_labels(monkeypatch) -> None:
    splits = digits_problem().random_splits
    finetune_data = []
    monkeypatch.setattr(
        multigan_method, "train_model", lambda model, data, *a, **k: finetune_data.append(data) or model
    )
    run(splits, inversion="shift")
    data = finetune_data[0]
    label_of = dict(zip(data.sample_ids, data.labels.tolist(), strict=True))
    forget_labels = splits.forget.labels.tolist()
    assert [label_of[sample_id] for sample_id in splits.forget.sample_ids] == [
        (y + 1) % 10 for y in forget_labels
    ]
    retain_labels = dict(zip(splits.retain.sample_ids, splits.retain.labels.tolist(), strict=True))
    assert all(label_of[sample_id] == label for sample_id, label in retain_labels.items())


def test_multigan_forgets_a_class_and_leaves_the_input_model_alone() -> None:
    problem = digits_problem()
    splits = problem.class_splits
    before, weights = accuracies(problem.model, splits), state(problem.model)
    model, info = run(splits)
    after = accuracies(model, splits)
    assert before["forget"] > 90 and after["forget"] < 10
    assert after["retain"] > before["retain"] - 10
    assert all(torch.equal(weights[name], value) for name, value in problem.model.state_dict().items())
    assert set(info["seconds"]) == {"retain_gan", "forget_gan", "synthesise", "finetune"}
    assert (splits.forget.labels == FORGET_CLASS).all()


def test_multigan_repeats_exactly_with_the_same_seed() -> None:
    splits = digits_problem().random_splits
    first, second = run(splits, finetune_epochs=1)[0], run(splits, finetune_epochs=1)[0]
    assert all(torch.equal(a, b) for a, b in zip(state(first).values(), state(second).values(), strict=True))


def test_multigan_stops_when_asked() -> None:
    should_stop = stop_after(5)
    with pytest.raises(Cancelled):
        run(digits_problem().random_splits, should_stop=should_stop)
    assert should_stop.count["n"] == 6


def test_params_are_validated() -> None:
    for bad in (
        {"retain_fraction": 0.0},
        {"retain_fraction": 1.5},
        {"inversion": "random"},
        {"gan": {"steps": 0}},
    ):
        with pytest.raises(ValidationError):
            parse_params("multigan", bad)
    assert parse_params("multigan", {}).retain_fraction == 1.0
