"""Discriminative Adversarial Unlearning (DESIGN section 9): `method.py` is the method (which game, from
where, on which retain set), `game.py` what both games share (the defender, the loop, the stopping rule),
`samia_game.py` and `critic_game.py` the two attackers' games, the other modules their parts (attacker,
critic, sensitivity, Barlow Twins, attack pools, warm start) and `config.py` the parameters.

Only the torch-free config is imported here, so validating params loads no torch; the method registers
itself when `unlearning.methods.get_method("dau")` imports `method.py`."""

from unlearning.methods.dau.config import DauConfig

__all__ = ["DauConfig"]
