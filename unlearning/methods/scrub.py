"""SCRUB (Kurmanji et al. 2023): a student that stays close to its teacher on retain and moves away on forget.

Symbols: T the teacher (the original model, frozen), S the student (starts as a copy of T), D_f the forget
set, D_r the retain set with labels y, tau the distillation temperature,
KL_tau(S || T) = tau^2 * KL(softmax(T(x) / tau) || softmax(S(x) / tau)), alpha and gamma the retain weights.

    max step (one pass over D_f, only in the first `max_epochs` epochs):   max_S  KL_tau(S || T; D_f)
    min step (one pass over D_r, every epoch):    min_S  alpha * KL_tau(S || T; D_r) + gamma * CE(S; D_r, y)

Max steps stop early so the last epochs only restore retain behaviour (the paper's remedy against
over-forgetting). Defaults follow the authors' CIFAR settings: 3 epochs with max steps in the first 2,
lr 5e-4, tau 4, alpha 0.001, gamma 0.99, retain batch 128, forget batch 32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unlearning.methods.base import register
from unlearning.methods.common import Job, Method
from unlearning.methods.ft import SgdRun, steps_per_pass
from unlearning.methods.sgd_config import ScrubConfig

if TYPE_CHECKING:
    from models.base import Classifier


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL_tau(S || T), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


class Scrub(Method[ScrubConfig]):
    name = "scrub"
    Config = ScrubConfig

    def unlearn(self, job: Job[ScrubConfig]) -> tuple[Classifier, dict[str, Any]]:
        config, forget, retain = job.config, job.splits.forget, job.splits.retain
        total_steps = config.max_epochs * steps_per_pass(len(forget), config.forget_batch_size)
        total_steps += config.epochs * steps_per_pass(len(retain), config.batch_size)
        student = SgdRun(job, total_steps=total_steps)
        teacher = job.working_copy().eval()
        teacher.requires_grad_(False)

        def teacher_logits(x: Tensor) -> Tensor:
            with torch.no_grad(), student.autocast():
                return teacher(x)

        for epoch in range(config.epochs):
            if epoch < config.max_epochs:
                for x_f, _ in student.passes(forget, "max", batch_size=config.forget_batch_size):
                    with student.autocast():
                        logits_f = student.model(x_f)
                    loss = -distillation_kl(logits_f, teacher_logits(x_f), config.temperature)
                    student.update(loss, "max")
            for x_r, y_r in student.passes(retain, "min"):
                with student.autocast():
                    logits_r = student.model(x_r)
                kl = distillation_kl(logits_r, teacher_logits(x_r), config.temperature)
                loss = config.alpha * kl + config.gamma * F.cross_entropy(logits_r.float(), y_r)
                student.update(loss, "min")
        return student.result(epochs=config.epochs, max_epochs=config.max_epochs)


register(Scrub())
