"""Dataset-condensation unlearning (Khan, 2024): `condense.py` builds (and caches per model version) the
condensed train set and a request's reduced retain set, also used by DAU's `retain_source="condensed"`;
`method.py` unlearns on the reduced set with the modular schedule; `config.py` holds the (torch-free)
parameters, the only thing imported here."""

from unlearning.methods.condensation.config import CondensationConfig, CondenseSettings

__all__ = ["CondensationConfig", "CondenseSettings"]
