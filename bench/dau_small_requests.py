"""DAU on deletion requests of a few samples, audited against the original and a retrained model.

The problem is the tests' digits MLP (`tests/methods/baselines_helpers.py`: scikit-learn's digits, an MLP
of width 32 trained 60 epochs); each request forgets the first `count` training samples of a seeded
permutation. A request below `small_set_below` samples plays in DAU's small-set mode
(`unlearning/methods/dau/pools.py`). About half a minute on one CPU thread.

    python bench/dau_small_requests.py --count 1 --count 10 [--params '{"small_set_below": 16}']
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def main(
    count: Annotated[list[int], typer.Option(help="Forget-set sizes; repeat for each.")],
    params: Annotated[str, typer.Option(help="DAU params as a JSON object.")] = "{}",
) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "methods"))
    from baselines_helpers import digits_problem

    from unlearning.audit import AuditReport, audit_model
    from unlearning.data import make_splits
    from unlearning.methods import get_method, parse_params

    torch.set_num_threads(1)
    problem = digits_problem()
    train = problem.dataset.train
    retrain_params = {"recipe": {"epochs": 60, "batch_size": 256, "lr_max": 0.2, "augment": False}}
    for size in count:
        rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:size]
        splits = make_splits(problem.dataset, forget_ids=[train.sample_ids[row] for row in rows.tolist()])
        models = {"original": problem.model}
        start = time.perf_counter()
        models["dau"], info = run(
            get_method("dau"), problem.model, splits, parse_params("dau", json.loads(params))
        )
        seconds = time.perf_counter() - start
        models["retrain"], _ = run(
            get_method("retrain"), problem.model, splits, parse_params("retrain", retrain_params)
        )
        audits = {name: audit_model(model, splits) for name, model in models.items()}
        report = AuditReport(audits["original"], audits["dau"], audits["retrain"]).to_dict()
        json.dumps(report, allow_nan=False)
        pool = info["attack_pool"]
        print(
            f"{size} forget samples: DAU {info['iterations']} iterations ({info['stop_reason']}), "
            f"{seconds:.1f} s, pool {pool['mode']}"
        )
        for name, result in audits.items():
            figures = "  ".join(f"{key} {value:6.2f}" for key, value in result.headline().items())
            print(f"  {name:9s} {figures}")
        disparity = report["disparity"]
        before, after = disparity["before"]["average"], disparity["after"]["average"]
        print(f"  Avg. Disparity to retrain: original {before:.2f}, dau {after:.2f}")


def run(method, model, splits, config):  # type: ignore[no-untyped-def]
    return method.run(model, splits, config, lambda fraction, stage: None, lambda: False)


if __name__ == "__main__":
    app()
