"""A small conditional DCGAN (Radford et al. 2016) sized to the images at hand, and its training loop.

Geometry: an image side S is written S = base * 2^k with k as large as possible while base >= 4, so
32 x 32 CIFAR gives a 4 x 4 seed and three upsampling blocks, 8 x 8 digits a 4 x 4 seed and one block,
28 x 28 a 7 x 7 seed and two blocks (odd sides: k = 0, the seed is the image).

    G(z, y): [z, onehot(y)] -> Linear -> BN -> ReLU -> (width*2^k) x base x base
             -> k x [ConvTranspose 4x4 stride 2 -> BN -> ReLU] (channels halve each time)
             -> Conv 3x3 -> tanh -> image in [-1, 1]; `sample` maps it to [0, 1]
    D(x, y): k x [Conv 4x4 stride 2 -> BN (not on the first block) -> LeakyReLU 0.2] -> flatten -> h
             -> Linear(h) + <embed(y), h>  (projection conditioning, Miyato & Koyama 2018)

Training is the non-saturating GAN game with DCGAN's Adam settings (lr 2e-4, betas 0.5 / 0.999):
    D step: min_D  BCE(D(x, y), 1) + BCE(D(G(z, y'), y'), 0)
    G step: min_G  BCE(D(G(z, y'), y'), 1)
where (x, y) is a real minibatch and y' are labels drawn from the training set's label frequencies.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unlearning.data import ImageSet
from unlearning.methods.common import raise_if_stopped
from unlearning.methods.multigan.config import GanConfig
from unlearning.training import batch_stream
from unlearning.types import Progress, ShouldStop


def geometry(image_size: int) -> tuple[int, int]:
    """(base, blocks) with image_size = base * 2**blocks and base >= 4 (see the module docstring)."""
    base, blocks = image_size, 0
    while base % 2 == 0 and base // 2 >= 4:
        base, blocks = base // 2, blocks + 1
    return base, blocks


class ConditionalGenerator(nn.Module):
    def __init__(self, num_classes: int, channels: int, image_size: int, config: GanConfig) -> None:
        super().__init__()
        base, blocks = geometry(image_size)
        self.num_classes = num_classes
        self.latent_dim = config.latent_dim
        self.image_shape = (channels, image_size, image_size)
        self.seed_shape = (config.width * 2**blocks, base, base)
        self.project = nn.Sequential(
            nn.Linear(config.latent_dim + num_classes, self.seed_shape[0] * base * base, bias=False),
            nn.BatchNorm1d(self.seed_shape[0] * base * base),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        width = self.seed_shape[0]
        for _ in range(blocks):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(inplace=True),
            ]
            width //= 2
        layers += [nn.Conv2d(width, channels, 3, padding=1), nn.Tanh()]
        self.upsample = nn.Sequential(*layers)

    def forward(self, noise: Tensor, labels: Tensor) -> Tensor:
        """Images in [-1, 1] for noise B x latent_dim and labels B."""
        condition = F.one_hot(labels, self.num_classes).to(noise.dtype)
        seed = self.project(torch.cat([noise, condition], dim=1)).view(-1, *self.seed_shape)
        return self.upsample(seed)

    @torch.no_grad()
    def sample(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Float images in [0, 1] (B x C x H x W, on the generator's device), one per conditioning label."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        noise = torch.randn(len(labels), self.latent_dim, generator=generator).to(device)
        images = (self(noise, labels.to(device)) + 1) / 2
        self.train(was_training)
        return images.clamp_(0, 1)


class ConditionalDiscriminator(nn.Module):
    def __init__(self, num_classes: int, channels: int, image_size: int, config: GanConfig) -> None:
        super().__init__()
        base, blocks = geometry(image_size)
        layers: list[nn.Module] = []
        width_in, width_out = channels, config.width
        for block in range(blocks):
            layers.append(nn.Conv2d(width_in, width_out, 4, stride=2, padding=1, bias=block > 0))
            if block > 0:
                layers.append(nn.BatchNorm2d(width_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            width_in, width_out = width_out, width_out * 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        hidden = width_in * base * base
        self.real_fake = nn.Linear(hidden, 1)
        self.class_embedding = nn.Embedding(num_classes, hidden)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Realness logits (B) of images in [-1, 1] given their labels."""
        h = self.body(images)
        return self.real_fake(h).squeeze(1) + (self.class_embedding(labels) * h).sum(dim=1)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: conv, linear and embedding weights N(0, 0.02), batch-norm scales N(1, 0.02).

    It matters for the projection term: a default N(0, 1) class embedding over a few hundred features
    swamps the real/fake logit and the generator learns nothing about the class."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            bias = getattr(layer, "bias", None)
            if bias is not None:
                nn.init.zeros_(bias)
        elif isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def train_gan(
    data: ImageSet,
    num_classes: int,
    config: GanConfig,
    *,
    device: torch.device,
    generator: torch.Generator,
    progress: Progress,
    should_stop: ShouldStop,
    stage: str,
) -> ConditionalGenerator:
    """Train a conditional GAN on `data` (its labels condition it); return the generator in eval mode.

    Every random draw (initialisation, noise, labels, batches) comes from `generator`, so a seeded run
    repeats exactly and the global RNG is left as it was."""
    channels, size = int(data.images.shape[1]), int(data.images.shape[2])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
        gen = ConditionalGenerator(num_classes, channels, size, config)
        disc = ConditionalDiscriminator(num_classes, channels, size, config)
        gen.apply(dcgan_init)
        disc.apply(dcgan_init)
    gen, disc = gen.to(device), disc.to(device)
    betas = (config.beta1, 0.999)
    gen_optimiser = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=betas)
    disc_optimiser = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=betas)
    label_frequencies = torch.bincount(data.labels, minlength=num_classes).float()
    real_batches = batch_stream(data, config.batch_size, generator, device=device)
    for step in range(config.steps):
        raise_if_stopped(should_stop, f"{stage} step {step}")
        real, real_labels = next(real_batches)
        count = len(real)
        fake_labels = torch.multinomial(label_frequencies, count, replacement=True, generator=generator)
        fake_labels = fake_labels.to(device)
        noise = torch.randn(count, config.latent_dim, generator=generator).to(device)
        fake = gen(noise, fake_labels)
        ones, zeros = torch.ones(count, device=device), torch.zeros(count, device=device)

        disc_loss = F.binary_cross_entropy_with_logits(
            disc(real * 2 - 1, real_labels), ones
        ) + F.binary_cross_entropy_with_logits(disc(fake.detach(), fake_labels), zeros)
        disc_optimiser.zero_grad(set_to_none=True)
        disc_loss.backward()
        disc_optimiser.step()

        gen_loss = F.binary_cross_entropy_with_logits(disc(fake, fake_labels), ones)
        gen_optimiser.zero_grad(set_to_none=True)
        gen_loss.backward()
        gen_optimiser.step()
        progress((step + 1) / config.steps, stage)
    return gen.eval()
