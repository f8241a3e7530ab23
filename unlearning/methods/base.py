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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

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


_REGISTRY: dict[str, UnlearningMethod] = {}


def register(method: UnlearningMethod) -> UnlearningMethod:
    """Add a method under its `name`; registering a different object under a taken name is an error."""
    existing = _REGISTRY.get(method.name)
    if existing is not None and existing is not method:
        raise ValueError(f"method name {method.name!r} is already registered by {existing!r}")
    _REGISTRY[method.name] = method
    return method


def get_method(name: str) -> UnlearningMethod:
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownMethodError(name) from None


def available_methods() -> list[str]:
    _load_builtin_methods()
    return sorted(_REGISTRY)


def parse_params(name: str, raw: Mapping[str, Any] | None) -> MethodConfig:
    """The method's typed config from a raw (JSON) dict; raises pydantic.ValidationError on bad params."""
    return get_method(name).Config.model_validate(dict(raw or {}), strict=True)


def _load_builtin_methods() -> None:
    """Importing the package registers every built-in method (each module calls `register` once)."""
    import unlearning.methods  # noqa: F401
