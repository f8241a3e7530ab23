"""Every DAU hyperparameter, typed, with the default and the reason for it."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from unlearning.methods.base import MethodConfig
from unlearning.methods.condensation.config import CondenseSettings
from unlearning.methods.second_order_config import IuConfig

ClassNonMembers = Literal["relabel", "mask_label", "other_classes", "same_class"]
"""Who plays the non-members when a whole class is forgotten (see `pools.py` for the measurements):
- `relabel`: validation images of the other classes, their label token set to the forgotten class;
- `mask_label`: validation images of the other classes, label token zeroed for members and non-members;
- `other_classes`: validation images of the other classes with their own labels (the label token alone
  separates them: a control);
- `same_class`: the forgotten class's own validation images (what random forgetting would do)."""

ClassRestoreTarget = Literal["original", "without_class"]
"""The probe's retain accuracy a class-wise restore phase counts as recovered (within `retain_tolerance`):
- `original`: the original model's;
- `without_class`: the original model's with the forgotten class taken out of its argmax, the accuracy
  its features give once the class is never predicted. A model retrained without the class lands near it,
  above the original's (cpu bench: retraining's retain accuracy is 1-2 points over the original's)."""

RetainSource = Literal["real", "condensed"]
"""Where the cross-entropy term's retain batches come from:
- `real`: the retain set itself;
- `condensed`: the condensation method's reduced retain set (`condensation/condense.py`): one condensed
  image per clean feature-space sub-class, the real retain images of sub-classes holding a forget
  sample. Built once per model version and cached; building it counts towards DAU's run time."""


Critic = Literal["auto", "samia", "wasserstein"]
"""Who plays the attacker:
- `auto` (the default): the Wasserstein critic for random forgetting of at least `small_set_below`
  samples, SAMIA for a whole class and for a single sample, each with its own defaults
  (CRITIC_DEFAULTS; for a class, CLASS_GAME_DEFAULTS). Random 10% on the cpu preset, seeds 3-5: the
  critic 2.31 +- 0.09 against SAMIA's 3.53 +- 1.63 at a fifth of its time; class-wise, seed 0: SAMIA
  1.07 against 3.35 or worse for every critic variant tried, whose game does not restore retain accuracy
  once a class is gone (`bench/results/cpu-2026-12-02/`).
- `samia`: the paper's SAMIA, a transformer over softmax, sensitivity and label tokens, trained by
  gradient steps against the defender (`attacker.py`);
- `wasserstein`: the optimal 1-Lipschitz critic of the logit-scaled confidence, solved exactly at every
  step (`critic.py`, `critic_game.py`)."""

CRITIC_DEFAULTS: dict[Critic, dict[str, Any]] = {
    "auto": {},
    "samia": {},
    "wasserstein": {"alpha": 1.5, "iterations": 30, "retain_distill": 5.0, "max_grad_norm": 5.0},
}
"""Each critic's own defaults where they differ from the field defaults (which are SAMIA's): a request
naming `critic` alone gets the game tuned for it; a field it names itself wins. The Wasserstein game's
were chosen on the cpu preset, random scenario, seeds 0-2, and confirmed on seeds 3-5
(`bench/results/cpu-distill-2026-12-01/`): distillation together with a larger step (alpha/retain_distill
near 0.3, gradient clip 5) moved the disparity, 2.12 +- 0.73 against 2.86 +- 1.25 for the critic alone."""

CLASS_GAME_DEFAULTS: dict[str, Any] = {
    "update_fraction": 0.5,
    "attacker_warmup": 20,
    "class_alpha_iterations": 10,
    "eval_every": 5,
    "retain_distill": 10.0,
}
"""What `auto` plays for a whole class, where it differs from the field defaults (SAMIA's game): the
defender updates the last half of the weights only, the attacker warms up for 20 steps, and alpha can drop
from iteration 10 with held-out checks every 5. Forgetting a class is a matter of the late layers: with the
early ones frozen, retain accuracy barely falls, so the restore phase that took a third of the run is over
at its first check, and each step's backward pass stops halfway. Chosen on the cpu preset, class scenario,
seeds 0-2 (0.87 +- 0.20 at 5.9 s against the field defaults' 1.05 +- 0.09 at 26.1 s, retrain 114 s);
confirmed on seeds 3-5: dense 0.50 +- 0.09 at 0.077 of a retrain (the field defaults: 0.81 +- 0.46 at
0.18), 95% sparse 0.36 +- 0.23 at 0.083 (0.42 +- 0.24 at 0.21) (`bench/results/cpu-2026-12-02/`).
The retain distillation term (10, toward the original's outputs over the other classes: `retain_term.py`)
was added later: what the game still lost was retain accuracy (RA 83.1 against retraining's 84.6-85.3,
whose nine-way problem is easier than the original's ten-way one), and distilling the original with the
class masked out lifts it where hard labels did not. Chosen on seeds 0-2 (0.40 +- 0.04 against 0.87 +-
0.20; 5: 0.43 +- 0.05, 20: 0.42 +- 0.09; a stricter restore phase at best 0.52 +- 0.08), confirmed on
seeds 3-5: dense 0.33 +- 0.04 at 0.078 of a retrain against 0.50 +- 0.09 without it on bit-identical
references (noise floor 0.43 +- 0.08); 95% sparse 0.35 +- 0.22 against 0.36 +- 0.23 (floor 0.27 +- 0.22)
(`bench/results/cpu-2026-12-03/`)."""

