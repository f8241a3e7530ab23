"""Dataset-condensation unlearning (Khan, 2024): `condense.py` builds (and caches per model version) the
condensed train set and a request's reduced retain set, also used by DAU's `retain_source="condensed"`;
`method.py` unlearns on the reduced set with the modular schedule."""

from unlearning.methods.condensation.condense import CondenseSettings, condensed_retain_set
from unlearning.methods.condensation.method import Condensation, CondensationConfig

__all__ = ["Condensation", "CondensationConfig", "CondenseSettings", "condensed_retain_set"]
