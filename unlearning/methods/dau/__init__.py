"""Discriminative Adversarial Unlearning (DESIGN section 9): `method.py` holds the game, the other
modules its parts (attacker, sensitivity, Barlow Twins, attack pools) and `config.py` its parameters.

Only the torch-free config is imported here, so validating params loads no torch; the game registers
itself when `unlearning.methods.get_method("dau")` imports `method.py`."""

from unlearning.methods.dau.config import DauConfig

__all__ = ["DauConfig"]