RANDOM_GAME_DEFAULTS: dict[str, Any] = {
    "warm_start": "influence",
    "warm_start_samples": 500,
    "iterations": 25,
    "update_fraction": 0.5,
    "nonmember_distill": 5.0,
    "alpha": 3.0,
    "retain_distill": 2.0,
    "weight_average": 0.8,
}
"""What `auto` plays for random forgetting on a dense model, on top of the critic's defaults: the game starts
from IU's step (`warm_start.py`), taken on 500 retain gradients, and plays 25 iterations on the last half of
the weights, with the non-member anchor holding the original's outputs on unseen data, a critic twice as
strong and a lighter retain term, and returns the moving average of its iterates.

- The warm start. With IU's own 1000 gradients the step took 10-13 s, most of dau's time, on every machine
  seen (an N x N Gram matrix of N x 304k gradients and N per-sample gradients). 500 gradients take about
  5 s; their noisier step goes half as far (rho 0.0128 against 0.0256), and ten more iterations make up the
  rest. Seeds 0-2: 1.79 +- 0.53 at 23.3 s, against 1.91 +- 0.55 at 25.4 s for 1000 gradients and 15
  iterations (500 with 15: 2.24 +- 0.50, 250 with 15: 2.75 +- 0.77); seeds 3-5: 1.54 +- 0.07 at 0.075 of a
  retrain, noise floor 0.80 +- 0.15 (`bench/results/cpu-2026-12-03/`). Not on a pruned model: at 95%
  sparsity IU's step overshoots (seeds 3-5: MIA 35.8 against retraining's 28.8) and the warm start scored
  2.56 +- 1.08 against the cold game's 1.54 +- 0.36 (`bench/results/cpu-2026-12-02/`). Nor on sets below
  `warm_start_from` samples.
- The last half of the weights (`update_fraction` 0.5; IU's step has moved all of them): the same
  disparity, each backward pass stopping halfway. On a machine of the fast kind (a retrain 116-126 s),
  seeds 0-2: 1.91 +- 0.69 against 1.91 +- 0.71 for every weight, the game 2.0-2.5 s instead of 5.0-5.5 s;
  seeds 3-5: 1.60 +- 0.59 against 1.63 +- 0.47 (`bench/results/cpu-2026-12-03/random-fast-*`).
- The anchor (`nonmember_distill` 5) with `alpha` 3 and `retain_distill` 2. Without the anchor the critic
  lowers every sample's confidence, unseen ones included, and the forget set chases a target that keeps
  falling: alpha 3 with retain_distill 2 and no anchor collapsed the model (22.19 +- 12.37, UA 48). Same
  machine, seeds 0-2: 1.61 +- 0.71 against 1.91 +- 0.69, lower on every seed (the anchor alone held
  accuracy but forgot less: 2.12 +- 0.68); seeds 3-5: 1.51 +- 0.71 against 1.60 +- 0.59; seeds 6-8: 2.09
  +- 1.62 against 2.29 +- 1.63. Lower on 8 of the 9 seeds, by 0.20 +- 0.11 paired
  (`bench/results/cpu-2026-12-04/`).
- The moving average of the iterates (`weight_average` 0.8, about the last five steps), measured on a machine
  of a third kind (`AMD EPYC`, a retrain 173-207 s), against the game above on the same references. Seeds
  0-2: 1.42 +- 0.12 against 1.48 +- 0.25 (0.9: 1.63 +- 0.47, 0.7: 1.44 +- 0.24); seeds 3-5: 0.89 +- 0.04
  against 1.12 +- 0.22, lower on every seed; the noise floor there is 0.98 +- 0.19
  (`bench/results/cpu-epyc-2026-12-04/`)."""

