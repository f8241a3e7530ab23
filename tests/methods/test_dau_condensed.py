"""DAU with `retain_source="condensed"`: the CE term trains on the condensation method's reduced retain set
(built once per model version, then cached), and the game still moves the attacker toward chance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from memorising_problem import memorising_problem, one_thread, snapshot, stop_after  # noqa: F401
from test_dau_game import FAST

from unlearning.methods import get_method, parse_params
from unlearning.methods.condensation.condense import CONDENSED_PREFIX, condensed_retain_set
from unlearning.methods.condensation.config import CondenseSettings
from unlearning.methods.dau import method as dau_method
from unlearning.training import accuracy
from unlearning.types import Cancelled

SMALL_SUBCLASSES = {"images_per_subclass": 2}
"""A third of the memorising problem's train set is forgotten: with 2-image sub-classes about 4 in 9 stay
clean, so the reduced set mixes condensed and real images (10-image ones would almost all be dirty)."""


@pytest.fixture(autouse=True, scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("dau-condensed-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNLEARN_CACHE_DIR", str(directory))
        yield directory


class RecordingGame(dau_method.SamiaGame):
    """The real game, remembering itself and every retain batch (row indices into its retain set)."""

    last: RecordingGame | None = None

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.drawn: list[torch.Tensor] = []
        inner = self.retain_batches

        def recorded() -> Iterator[torch.Tensor]:
            for rows in inner:
                self.drawn.append(rows)
                yield rows

        self.retain_batches = recorded()
        RecordingGame.last = self


def run_dau(splits, should_stop=lambda: False, **params):  # type: ignore[no-untyped-def]
    stages: list[str] = []
    model, info = get_method("dau").run(
        memorising_problem().model,
        splits,
        parse_params("dau", {**FAST, "retain_source": "condensed", "condense": SMALL_SUBCLASSES, **params}),
        lambda fraction, stage: stages.append(stage),
        should_stop,
    )
    return model, info, stages


def test_condensed_retain_batches_come_from_the_reduced_set_and_the_attacker_nears_chance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dau_method, "SamiaGame", RecordingGame)
    problem = memorising_problem()
    splits = problem.random_splits
    before = snapshot(problem.model)
    model, info, stages = run_dau(splits, iterations=80, stop_patience=100)

    assert info["retain_source"] == "condensed" and info["condensed_cache_hit"] is False
    assert stages[0] == "condense" and "condense" in info["seconds"]
    reduced = condensed_retain_set(problem.model, splits, CondenseSettings(**SMALL_SUBCLASSES))  # cached now
    game = RecordingGame.last
    assert game is not None and game.retain.sample_ids == reduced.sample_ids
    assert torch.equal(game.retain.images, reduced.images) and torch.equal(game.retain.labels, reduced.labels)
    real = [sample_id for sample_id in reduced.sample_ids if not sample_id.startswith(CONDENSED_PREFIX)]
    assert set(real) < set(splits.retain.sample_ids)
    assert info["reduced_retain"] == {
        "real": len(real),
        "condensed": len(reduced) - len(real),
        "of_retain": len(splits.retain),
    }
    assert 0 < len(real) < len(reduced) < len(splits.retain)
    drawn = torch.cat(game.drawn)
    assert len(game.drawn) == 80 and int(drawn.max()) < len(reduced)
    assert int((drawn >= len(real)).sum()) > 0, "condensed images (after the real ones) are trained on"

    trace = [point["attacker_accuracy"] for point in info["attacker_accuracy"]["trace"]]
    start, end = trace[0], sum(trace[-3:]) / 3
    assert start >= 0.75, f"the attacker should first tell members from non-members easily, got {start}"
    assert abs(end - 0.5) <= 0.6 * abs(start - 0.5), f"attacker accuracy {trace}"
    assert accuracy(model, splits.forget) <= accuracy(problem.model, splits.forget) - 25
    assert accuracy(model, splits.retain) >= 85
    assert all(torch.equal(before[name], value) for name, value in problem.model.state_dict().items())


def test_a_second_request_loads_the_condensed_set_and_real_is_the_default() -> None:
    splits = memorising_problem().random_splits
    short = {"iterations": 3, "attacker_warmup": 2}
    run_dau(splits, **short)  # condensed (or already cached by the test above)
    _, info, stages = run_dau(splits, **short)
    assert info["condensed_cache_hit"] is True and "condense" not in stages
    assert info["reduced_retain"]["condensed"] > 0
    _, plain, _ = run_dau(splits, retain_source="real", **short)
    assert plain["retain_source"] == "real" and "reduced_retain" not in plain
    assert "condense" not in plain["seconds"]


def test_should_stop_while_condensing_raises_cancelled() -> None:
    splits = memorising_problem().random_splits
    with pytest.raises(Cancelled):
        run_dau(splits, should_stop=stop_after(0), condense={**SMALL_SUBCLASSES, "cache": False})
