"""Where DAU's game starts (`DauConfig.warm_start`): the original model, or IU's one Newton-like step from it.

Why the influence step: on random forgetting the game alone forgets about as much as retraining but pays for
it in retain accuracy, because its small SGD steps lower memorisation everywhere, not only on the forget set
(cpu preset, random 10%, seeds 3-5: RA 81.2 against retraining's 84.0). IU's step is curvature-aware (a
WoodFisher inverse of the retain Fisher): it removes the forget set's influence along directions the retain
set barely uses, but how far it gets varies with the seed. Starting the game there leaves the game a short
correction instead of the whole way. The original stays the retain term's teacher, so the game pulls retain
outputs back to the original's, not to the step's.

The step is IU's own (`methods/iu.py`, its defaults and step rule) on `warm_start_samples` retain gradients
(N; RANDOM_GAME_DEFAULTS takes 500, as IU's 1000 made the step most of dau's time), with the memory of its
N x P gradient matrix capped at `warm_start_gib`: a worker that runs DAU should not need IU's 8 GiB allowance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from unlearning.methods.common import Job
from unlearning.methods.iu import InfluenceUnlearning
from unlearning.methods.second_order_config import IuConfig

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.methods.dau.config import DauConfig


def influence_start(job: Job[DauConfig], start: float, share: float) -> tuple[Classifier, dict[str, Any]]:
    """IU's step from `job.model` (untouched), reported on `share` of the progress bar from `start`."""
    config = IuConfig(
        seed=job.config.seed,
        retain_samples=job.config.warm_start_samples,
        max_gradient_gib=job.config.warm_start_gib,
    )
    step_job = Job(
        model=job.model,
        splits=job.splits,
        config=config,
        progress=job.progress_span(start, share, "warm_start"),
        should_stop=job.should_stop,
        device=job.device,
        clock=job.clock,
    )
    model, info = InfluenceUnlearning().unlearn(step_job)
    info.pop("seconds", None)  # the run's clock reports every stage once
    return model, {"method": "iu", **info}