WarmStart = Literal["none", "influence"]
"""Where the game starts (`warm_start.py`): `none`, the original model; `influence`, IU's one Newton-like
step from it (the original stays the retain term's teacher)."""

SensitivityMethod = Literal["finite_difference", "jvp"]
"""How the attacker's sensitivity token is computed (`sensitivity.py`)."""


class AttackerConfig(BaseModel):
    """Shape of the attacker; the defaults are the architecture DESIGN section 9 specifies."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    token_dim: int = Field(64, ge=4, le=1024, description="d_model: width of each class token.")
    layers: int = Field(3, ge=1, le=12, description="TransformerEncoder layers.")
    heads: int = Field(4, ge=1, le=16, description="Attention heads (must divide token_dim).")
    ff_dim: int = Field(128, ge=4, le=4096, description="Feed-forward width inside each encoder layer.")
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout inside the encoder layers.")
    hidden_dim: int = Field(64, ge=4, le=4096, description="Width of the MLP after flattening the tokens.")


class DauConfig(MethodConfig):
    """Discriminative Adversarial Unlearning (DESIGN section 9). Defaults work on both bench scenarios."""

    seed: int = Field(0, ge=0, description="Seeds batches, noise and the attacker's initialisation.")

    # The game.
    critic: Critic = Field("auto", description="The attacker (Critic); auto picks it by the forget set.")
    critic_per_class: bool = Field(
        False,
        description="Wasserstein critic, random forgetting: match each class's forget samples to that "
        "class's non-members instead of the whole batch to the whole batch.",
    )
    iterations: int = Field(
        80,
        ge=1,
        le=100_000,
        description="Budget of game iterations (defender steps). Wasserstein critic: 30 (CRITIC_DEFAULTS).",
    )
    attacker_warmup: int = Field(
        60,
        ge=0,
        le=100_000,
        description="Attacker steps on the frozen defender before the game. Cheap: the defender's outputs "
        "on the attack pool are computed once and reused.",
    )
    attacker_steps: int = Field(1, ge=1, le=100, description="k_att: attacker steps per iteration.")
    batch_size: int = Field(128, ge=2, le=8192, description="Forget, validation and retain batch size.")
    retain_batch_size: int | None = Field(
        256,
        ge=2,
        le=8192,
        description="Retain batch of the CE term; None = batch_size. Twice the forget batch: the retain "
        "term is what holds accuracy (cpu bench, class scenario: disparity 1.16 at 128, 0.75 at 256).",
    )
    alpha: float = Field(
        3.0,
        ge=0,
        le=1000,
        description="Weight of the adversarial (membership) term. Wasserstein critic: 1.5 (CRITIC_DEFAULTS).",
    )
    lambda_bt: float = Field(
        0.01,
        ge=0,
        le=1000,
        description="Weight of the Barlow Twins term; 0 gives the `dau-nobt` ablation. Left out when the "
        "forget set is one sample: its batch is views of one image, whose feature spread is view noise, "
        "not the sample-to-sample variation BT matches to the validation batch.",
    )
    bt_off_diagonal: float = Field(0.0051, ge=0, le=1, description="Barlow Twins off-diagonal weight.")

    # Defender optimiser (SGD with momentum, as the base recipe).
    lr: float = Field(0.01, gt=0, le=10, description="Defender learning rate (at the start of the game).")
    lr_decay: bool = Field(
        True,
        description="Decay the defender's learning rate linearly to 0 over `iterations`. The original "
        "model ends its one-cycle schedule annealed; a constant rate un-anneals it (cpu bench, random "
        "scenario, alpha=0: retain accuracy 84.3 -> 77.6 after 80 plain retain steps at 0.01).",
    )
    max_grad_norm: float | None = Field(
        1.0,
        gt=0,
        le=1e6,
        description="Clip the defender's gradient norm (None: no clipping). The attacker's gradient with "
        "respect to near-zero probabilities can be huge; unclipped it collapsed the cpu-bench model to one "
        "class in the class scenario. Wasserstein critic: 5.0 (CRITIC_DEFAULTS).",
    )
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_average: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Return the exponential moving average of the trainable weights over the game's "
        "iterations, with this decay, instead of the last iterate (None: the last iterate). Each step "
        "follows one noisy batch of forget, non-member and retain samples; the average keeps what the last "
        "few steps agree on. RANDOM_GAME_DEFAULTS: 0.8.",
    )
    weight_decay: float = Field(5e-4, ge=0, le=1)
    update_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of the weights (the last layers') the defender updates; earlier ones stay frozen.",
    )
    warm_start: WarmStart = Field(
        "none", description="Where the game starts (WarmStart). auto, random forgetting, dense: influence."
    )
    warm_start_gib: float = Field(
        2.0,
        gt=0,
        le=1024,
        description="warm_start influence: memory cap on IU's N x P retain-gradient matrix (N shrinks).",
    )
    warm_start_samples: int = Field(
        IuConfig.model_fields["retain_samples"].default,
        ge=1,
        le=1_000_000,
        description="warm_start influence: N, the retain gradients in IU's WoodFisher (default: IU's own; "
        "RANDOM_GAME_DEFAULTS: 500).",
    )
    warm_start_from: int = Field(
        1000,
        ge=2,
        le=10_000_000,
        description="auto: random sets of at least this many samples (on a dense model) play "
        "RANDOM_GAME_DEFAULTS. 1000 is the size it was measured at; IU's step may cost up to 2 points of "
        "retain accuracy, and on a 10-sample request (digits) the warm start cost 1.9 where the cold game "
        "cost none, so smaller sets keep the cold game.",
    )
    retain_distill: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Weight of the KL divergence from the original model's outputs on the retain batch, "
        "next to its cross-entropy (`retain_term.py`): holds the retain behaviour the adversarial term "
        "erodes. 0: cross-entropy alone, as in the paper. Wasserstein critic: 5.0 (CRITIC_DEFAULTS); "
        "a class: 10.0 (CLASS_GAME_DEFAULTS), with the class masked out of the teacher's outputs.",
    )
    nonmember_distill: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Wasserstein critic: weight of the KL divergence from the original model's outputs on "
        "each iteration's non-member batch (the anchor): holds what unseen data looks like, the target the "
        "forget set is matched to. 0: off; RANDOM_GAME_DEFAULTS: 5.",
    )
    distill_temperature: float = Field(
        2.0, gt=0, le=100, description="Softmax temperature of the retain distillation term."
    )
    augment_retain: bool = Field(True, description="Crop + flip the retain batch, as in base training.")
    retain_source: RetainSource = Field("real", description="Retain batches of the CE term (RetainSource).")
    condense: CondenseSettings = Field(
        default_factory=CondenseSettings,
        description="How the retain set is condensed when retain_source is condensed; the defaults are the "
        "condensation method's, so both share one cached condensed set per model version.",
    )

    # Attacker.
    attacker: AttackerConfig = Field(default_factory=AttackerConfig)
    attacker_lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate of the attacker.")
    attacker_weight_decay: float = Field(1e-4, ge=0, le=1)

    # Sensitivity s_c = mean_k |p_c(x + eps u_k) - p_c(x)| / eps.
    sensitivity_eps: float = Field(1e-3, gt=0, le=1, description="eps: noise scale in [0, 1] pixel space.")
    sensitivity_copies: int = Field(2, ge=1, le=64, description="m: noisy copies per sample.")
    sensitivity_method: SensitivityMethod = "finite_difference"

    # Class-wise forgetting.
    random_alpha_iterations: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Random forgetting: alpha drops to 0 after this many iterations (None: never), leaving "
        "retain-only iterations that repair collateral damage.",
    )
    class_alpha_iterations: int = Field(
        30,
        ge=0,
        le=100_000,
        description="Class-wise: alpha drops to 0 at the first held-out evaluation from this iteration on "
        "that finds the class forgotten (attacker at chance, or held-out forget accuracy at most "
        "`class_forgotten_accuracy`); the rest of the budget restores retain accuracy. A fixed cut-off "
        "left a 95%-sparse cpu-bench model half-forgotten (UA 54.7).",
    )
    class_forgotten_accuracy: float = Field(
        1.0,
        ge=0,
        le=100,
        description="Class-wise: held-out forget accuracy (percent) at or below which the class counts as "
        "forgotten. Once the model stops predicting the class, the attacker may still find other cues "
        "(relabelled non-members differ from members in more than the label), so chance alone is too "
        "strict a test.",
    )
    class_nonmembers: ClassNonMembers = "relabel"
    class_restore_target: ClassRestoreTarget = Field(
        "original",
        description="Class-wise: the retain accuracy the restore phase aims at (ClassRestoreTarget)",
    )

    # Early stopping on a held-out part of the attack pool the attacker never trains on.
    holdout_fraction: float = Field(0.2, gt=0, lt=1, description="Share of forget and val held out.")
    holdout_max: int = Field(256, ge=8, le=100_000, description="Cap on held-out samples per side.")
    eval_every: int = Field(10, ge=1, le=100_000, description="Iterations between held-out evaluations.")
    stop_tolerance: float = Field(
        0.04, ge=0, le=0.5, description="Won when held-out attacker accuracy is within 0.5 +- this."
    )
    stop_patience: int = Field(2, ge=1, le=1000, description="Consecutive won evaluations before stopping.")
    retain_tolerance: float = Field(
        1.5,
        ge=0,
        le=100,
        description="Retain accuracy (percent, on a probe) counts as recovered within this "
        "of the original model's.",
    )
    retain_probe: int = Field(512, ge=16, le=100_000, description="Retain samples in the accuracy probe.")

    # Small sets (`pools.py` says why each piece is there).
    small_set_below: int = Field(
        2,
        ge=2,
        le=100_000,
        description="Forget sets of fewer samples play in small-set mode: the attacker learns membership "
        "from shadow members (retain samples) instead of the forget set, the forget samples become views "
        "(crop + flip as in base training, plus pixel noise) whose held-out part drives the stopping "
        "check, and the defender pulls them to the non-members' median membership score. 2: exactly the "
        "sets a split into training and held-out samples cannot serve (one forget sample, the everyday "
        "deletion request); every larger set plays bit-identically to before, so the bench figures "
        "stand. Higher values also serve sets of a few samples in this mode, whose sample split leaves a "
        "held-out sample or two that the defender's adversarial term never sees.",
    )
    view_pool_size: int = Field(
        64,
        ge=8,
        le=100_000,
        description="Small-set mode: each of the n forget samples gives ceil(view_pool_size / n) views. "
        "64 holds out 13 (holdout_fraction 0.2) for the stopping check and leaves a forget batch of 51, "
        "below batch_size: an iteration costs no more than an ordinary one.",
    )
    view_noise: float = Field(
        0.03,
        ge=0,
        le=0.5,
        description="Small-set mode: std of the Gaussian pixel noise (in [0, 1] pixel space) added to every "
        "view. It keeps the views of a small image distinct (crop and flip are off below 16 px) while "
        "staying well inside the sample's neighbourhood (about 8 grey levels), so what the defender "
        "unlearns on the views carries to the sample itself.",
    )

    amp: bool = Field(True, description="bf16 autocast for the defender on CUDA (never on CPU).")

    def for_forget_set(self, *, forget_count: int, class_wise: bool, pruned: bool = False) -> Self:
        """`critic="auto"` made concrete for this forget set (see Critic), with that critic's defaults
        (for a class, CLASS_GAME_DEFAULTS; for a random set on a dense model, RANDOM_GAME_DEFAULTS) for
        the fields the params left out; any other critic as it is."""
        if self.critic != "auto":
            return self
        critic = "wasserstein" if not class_wise and forget_count >= self.small_set_below else "samia"
        game: dict[str, Any] = {}
        if class_wise:
            game = CLASS_GAME_DEFAULTS
        elif critic == "wasserstein" and not pruned and forget_count >= self.warm_start_from:
            game = RANDOM_GAME_DEFAULTS
        return type(self).model_validate(
            {**game, **self.model_dump(exclude_unset=True), "critic": critic}, strict=False
        )

    @model_validator(mode="before")
    @classmethod
    def _critic_defaults(cls, data: Any) -> Any:
        """Fill the named critic's own defaults (CRITIC_DEFAULTS) for the fields the params leave out.

        They land in the params as if given, so a dump re-validates to the same game (the acceptance
        ladder re-validates a dump with a larger budget: `methods/base.py` `escalated`)."""
        if not isinstance(data, dict):
            return data
        critic = data.get("critic", cls.model_fields["critic"].default)
        defaults = CRITIC_DEFAULTS.get(critic, {}) if isinstance(critic, str) else {}
        return {**defaults, **data}

    @model_validator(mode="after")
    def _check(self) -> DauConfig:
        if self.critic == "wasserstein" and self.class_nonmembers == "mask_label":
            raise ValueError(
                "critic 'wasserstein' reads each sample's confidence in its label token: class_nonmembers "
                "'mask_label' hides it"
            )
        if self.attacker.token_dim % self.attacker.heads:
            raise ValueError(
                f"attacker.token_dim {self.attacker.token_dim} must be divisible by attacker.heads "
                f"{self.attacker.heads}"
            )
        return self
