"""Discriminative Adversarial Unlearning: a min-max game between a membership attacker and the model.

Which game a run plays is `DauConfig.critic` (made concrete for the forget set by `for_forget_set`): the
paper's SAMIA attacker (`samia_game.py`) or the exact Wasserstein critic (`critic_game.py`); both share
the defender, the retain term and the stopping rule (`game.py`). Before the game, the retain set may be
swapped for the condensation method's reduced one, and the start moved to IU's step:

With `retain_source="condensed"` R is drawn from the condensation method's reduced retain set (built or
loaded from the per-model-version cache first, in the run's time: stage `condense`); the retain-accuracy
probe of the stopping rule stays on the real retain set, so both sources stop by the same measure.

With `warm_start="influence"` the game starts from IU's one Newton-like step (`warm_start.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from unlearning.methods.base import register
from unlearning.methods.common import Job, Method
from unlearning.methods.condensation.condense import reduce_retain_in
from unlearning.methods.dau.config import DauConfig
from unlearning.methods.dau.critic_game import CriticGame
from unlearning.methods.dau.samia_game import SamiaGame
from unlearning.methods.dau.warm_start import influence_start

if TYPE_CHECKING:
    from models.base import Classifier

CONDENSE_SHARE = 0.3
"""Share of the whole progress bar given to condensing the retain set when the cache misses."""
WARM_START_SHARE = 0.4
"""Share of the rest of the progress bar given to the influence warm start (`warm_start.py`)."""


class Dau(Method[DauConfig]):
    name = "dau"
    Config = DauConfig

    def unlearn(self, job: Job[DauConfig]) -> tuple[Classifier, dict[str, Any]]:
        config, splits = job.config, job.splits
        condensed = config.retain_source == "condensed"
        with torch.random.fork_rng(devices=[job.device] if job.device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            reduction = reduce_retain_in(job, config.condense, CONDENSE_SHARE) if condensed else None
            retain = splits.retain if reduction is None else reduction.images
            start = CONDENSE_SHARE if reduction is not None and not reduction.cache_hit else 0.0
            plays_critic = config.critic == "wasserstein" and len(splits.forget) >= config.small_set_below
            game_type = CriticGame if plays_critic else SamiaGame
            model, warm_start = job.model, None
            if config.warm_start == "influence":
                model, warm_start = influence_start(job, start, WARM_START_SHARE * (1 - start))
                start += WARM_START_SHARE * (1 - start)
            game = game_type(model, splits, retain, config, job.device, job.clock, teacher=job.model)
            unlearned, info = game.play(job.progress_span(start, 1 - start), job.should_stop)
        info["warm_start"] = warm_start
        info["retain_source"] = config.retain_source
        if reduction is not None:
            info.update(reduction.info(len(splits.retain)))
        return unlearned, info


register(Dau())
