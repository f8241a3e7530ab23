"""Avg. Disparity (the DAU paper): how far an unlearned model's headline metrics are from a model
retrained without the forget set, the gold standard of exact unlearning. Lower is better."""

from collections.abc import Mapping

DISPARITY_METRICS = ("UA", "MIA", "RA", "TA")


def metric_distances(metrics: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """|metric - reference| for UA, MIA, RA and TA (percentage points)."""
    missing = [name for name in DISPARITY_METRICS if name not in metrics or name not in reference]
    if missing:
        raise KeyError(f"disparity needs metrics {list(DISPARITY_METRICS)}; missing {missing}")
    return {name: abs(float(metrics[name]) - float(reference[name])) for name in DISPARITY_METRICS}


def avg_disparity(metrics: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """mean(|UA - UA_ref|, |MIA - MIA_ref|, |RA - RA_ref|, |TA - TA_ref|)."""
    distances = metric_distances(metrics, reference)
    return sum(distances.values()) / len(distances)
