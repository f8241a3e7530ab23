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

import math
from typing import TYPE_CHECKING, Any

import torch

from unlearning.methods.common import Job
from unlearning.methods.dau.critic import label_margin, wasserstein_1d
from unlearning.methods.iu import InfluenceUnlearning
from unlearning.methods.second_order import RHO_GRID, StepLine, sample_rows
from unlearning.methods.second_order_config import IuConfig
from unlearning.training import accuracy, predict_logits, seeded_generator

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import ImageSet, UnlearningSplits
    from unlearning.methods.dau.config import DauConfig

MATCH_PROBE = 512
"""Forget samples and unseen (validation) samples whose confidences `forget_match` compares."""


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
    iu = InfluenceUnlearning()
    if job.config.warm_start_step == "retain_drop":
        model, info = iu.unlearn(step_job)
        info.pop("seconds", None)  # the run's clock reports every stage once
        return model, {"method": "iu", **info}
    with job.clock.stage("direction"):
        model = step_job.working_copy().eval()
        direction, info = iu.direction(model, step_job)
    with job.clock.stage("step_search"):
        step = matched_step(model, direction, job.splits, config)
    step_job.progress(1.0, "done")
    return model, {"method": "iu", "rule": "forget_match", **info, "step": step}


def matched_step(
    model: Classifier, direction: dict[str, torch.Tensor], splits: UnlearningSplits, config: IuConfig
) -> dict[str, Any]:
    """Move `model` to the step whose forget samples look most like unseen ones (least W1 of phi) among
    the steps IU's rule allows, in place."""
    line = StepLine(model, direction)
    if not line.usable:
        return {"rho": 0.0, "reason": f"direction norm is {line.direction_norm}", "trace": []}
    generator = seeded_generator(config.seed + 1)
    probe = splits.retain.subset(sample_rows(len(splits.retain), config.probe_size, generator))
    forget = splits.forget.subset(sample_rows(len(splits.forget), MATCH_PROBE, generator))
    unseen = splits.val.subset(sample_rows(len(splits.val), MATCH_PROBE, generator))
    base_accuracy = accuracy(model, probe)
    trace: list[dict[str, float]] = []

    def score(rho: float) -> float | None:
        """W1 at rho, or None where the step costs more retain accuracy than IU's rule allows."""
        line.move(rho)
        probe_accuracy = accuracy(model, probe)
        point = {"rho": rho, "probe_accuracy": round(probe_accuracy, 2)}
        trace.append(point)
        if base_accuracy - probe_accuracy > config.max_retain_drop:
            return None
        distance = float(wasserstein_1d(_margins(model, forget), _margins(model, unseen)))
        point["w1"] = round(distance, 4)
        return distance

    scores: dict[float, float] = {0.0: score(0.0) or 0.0}
    for rho in RHO_GRID:
        value = score(rho)
        if value is None:
            break
        scores[rho] = value
    best = min(scores, key=scores.__getitem__)
    if best > 0:
        for rho in (best / math.sqrt(2), best * math.sqrt(2)):
            value = score(rho)
            if value is not None:
                scores[rho] = value
        best = min(scores, key=scores.__getitem__)
    line.move(best)
    return {"rho": best, "scale": line.scale(best), "w1": round(scores[best], 4), "trace": trace}


def _margins(model: Classifier, data: ImageSet) -> torch.Tensor:
    return label_margin(predict_logits(model, data), data.labels)
