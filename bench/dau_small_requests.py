"""DAU on deletion requests of a few random samples (1, 10, 100), next to retraining without them.

Disparity means little on one sample, so each request is described per sample, for the original, DAU
and the retrained model:
- forget accuracy (percent of the forget samples still classified correctly);
- loss percentile: where each forget sample's loss falls among the test samples' losses (50 = a
  typical unseen sample; a memorised sample sits near 0), averaged over the forget set;
- membership score: the logit-scaled confidence phi = log p_y - log(1 - p_y) (LiRA's statistic, the one
  DAU's Wasserstein critic matches), its mean over the forget set and its percentile among the test
  samples' scores (50 = looks unseen);
- test accuracy: what the request cost everyone else.

The original and the retrained references come from the bench cache (`unlearn bench` trains them once
per preset and seed; a retrain per request size is trained here the first time). Seconds are the
method's own, with the retrain's measured in the same run when it was not cached.

    python bench/dau_small_requests.py --preset cpu --count 1 --count 10 --count 100 [--params '{...}']
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(add_completion=False)


@app.command()
def main(
    count: Annotated[list[int], typer.Option(help="Forget-set sizes; repeat for each.")],
    preset: Annotated[str, typer.Option(help="smoke | cpu | gpu (the bench presets).")] = "smoke",
    seed: int = 0,
    params: Annotated[str, typer.Option(help="DAU params as a JSON object.")] = "{}",
    data: Annotated[Path | None, typer.Option(help="CIFAR-10 archive or tree.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every figure here.")] = None,
    threads: Annotated[int, typer.Option(help="torch threads (0 = torch's default).")] = 0,
) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)

    from unlearning.bench.presets import get_preset
    from unlearning.bench.rows import row_spec
    from unlearning.bench.runner import BenchOptions, SilentReporter, original_model, retrain_reference
    from unlearning.data import make_splits
    from unlearning.methods import get_method, parse_params
    from unlearning.types import never_stop, no_progress

    bench_preset = get_preset(preset)
    dataset = bench_preset.load(data, seed)
    options = BenchOptions(preset, "random", ["retrain"], seed=seed, data_path=data, reuse_retrain=True)
    original = original_model(bench_preset, dataset, options, SilentReporter()).model
    train = dataset.train
    results: list[dict[str, Any]] = []
    for size in count:
        rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:size]
        splits = make_splits(dataset, forget_ids=[train.sample_ids[row] for row in sorted(rows.tolist())])
        start = time.perf_counter()
        config = parse_params("dau", {"seed": seed, **json.loads(params)})
        dau, info = get_method("dau").run(original, splits, config, no_progress, never_stop)
        dau_seconds = time.perf_counter() - start
        spec = row_spec("retrain", bench_preset, seed)
        retrained, cached = retrain_reference(spec, original, splits, bench_preset, options, SilentReporter())
        models = {"original": original, "dau": dau, "retrain": retrained.model}
        figures = {name: per_sample_figures(model, splits) for name, model in models.items()}
        result = {
            "count": size,
            "dau_seconds": round(dau_seconds, 2),
            "retrain_seconds": round(retrained.seconds, 2),
            "retrain_cached": cached,
            "dau_iterations": info.get("iterations"),
            "dau_stop": info.get("stop_reason"),
            "dau_mode": info.get("attack_pool", {}).get("mode"),
            "figures": figures,
        }
        results.append(result)
        print(
            f"{size} forget samples: DAU {result['dau_iterations']} iterations ({result['dau_stop']}, "
            f"{result['dau_mode']}), {dau_seconds:.1f} s; retrain {retrained.seconds:.1f} s"
            + (" (cached)" if cached else "")
        )
        for name, row in figures.items():
            print(
                f"  {name:9s} forget acc {row['forget_accuracy']:6.2f}"
                f"  loss pct {row['loss_percentile']:6.2f}"
                f"  phi {row['membership_score']:7.3f}  phi pct {row['membership_percentile']:6.2f}"
                f"  test acc {row['test_accuracy']:6.2f}"
            )
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"preset": preset, "seed": seed, "params": params, "runs": results}))


def per_sample_figures(model, splits) -> dict[str, float]:  # type: ignore[no-untyped-def]
    import torch

    from unlearning.methods.dau.critic import label_margin
    from unlearning.training import predict_logits

    forget_logits = predict_logits(model, splits.forget)
    test_logits = predict_logits(model, splits.test)
    forget_loss = torch.nn.functional.cross_entropy(forget_logits, splits.forget.labels, reduction="none")
    test_loss = torch.nn.functional.cross_entropy(test_logits, splits.test.labels, reduction="none")
    forget_phi = label_margin(forget_logits, splits.forget.labels)
    test_phi = label_margin(test_logits, splits.test.labels)
    correct = (forget_logits.argmax(1) == splits.forget.labels).float().mean().item()
    test_correct = (test_logits.argmax(1) == splits.test.labels).float().mean().item()
    return {
        "forget_accuracy": round(100 * correct, 2),
        "loss_percentile": round(percentile_among(forget_loss, test_loss), 2),
        "membership_score": round(forget_phi.mean().item(), 4),
        "membership_percentile": round(percentile_among(forget_phi, test_phi), 2),
        "test_accuracy": round(100 * test_correct, 2),
    }


def percentile_among(values, population) -> float:  # type: ignore[no-untyped-def]
    """Mean over `values` of the percent of `population` below each (ties count half)."""
    below = (population[None, :] < values[:, None]).float() + 0.5 * (
        population[None, :] == values[:, None]
    ).float()
    return float(100 * below.mean(1).mean())


if __name__ == "__main__":
    app()
