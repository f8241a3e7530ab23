"""Multi-GAN unlearning (Hatua, Nguyen and Sung, 2024): `gan.py` holds the conditional DCGAN and its
training loop, `method.py` the four steps of the published outline and the method's parameters."""

from unlearning.methods.multigan.method import MultiGan, MultiGanConfig, invert_labels

__all__ = ["MultiGan", "MultiGanConfig", "invert_labels"]
