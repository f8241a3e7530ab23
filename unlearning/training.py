"""Supervised training and inference shared by base training, retraining and the unlearning methods.

One place for the machinery every method needs: device choice, uint8 -> float conversion, vectorised
augmentation, seeded minibatches, AMP on CUDA, pruning-mask upkeep, cooperative cancellation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from models.base import Classifier
from unlearning.data import ImageSet
from unlearning.recipe import TrainRecipe as TrainRecipe  # defined torch-free; re-exported
from unlearning.types import Cancelled, Progress, ShouldStop, never_stop, no_progress

AUGMENT_MIN_SIZE = 16
"""Crop and flip only images at least this large: on 8x8 digits a 4-pixel shift destroys the digit."""


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_float(images: Tensor) -> Tensor:
    """uint8 images (0..255) as float32 in [0, 1], on the images' device."""
    return images.to(torch.float32).div_(255.0)


def augment(batch: Tensor, generator: torch.Generator | None = None, padding: int = 4) -> Tensor:
    """Random crop (zero padding `padding`) and horizontal flip per image, as batched tensor ops.

    Images smaller than 16 pixels are returned unchanged. Random draws come from `generator` (on the CPU),
    so a seeded run augments identically on any device.
    """
    size_b, _, height, width = batch.shape
    if min(height, width) < AUGMENT_MIN_SIZE or size_b == 0:
        return batch
    offsets = torch.randint(0, 2 * padding + 1, (2, size_b), generator=generator).to(batch.device)
    flips = (torch.rand(size_b, generator=generator) < 0.5).to(batch.device)
    padded = F.pad(batch, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(height, device=batch.device)  # B x H
    cols = offsets[1, :, None] + torch.arange(width, device=batch.device)  # B x W
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch_index = torch.arange(size_b, device=batch.device)[:, None, None]
    cropped = padded[batch_index, :, rows[:, :, None], cols[:, None, :]]  # B x H x W x C
    return cropped.permute(0, 3, 1, 2).contiguous()


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def epoch_batches(
    count: int,
    batch_size: int,
    generator: torch.Generator | None,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    fold_single: bool = False,
) -> Iterator[Tensor]:
    """Index tensors (CPU, int64) covering `range(count)` once, shuffled with `generator`. `fold_single`:
    a last batch of one sample joins the batch before it (a BatchNorm layer whose map is 1x1, as in
    MobileNetV3's squeeze-excitation, cannot train on one sample)."""
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    for start in range(0, count, batch_size):
        if fold_single and count - start == batch_size + 1:
            yield order[start:]
            return
        index = order[start : start + batch_size]
        if drop_last and len(index) < batch_size:
            return
        yield index


def batch_stream(
    data: ImageSet,
    batch_size: int,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    augmented: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless (float images in [0, 1], labels) minibatches on `device`, reshuffled each pass.

    For loops counted in iterations rather than epochs (unlearning methods draw forget, retain and val
    batches side by side). Batches are `min(batch_size, len(data))` rows; the last short batch of a pass is
    dropped when the set is larger than one batch.
    """
    if len(data) == 0:
        raise ValueError("cannot draw minibatches from an empty image set")
    images = data.images.to(device)
    labels = data.labels.to(device)
    size = min(batch_size, len(data))
    while True:
        for index in epoch_batches(len(data), size, generator, drop_last=True):
            index = index.to(images.device)
            batch = to_float(images[index])
            if augmented:
                batch = augment(batch, generator)
            yield batch, labels[index]


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA devices that support it (fp16 otherwise); nothing on CPU."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def needs_grad_scaler(device: torch.device) -> bool:
    return device.type == "cuda" and not torch.cuda.is_bf16_supported()


def memory_format_for(model: Classifier, device: torch.device) -> torch.memory_format:
    """channels_last for convolutional nets on CPU (about 1.7x faster there), the default otherwise.

    oneDNN's channels_last kernels stall on convolutions with fewer than 8 output channels (seen with a
    width-4 test model: minutes per step), so such tiny nets keep the default layout.
    """
    convolutions = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    if device.type != "cpu" or not convolutions:
        return torch.contiguous_format
    if min(conv.out_channels for conv in convolutions) < 8:
        return torch.contiguous_format
    return torch.channels_last


ONE_CYCLE_MIN_STEPS = 8
"""Below this many steps OneCycleLR's warm-up phase is empty (it divides by zero); use a flat rate."""


def one_cycle_schedule(
    optimizer: torch.optim.Optimizer, lr_max: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle learning rate (25% warm-up); a constant `lr_max` for runs too short to have a cycle."""
    if total_steps < ONE_CYCLE_MIN_STEPS:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr_max, total_steps=total_steps, pct_start=0.25
    )


def train_model(
    model: Classifier,
    data: ImageSet,
    recipe: TrainRecipe,
    *,
    progress: Progress = no_progress,
    should_stop: ShouldStop = never_stop,
    device: torch.device | str | None = None,
) -> Classifier:
    """Train `model` in place on `data` with `recipe`; return it in eval mode on `device`.

    Pruning masks (`model.masks`) are re-applied after every optimiser step so pruned weights stay zero.
    `should_stop()` is checked every iteration; when it returns True, `Cancelled` is raised.
    """
    if len(data) == 0:
        raise ValueError("cannot train on an empty image set")
    device = torch.device(device) if device is not None else pick_device()
    memory_format = memory_format_for(model, device)
    model.to(device=device, memory_format=memory_format)
    model.apply_masks()
    generator = seeded_generator(recipe.seed)
    images = data.images.to(device)
    labels = data.labels.to(device)
    steps_per_epoch = -(-len(data) // recipe.batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr_max, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    schedule = one_cycle_schedule(optimizer, recipe.lr_max, total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device))
    augmented = recipe.augment and min(data.images.shape[2:]) >= AUGMENT_MIN_SIZE

    model.train()
    step = 0
    for epoch in range(recipe.epochs):
        for index in epoch_batches(len(data), recipe.batch_size, generator, fold_single=True):
            if should_stop():
                raise Cancelled(f"training cancelled at epoch {epoch + 1}, step {step}")
            index = index.to(device)
            batch = to_float(images[index])
            if augmented:
                batch = augment(batch, generator)
            batch = batch.contiguous(memory_format=memory_format)
            with autocast(device):
                loss = F.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            model.apply_masks()
            step += 1
            progress(step / total_steps, "train")
    model.to(memory_format=torch.contiguous_format)
    return model.eval()


def _as_images(images: ImageSet | Tensor) -> Tensor:
    return images.images if isinstance(images, ImageSet) else images


@torch.no_grad()
def predict_logits(
    model: Classifier,
    images: ImageSet | Tensor,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> Tensor:
    """Logits (N x C, float32, CPU) for uint8 images or an `ImageSet`, in eval mode."""
    pixels = _as_images(images)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.to(device).eval()
    outputs = []
    try:
        for start in range(0, pixels.shape[0], batch_size):
            batch = to_float(pixels[start : start + batch_size].to(device))
            with autocast(device):
                outputs.append(model(batch).float().cpu())
    finally:
        model.train(was_training)
    if not outputs:
        return torch.zeros(0, model.spec.num_classes)
    return torch.cat(outputs)


def predict_probs(
    model: Classifier,
    images: ImageSet | Tensor,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> Tensor:
    """Softmax probabilities (N x C, float32, CPU)."""
    return predict_logits(model, images, batch_size=batch_size, device=device).softmax(dim=1)


def accuracy(model: Classifier, data: ImageSet, *, device: torch.device | str | None = None) -> float:
    """Top-1 accuracy in percent (0.0 for an empty set)."""
    if len(data) == 0:
        return 0.0
    predicted = predict_logits(model, data, device=device).argmax(dim=1)
    return 100.0 * float((predicted == data.labels.cpu()).float().mean())
