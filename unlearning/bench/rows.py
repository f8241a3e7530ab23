"""Bench rows: a row is a registered method plus the params that make it that row.

`retrain-b` is a second retrain with another training seed, scored against `retrain` like any method:
its disparity is the noise floor (`seeds.py`). On a pruned original it keeps `retrain`'s initialisation
and changes only the batch order and augmentation: the mask was found from that initialisation, and from
another one the same mask trains to a worse model (cpu preset, 95% sparse, seeds 3-5: retain accuracy
68.1 against 75.2), which made a floor of 7.26 that no method needed to reach.
`dau` is DAU's defaults (`critic="auto"`: the critic for random forgetting, SAMIA for a class);
`dau-samia` is the paper's SAMIA game whatever the scenario; `dau-nobt` is DAU with lambda_bt = 0 (what
the Barlow Twins term buys); `dau-wasserstein` is DAU whose attacker is the exact Wasserstein critic
(`methods/dau/critic.py`) whatever the scenario, with that critic's own defaults (`methods/dau/config.py`
CRITIC_DEFAULTS); `dau-condensed` is DAU whose cross-entropy term trains on the condensed retain set
(faster if it keeps disparity); `multigan-r0.1` is Multi-GAN allowed to read a tenth of the retain set;
`retrain` gets the preset's recipe. Rows that condense (`condensation`, `dau-condensed`) bypass the
per-version condensed-set cache, so their seconds are what the first request against a model version pays,
whatever ran before. Any other registered method name is a row with its default params, so methods added
later appear in `--methods` without touching the bench.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from unlearning.bench.presets import Preset
from unlearning.methods import available_methods

REFERENCE_ROW = "retrain"
NOISE_FLOOR_ROW = "retrain-b"
RETRAIN_B_SEED_OFFSET = 1_000
"""retrain-b trains with seed + this: another initialisation and batch order, the same retain set."""
DEFAULT_ROWS = ("retrain", "dau", "dau-nobt")


@dataclass(frozen=True)
class RowSpec:
    name: str
    method: str
    params: dict[str, Any]


COLD_CONDENSE = {"condense": {"cache": False}}


def _retrain(preset: Preset, seed: int) -> RowSpec:
    return RowSpec("retrain", "retrain", {"recipe": preset.recipe_for(seed).model_dump()})


def _retrain_b(preset: Preset, seed: int) -> RowSpec:
    return RowSpec(
        NOISE_FLOOR_ROW, "retrain", {"recipe": preset.recipe_for(seed + RETRAIN_B_SEED_OFFSET).model_dump()}
    )


def _retrain_b_same_init(preset: Preset, seed: int) -> RowSpec:
    spec = _retrain_b(preset, seed)
    return RowSpec(spec.name, spec.method, {**spec.params, "init_seed": preset.recipe_for(seed).seed})


def _dau(preset: Preset, seed: int) -> RowSpec:
    return RowSpec("dau", "dau", {"seed": seed})


def _dau_samia(preset: Preset, seed: int) -> RowSpec:
    return RowSpec("dau-samia", "dau", {"seed": seed, "critic": "samia"})


def _dau_nobt(preset: Preset, seed: int) -> RowSpec:
    return RowSpec("dau-nobt", "dau", {"seed": seed, "lambda_bt": 0.0})


def _dau_wasserstein(preset: Preset, seed: int) -> RowSpec:
    return RowSpec("dau-wasserstein", "dau", {"seed": seed, "critic": "wasserstein"})


def _dau_condensed(preset: Preset, seed: int) -> RowSpec:
    return RowSpec("dau-condensed", "dau", {"seed": seed, "retain_source": "condensed", **COLD_CONDENSE})


def _condensation(preset: Preset, seed: int) -> RowSpec:
    return RowSpec("condensation", "condensation", {"seed": seed, **COLD_CONDENSE})


def _multigan_tenth(preset: Preset, seed: int) -> RowSpec:
    return RowSpec("multigan-r0.1", "multigan", {"seed": seed, "retain_fraction": 0.1})


SPECIAL_ROWS: dict[str, Callable[[Preset, int], RowSpec]] = {
    "retrain": _retrain,
    NOISE_FLOOR_ROW: _retrain_b,
    "dau": _dau,
    "dau-samia": _dau_samia,
    "dau-nobt": _dau_nobt,
    "dau-wasserstein": _dau_wasserstein,
    "dau-condensed": _dau_condensed,
    "multigan-r0.1": _multigan_tenth,
    "condensation": _condensation,
}


def known_rows() -> list[str]:
    return sorted(set(SPECIAL_ROWS) | set(available_methods()))


def row_spec(name: str, preset: Preset, seed: int, *, sparse: bool = False) -> RowSpec:
    """The row `name` for `seed`; `sparse`: the original is pruned (`retrain-b` keeps the initialisation)."""
    if name == NOISE_FLOOR_ROW and sparse:
        return _retrain_b_same_init(preset, seed)
    if name in SPECIAL_ROWS:
        return SPECIAL_ROWS[name](preset, seed)
    if name in available_methods():
        return RowSpec(name, name, {})
    raise ValueError(f"unknown bench method {name!r}; known: {known_rows()}")


def parse_rows(methods: str) -> list[str]:
    """Comma-separated row names, deduplicated, the reference (retrain) first so ratios can be taken,
    then the noise floor (retrain-b)."""
    names = list(dict.fromkeys(name.strip() for name in methods.split(",") if name.strip()))
    if not names:
        raise ValueError("--methods names no method")
    unknown = [name for name in names if name not in known_rows()]
    if unknown:
        raise ValueError(f"unknown bench methods {unknown}; known: {known_rows()}")
    return sorted(names, key=lambda name: (name != REFERENCE_ROW, name != NOISE_FLOOR_ROW))
