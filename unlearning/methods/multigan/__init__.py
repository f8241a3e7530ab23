"""Multi-GAN unlearning (Hatua, Nguyen and Sung, 2024): `gan.py` holds the conditional DCGAN and its
training loop, `method.py` the four steps of the published outline, `config.py` the (torch-free)
parameters, the only thing imported here."""

from unlearning.methods.multigan.config import MultiGanConfig

__all__ = ["MultiGanConfig"]
