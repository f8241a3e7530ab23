"""Sensitivity of the defender's softmax to tiny input noise: the attacker's second token value.

    s_c(x) = mean_k |p_c(x + eps * u_k) - p_c(x)| / eps,    u_k ~ N(0, I),  k = 1..m

p: the defender's softmax (C), eps: noise scale in [0, 1] pixel space, m: noisy copies. Members of the
training set sit in flatter regions of the loss surface, so their s is smaller (Yuan & Zhang 2022).

Two ways to compute it, both on a model in eval mode (batch norm must not mix the copies):
- `finite_difference`: the m noisy copies of the whole batch go through the network in one forward
  (one (m+1)B batch when p is not given). Costs m forwards per sample. Must run in fp32: the
  difference of two softmaxes at eps = 1e-3 cancels most bf16/fp16 digits, so autocast is disabled.
- `jvp`: forward-mode derivative J_p(x) u_k with torch.func.jvp (the eps -> 0 limit, exact for the
  same u_k). No cancellation, so it is safe under low precision, but each direction costs about two
  to three forwards.
For eps = 1e-3 the two agree to a fraction of a percent (tests check it), so the default is the cheaper
finite difference. `expected_sensitivity` is the m -> infinity limit, sqrt(2/pi) * ||grad_x p_c||,
used only to measure estimators (C backward passes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from unlearning.methods.dau.config import SensitivityMethod


def sensitivity(
    model: nn.Module,
    x: Tensor,
    *,
    probs: Tensor | None = None,
    eps: float = 1e-3,
    copies: int = 2,
    method: SensitivityMethod = "finite_difference",
    generator: torch.Generator | None = None,
) -> Tensor:
    """B x C sensitivities of `model`'s softmax at `x` (B x ...), without gradients.

    `probs` (the clean softmax, fp32) saves one forward in the finite-difference method when the caller
    already has it. `generator` must live on `x.device`.
    """
    if model.training:
        raise ValueError("sensitivity needs the model in eval mode: batch norm would mix the noisy copies")
    if copies < 1:
        raise ValueError(f"copies must be >= 1, got {copies}")
    batch = x.shape[0]
    memory_format = _memory_format_of(x)
    noise = torch.randn((copies, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    with torch.no_grad(), _full_precision(x.device):
        if method == "finite_difference":
            noisy = (x.unsqueeze(0) + eps * noise).reshape(copies * batch, *x.shape[1:])
            noisy = noisy.contiguous(memory_format=memory_format)
            if probs is None:
                both = torch.cat([x, noisy]).contiguous(memory_format=memory_format)
                out = torch.softmax(_at_least_fp32(model(both)), dim=1)
                probs, noisy_probs = out[:batch], out[batch:]
            else:
                noisy_probs = torch.softmax(_at_least_fp32(model(noisy)), dim=1)
            change = (noisy_probs.reshape(copies, batch, -1) - _at_least_fp32(probs).unsqueeze(0)).abs() / eps
        elif method == "jvp":
            repeated = x.unsqueeze(0).expand(copies, *x.shape).reshape(copies * batch, *x.shape[1:])
            tangent = noise.reshape(copies * batch, *x.shape[1:])
            _, directional = torch.func.jvp(
                lambda inp: torch.softmax(model(inp), dim=1), (repeated,), (tangent,)
            )
            change = _at_least_fp32(directional).reshape(copies, batch, -1).abs()
        else:
            raise ValueError(f"unknown sensitivity method {method!r}")
    return change.mean(dim=0)


def expected_sensitivity(model: nn.Module, x: Tensor) -> Tensor:
    """The m -> infinity, eps -> 0 limit: E|grad p_c . u| = sqrt(2/pi) * ||grad_x p_c(x)|| (B x C)."""
    x = x.detach().requires_grad_(True)
    probs = torch.softmax(model(x), dim=1)
    norms = []
    for c in range(probs.shape[1]):
        (grad,) = torch.autograd.grad(probs[:, c].sum(), x, retain_graph=c + 1 < probs.shape[1])
        norms.append(grad.flatten(1).norm(dim=1))
    return math.sqrt(2 / math.pi) * torch.stack(norms, dim=1).detach()


def _at_least_fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _memory_format_of(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _full_precision(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)
