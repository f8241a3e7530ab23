"""The method interface and registry: every unlearning method is selectable by name with typed params.

A method is an object with a `name`, a pydantic `Config` (its hyperparameters, all with documented
defaults) and `run(model, splits, config, progress, should_stop) -> (model, info)`. The API validates a
request's raw `params` with `parse_params(name, raw)` before queueing it, so a typo or an absurd value
is a 422 at the edge, not a failed job hours later.

Contract for `run`:
- never modify `model` in place (work on a copy) and keep its pruning masks;
- call `progress(fraction, stage)` and `should_stop()` every iteration, raising `Cancelled` on a stop;
- return the new model (on the CPU) and a JSON-able `info` dict (iterations, stop reason, timings).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

from pydantic import BaseModel, ConfigDict

from unlearning.types import Progress, ShouldStop

if TYPE_CHECKING:
    from models.base import Classifier
    from unlearning.data import UnlearningSplits


class MethodConfig(BaseModel):
    """Base of every method's hyperparameters: strict types, unknown keys refused, immutable.

    Strict mode refuses `"3"` for an int and `true` for a number; NaN and infinities are refused too.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    def unservable_reason(self, *, forget_count: int, class_wise: bool) -> str | None:
        """Why this method, so configured, can never serve a request forgetting `forget_count` samples
        (whatever the attempt); None when it can. The API refuses such a request at POST."""
        return None

    def for_forget_set(self, *, forget_count: int, class_wise: bool, pruned: bool = False) -> Self:
        """The config that plays on this forget set (of a pruned model or not): `self`, unless the method
        chooses part of its game by the set (DAU's `critic="auto"`). Runs and the worker's acceptance
        ladder call it first, so the params a version records, and the budget the ladder scales, are
        those of the game that ran."""
        return self


@runtime_checkable
class UnlearningMethod(Protocol):
    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]

    def run(
        self,
        model: Classifier,
        splits: UnlearningSplits,
        config: Any,
        progress: Progress,
        should_stop: ShouldStop,
    ) -> tuple[Classifier, dict[str, Any]]: ...


class UnknownMethodError(KeyError):
    """The requested method name is not registered; the message lists the ones that are."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown unlearning method {self.name!r}; available: {', '.join(available_methods())}"


class Builtin(NamedTuple):
    """Where a built-in method lives: `module` defines and registers it (imports torch), `config` is
    its "module:Class" params model (torch-free, for the HTTP edge)."""

    module: str
    config: str


BUILTIN_METHODS: dict[str, Builtin] = {
    "condensation": Builtin(
        "unlearning.methods.condensation.method", "unlearning.methods.condensation.config:CondensationConfig"
    ),
    "dau": Builtin("unlearning.methods.dau.method", "unlearning.methods.dau.config:DauConfig"),
    "ff": Builtin("unlearning.methods.ff", "unlearning.methods.second_order_config:FfConfig"),
    "ft": Builtin("unlearning.methods.ft", "unlearning.methods.sgd_config:FtConfig"),
    "ga": Builtin("unlearning.methods.ga", "unlearning.methods.sgd_config:GaConfig"),
    "iu": Builtin("unlearning.methods.iu", "unlearning.methods.second_order_config:IuConfig"),
    "l1-sparse": Builtin("unlearning.methods.l1_sparse", "unlearning.methods.sgd_config:L1SparseConfig"),
    "multigan": Builtin(
        "unlearning.methods.multigan.method", "unlearning.methods.multigan.config:MultiGanConfig"
    ),
    "retrain": Builtin("unlearning.methods.retrain", "unlearning.methods.retrain_config:RetrainConfig"),
    "salun": Builtin("unlearning.methods.salun", "unlearning.methods.sgd_config:SalunConfig"),
    "scrub": Builtin("unlearning.methods.scrub", "unlearning.methods.sgd_config:ScrubConfig"),
}
"""The one table of built-in methods. A method's module is imported on first use (`get_method`), so
importing `unlearning.methods` or validating params (`config_class`, `parse_params`) loads no torch."""

_REGISTRY: dict[str, UnlearningMethod] = {}


def register(method: UnlearningMethod) -> UnlearningMethod:
    """Add a method under its `name`; registering a different object under a taken name is an error.

    A built-in name counts as taken even before its module is loaded."""
    builtin = BUILTIN_METHODS.get(method.name)
    if builtin is not None and type(method).__module__ != builtin.module:
        _load_builtin(method.name)
    existing = _REGISTRY.get(method.name)
    if existing is not None and existing is not method:
        raise ValueError(f"method name {method.name!r} is already registered by {existing!r}")
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> UnlearningMethod:
    if name not in _REGISTRY and name in BUILTIN_METHODS:
        _load_builtin(name)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(name) from None


def available_methods() -> list[str]:
    return sorted(BUILTIN_METHODS.keys() | _REGISTRY.keys())


def config_class(name: str) -> type[MethodConfig]:
    """Method `name`'s params model; for a built-in one, without importing the method (nor torch)."""
    if name in _REGISTRY:
        return _REGISTRY[name].Config
    try:
        module_name, _, class_name = BUILTIN_METHODS[name].config.partition(":")
    except KeyError:
        raise UnknownMethodError(name) from None
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def parse_params(name: str, raw: Mapping[str, Any] | None) -> MethodConfig:
    """The method's typed config from a raw (JSON) dict; raises pydantic.ValidationError on bad params."""
    return config_class(name).model_validate(dict(raw or {}), strict=True)


def _load_builtin(name: str) -> None:
    """Import the built-in method's module, which calls `register` once."""
    importlib.import_module(BUILTIN_METHODS[name].module)


BUDGET_FIELDS = (
    "iterations",
    "epochs",
    "steps",
    "beginning_epochs",
    "intermediate_epochs",
    "final_epochs",
    "finetune_epochs",
)
"""Top-level config fields that set how much work a method does (the acceptance ladder scales them)."""


def escalated(config: MethodConfig, factor: int = 2) -> MethodConfig | None:
    """`config` with every positive budget field multiplied by `factor`: the method again with a larger
    budget. None when the method has no budget field or the larger one is out of its bounds."""
    updates = {
        name: value * factor
        for name in BUDGET_FIELDS
        if isinstance(value := getattr(config, name, None), int) and not isinstance(value, bool) and value > 0
    }
    if not updates:
        return None
    try:
        return type(config).model_validate({**config.model_dump(), **updates}, strict=False)
    except ValueError:
        return None
