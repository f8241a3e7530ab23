"""The method registry and typed params: what the API relies on to refuse bad requests up front."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from unlearning.methods import available_methods, get_method, parse_params, register
from unlearning.methods.base import UnknownMethodError
from unlearning.methods.dau import DauConfig
from unlearning.methods.retrain import RetrainConfig


def test_builtin_methods_are_registered() -> None:
    names = available_methods()
    assert {"dau", "retrain"} <= set(names)
    assert names == sorted(names)
    assert get_method("dau").name == "dau"
    assert get_method("dau").Config is DauConfig


def test_unknown_method_names_the_available_ones() -> None:
    with pytest.raises(UnknownMethodError) as raised:
        get_method("dua")
    assert "dua" in str(raised.value) and "dau" in str(raised.value)


def test_registering_a_different_method_under_a_taken_name_is_refused() -> None:
    class Impostor:
        name = "dau"
        Config = DauConfig

        def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise AssertionError("never run")

    with pytest.raises(ValueError, match="already registered"):
        register(Impostor())  # type: ignore[arg-type]
    assert register(get_method("dau")) is get_method("dau")  # the same object again is fine


def test_parse_params_gives_the_typed_config_with_defaults() -> None:
    config = parse_params("dau", {"alpha": 2, "lambda_bt": 0.0, "attacker": {"layers": 2}})
    assert isinstance(config, DauConfig)
    assert config.alpha == 2.0 and config.lambda_bt == 0.0
    assert config.attacker.layers == 2 and config.attacker.heads == 4
    assert parse_params("dau", None) == DauConfig()
    retrain = parse_params("retrain", {"recipe": {"epochs": 3}})
    assert isinstance(retrain, RetrainConfig) and retrain.recipe.epochs == 3


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"alpah": 3}, "alpah"),  # unknown key
        ({"alpha": "big"}, "alpha"),  # wrong type
        ({"iterations": "80"}, "iterations"),  # strings are not numbers here
        ({"iterations": True}, "iterations"),  # nor are booleans
        ({"batch_size": 64.0}, "batch_size"),  # a float for an int
        ({"alpha": -1.0}, "alpha"),  # negative
        ({"lr": 0.0}, "lr"),
        ({"iterations": 10**9}, "iterations"),  # absurd
        ({"sensitivity_copies": 1000}, "sensitivity_copies"),
        ({"alpha": float("nan")}, "alpha"),
        ({"class_nonmembers": "whatever"}, "class_nonmembers"),
        ({"attacker": {"heads": 4, "token_dim": 30}}, "token_dim"),  # heads must divide token_dim
        ({"attacker": {"depth": 3}}, "depth"),
        ({"retain_source": "synthetic"}, "retain_source"),
        ({"condense": {"images_per_subclass": 0}}, "images_per_subclass"),
    ],
)
def test_bad_dau_params_are_refused_naming_the_field(raw: dict, field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_params("dau", raw)
    assert field in str(raised.value)


@pytest.mark.parametrize(
    "raw",
    [
        {"recipe": {"epochs": "3"}},
        {"recipe": {"epochs": 10**6}},
        {"recipe": {"lr_max": 1e6}},
        {"recipe": {"epochs": 3, "extra": 1}},
        {"epochs": 3},
    ],
)
def test_bad_retrain_params_are_refused(raw: dict) -> None:
    with pytest.raises(ValidationError):
        parse_params("retrain", raw)


def test_configs_are_immutable() -> None:
    config = DauConfig()
    with pytest.raises(ValidationError):
        config.alpha = 5.0  # type: ignore[misc]


def test_methods_load_on_demand_and_a_builtin_name_is_taken_before_its_module_loads() -> None:
    """Importing the package and validating params load no method module (nor torch); `get_method` does."""
    code = (
        "import sys\n"
        "from unlearning.methods import available_methods, get_method, parse_params, register\n"
        "from unlearning.methods.dau import DauConfig\n"
        "names = available_methods()\n"
        "for name in names:\n"
        "    parse_params(name, {})\n"
        "print(sorted(names) == names and 'dau' in names, 'torch' in sys.modules,\n"
        "      'unlearning.methods.dau.method' in sys.modules)\n"
        "class Impostor:\n"
        "    name = 'dau'\n"
        "    Config = DauConfig\n"
        "try:\n"
        "    register(Impostor())\n"
        "except ValueError as error:\n"
        "    print('refused' if 'already registered' in str(error) else error)\n"
        "print(type(get_method('dau')).__module__, 'torch' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split("\n")[:3] == [
        "True False False",
        "refused",
        "unlearning.methods.dau.method True",
    ]
