"""Discriminative Adversarial Unlearning (DESIGN section 9): `method.py` holds the game, the other
modules its parts (attacker, sensitivity, Barlow Twins, attack pools) and `config.py` its parameters."""

from unlearning.methods.dau.config import DauConfig
from unlearning.methods.dau.method import Dau

__all__ = ["Dau", "DauConfig"]
