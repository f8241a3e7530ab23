"""Multi-GAN unlearning (Hatua, Nguyen and Sung, 2024), implemented from the paper's published outline.

The outline, and what this module does at each step:
1. Two conditional GANs, one trained on the retain set and one on the forget set (`gan.py`: a small
   DCGAN sized to the images, conditioned on the class label).
   Choice: the retain GAN sees only the real retain data the method may read (`retain_fraction`).
2. Synthetic retain and synthetic forget images, labelled by the original model (its argmax).
   Choice: counts are `synthetic_retain_ratio` x |retain| and `synthetic_forget_ratio` x |forget|;
   conditioning labels follow each GAN's training label frequencies, but the label used for training is
   the original model's, as the outline says (the condition only steers diversity).
   Choice: synthetic images are quantised to uint8 like every other image set, so they go through the
   same batching and augmentation as real data.
3. Label inversion of the synthetic-forget and the real-forget images (`invert_labels`, rule
   `inversion`): `least_likely` (default) is the class the original model ranks lowest for that image;
   `runner_up` the class it ranks highest other than the label; `shift` is (label + 1) mod C. The label
   being inverted is the ground truth for real forget images and the original model's label for
   synthetic ones; every rule returns a class different from that label.
4. Fine-tune a copy of the original model on real retain + synthetic retain + relabelled forget +
   relabelled synthetic forget: plain cross-entropy over the shuffled union, with the base recipe's
   optimiser (SGD, momentum, one-cycle; `unlearning.training.train_model`) for `finetune_epochs` at a
   small peak learning rate, so the model moves from the original rather than relearning.

`retain_fraction` (default 1.0) is the share of the real retain set the method may read, drawn
uniformly with `seed`: it bounds both the retain GAN's data and the real retain images fine-tuned on,
for deployments where most retained data is no longer readable.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.data import ImageSet
from unlearning.methods.base import register
from unlearning.methods.common import Job, Method
from unlearning.methods.multigan.config import InversionRule, MultiGanConfig
from unlearning.methods.multigan.gan import ConditionalGenerator, train_gan
from unlearning.training import TrainRecipe, predict_probs, seeded_generator, train_model
from unlearning.types import Unservable

if TYPE_CHECKING:
    from models.base import Classifier

SAMPLE_CHUNK = 512
"""Images generated per generator call."""

STAGE_SHARES = {"retain_gan": 0.35, "forget_gan": 0.2, "synthesise": 0.05, "finetune": 0.4}
"""Shares of the progress bar per stage, roughly their cost at the defaults."""


def invert_labels(probs: Tensor, labels: Tensor, rule: InversionRule, num_classes: int) -> Tensor:
    """The inverted label of each row: never equal to `labels` (see the module docstring for the rules)."""
    if rule == "shift":
        return (labels + 1) % num_classes
    own = F.one_hot(labels, num_classes).bool()
    if rule == "least_likely":
        return probs.masked_fill(own, float("inf")).argmin(dim=1)
    if rule == "runner_up":
        return probs.masked_fill(own, float("-inf")).argmax(dim=1)
    raise ValueError(f"unknown inversion rule {rule!r}")


def readable_retain(retain: ImageSet, fraction: float, generator: torch.Generator) -> ImageSet:
    """The uniformly drawn `fraction` of the retain set the method may read (at least one image)."""
    if fraction >= 1.0:
        return retain
    count = max(1, round(fraction * len(retain)))
    rows = torch.randperm(len(retain), generator=generator)[:count]
    return retain.subset(rows.sort().values)


def synthesise(
    gan: ConditionalGenerator, count: int, label_source: Tensor, *, kind: str, generator: torch.Generator
) -> ImageSet:
    """`count` uint8 images conditioned on labels drawn with `label_source`'s class frequencies, labelled
    with those conditions (callers relabel them with the original model); ids `synthetic-<kind>/<n>`."""
    channels, size, _ = gan.image_shape
    if count == 0:
        return ImageSet.empty(channels, size)
    frequencies = torch.bincount(label_source, minlength=gan.num_classes).float()
    conditions = torch.multinomial(frequencies, count, replacement=True, generator=generator)
    images = torch.cat(
        [
            gan.sample(part, generator).mul_(255).round_().to("cpu", torch.uint8)
            for part in conditions.split(SAMPLE_CHUNK)
        ]
    )
    return ImageSet(images, conditions, [f"synthetic-{kind}/{index}" for index in range(count)])


def labelled_parts(
    original: Classifier,
    retain: ImageSet,
    synthetic_retain: ImageSet,
    forget: ImageSet,
    synthetic_forget: ImageSet,
    rule: InversionRule,
) -> tuple[dict[str, ImageSet], float | None]:
    """Steps 2-3: the four fine-tune parts under their labels (real retain: its own; synthetic retain:
    the original model's; real and synthetic forget: inverted), and the share of synthetic images the
    original model puts in the class their GAN was conditioned on (how class-faithful the GANs are)."""
    num_classes = original.spec.num_classes
    synthetic_retain_labels = predict_probs(original, synthetic_retain).argmax(dim=1)
    synthetic_forget_probs = predict_probs(original, synthetic_forget)
    synthetic_forget_labels = synthetic_forget_probs.argmax(dim=1)
    parts = {
        "real_retain": retain,
        "synthetic_retain": replace(synthetic_retain, labels=synthetic_retain_labels),
        "relabelled_forget": replace(
            forget, labels=invert_labels(predict_probs(original, forget), forget.labels, rule, num_classes)
        ),
        "relabelled_synthetic_forget": replace(
            synthetic_forget,
            labels=invert_labels(synthetic_forget_probs, synthetic_forget_labels, rule, num_classes),
        ),
    }
    conditions = torch.cat([synthetic_retain.labels, synthetic_forget.labels])
    model_labels = torch.cat([synthetic_retain_labels, synthetic_forget_labels])
    agreement = round(float((conditions == model_labels).float().mean()), 4) if len(conditions) else None
    return parts, agreement


class MultiGan(Method[MultiGanConfig]):
    name = "multigan"
    Config = MultiGanConfig

    def unlearn(self, job: Job[MultiGanConfig]) -> tuple[Classifier, dict[str, Any]]:
        config, splits, clock = job.config, job.splits, job.clock
        reason = config.unservable_reason(
            forget_count=len(splits.forget), class_wise=splits.forget_class is not None
        )
        if reason is not None:
            raise Unservable(reason)
        rng = seeded_generator(config.seed)
        done = 0.0

        def train_stage_gan(stage: str, data: ImageSet, steps: int) -> ConditionalGenerator:
            gan_config = config.gan.model_copy(update={"steps": steps})
            with clock.stage(stage):
                return train_gan(
                    data,
                    splits.num_classes,
                    gan_config,
                    device=job.device,
                    generator=rng,
                    progress=job.progress_span(done, STAGE_SHARES[stage], stage),
                    should_stop=job.should_stop,
                    stage=stage,
                )

        retain = readable_retain(splits.retain, config.retain_fraction, rng)
        retain_gan = train_stage_gan("retain_gan", retain, config.gan.steps)
        done += STAGE_SHARES["retain_gan"]
        forget_gan = train_stage_gan("forget_gan", splits.forget, config.forget_gan_steps or config.gan.steps)
        done += STAGE_SHARES["forget_gan"]

        with clock.stage("synthesise"):
            synthetic_retain = synthesise(
                retain_gan,
                round(config.synthetic_retain_ratio * len(splits.retain)),
                retain.labels,
                kind="retain",
                generator=rng,
            )
            synthetic_forget = synthesise(
                forget_gan,
                round(config.synthetic_forget_ratio * len(splits.forget)),
                splits.forget.labels,
                kind="forget",
                generator=rng,
            )
            original = job.working_copy().eval()
            parts, agreement = labelled_parts(
                original, retain, synthetic_retain, splits.forget, synthetic_forget, config.inversion
            )
        done += STAGE_SHARES["synthesise"]
        job.progress(done, "synthesise")

        finetune_set = ImageSet.empty(*retain.images.shape[1:3])
        for part in parts.values():
            finetune_set = finetune_set.concat(part)
        recipe = TrainRecipe(
            epochs=config.finetune_epochs,
            batch_size=config.batch_size,
            lr_max=config.lr_max,
            augment=config.augment,
            seed=config.seed,
        )
        with clock.stage("finetune"):
            tuned = train_model(
                job.working_copy(),
                finetune_set,
                recipe,
                progress=job.progress_span(done, STAGE_SHARES["finetune"], "finetune"),
                should_stop=job.should_stop,
                device=job.device,
            )
        info = {
            "retain_fraction": config.retain_fraction,
            "finetune_counts": {name: len(part) for name, part in parts.items()},
            "synthetic_condition_agreement": agreement,
            "seconds": clock.rounded(),
            "device": str(job.device),
        }
        job.progress(1.0, "done")
        return tuned, info


register(MultiGan())
