"""PNG figures for the audit report, drawn with matplotlib's Agg canvas (no display, no pyplot state,
safe in worker threads). Each function takes audit results that still hold their probabilities."""

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from unlearning.audit.result import AuditProbs, AuditResult
from unlearning.audit.roc import LOW_FPRS, roc_points

COLOURS = {"before": "#d62728", "after": "#1f77b4", "reference": "#2ca02c"}
SPLIT_COLOURS = {"forget": "#d62728", "val": "#ff7f0e", "test": "#1f77b4"}


def literal_text(text: str) -> str:
    """User text shown as typed: a `$` would otherwise start matplotlib mathtext (and can fail to parse)."""
    return text.replace("$", r"\$")


def probs_of(result: AuditResult, label: str) -> AuditProbs:
    if result.probs is None:
        raise ValueError(f"the {label} audit result holds no probabilities to plot")
    return result.probs


def png_bytes(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def roc_plot(results: dict[str, AuditResult]) -> bytes:
    """Log-log ROC of the true-label confidence, forget (members) vs val + test (non-members).

    Log axes show the low-FPR region where confident membership claims live; the dotted diagonal is chance.
    """
    figure = Figure(figsize=(5.5, 5))
    axes = figure.add_subplot()
    floor = 1.0
    for label, result in results.items():
        probs = probs_of(result, label)
        nonmember_confidence = np.concatenate([probs.val.confidence, probs.test.confidence])
        fpr, tpr = roc_points(probs.forget.confidence, nonmember_confidence)
        floor = min(floor, 1.0 / len(nonmember_confidence), 1.0 / len(probs.forget))
        auc = result.attacker_view.overall.auc
        name = f"{label} (AUC {auc:.3f})" if auc is not None else label
        axes.step(fpr, tpr, where="post", color=COLOURS.get(label), label=name)
    floor /= 2
    axes.plot([floor, 1], [floor, 1], ":", color="grey", label="chance")
    for fpr_target in LOW_FPRS:
        axes.axvline(fpr_target, color="grey", linewidth=0.6, linestyle="--")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlim(floor, 1)
    axes.set_ylim(floor, 1.05)
    axes.set_xlabel("false-positive rate (non-members called member)")
    axes.set_ylabel("true-positive rate (forget samples called member)")
    axes.set_title("Membership attack on the forget set")
    axes.legend(loc="lower right")
    return png_bytes(figure)


def confidence_histograms(results: dict[str, AuditResult]) -> bytes:
    """Histograms of p_y on forget, val and test, one panel per model: after unlearning the forget
    histogram should sit with val and test, not with the training data."""
    figure = Figure(figsize=(5 * len(results), 4))
    bins = np.linspace(0, 1, 31).tolist()
    shared: Axes | None = None
    for column, (label, result) in enumerate(results.items(), start=1):
        probs = probs_of(result, label)
        axes = figure.add_subplot(1, len(results), column, sharey=shared)
        shared = shared or axes
        for split, colour in SPLIT_COLOURS.items():
            confidence = getattr(probs, split).confidence
            if len(confidence):
                axes.hist(
                    confidence,
                    bins=bins,
                    density=True,
                    histtype="step",
                    linewidth=1.8,
                    color=colour,
                    label=split,
                )
        axes.set_yscale("log")
        axes.set_xlabel("probability of the true label")
        axes.set_title(label)
        axes.legend(loc="upper left")
    if shared is not None:
        shared.set_ylabel("density (log scale)")
    return png_bytes(figure)


def per_class_bars(results: dict[str, AuditResult], class_names: Sequence[str]) -> bytes:
    """Per class: forget accuracy, test accuracy and the attacker's AUC, one bar per model.

    A missing bar means the class has no sample in that set (or no member for the AUC).
    """
    panels = (
        ("forget accuracy (%)", lambda r: [row.forget for row in r.per_class_accuracy]),
        ("test accuracy (%)", lambda r: [row.test for row in r.per_class_accuracy]),
        ("attacker AUC, forget vs val+test", lambda r: [row.auc for row in r.attacker_view.per_class]),
    )
    num_classes = len(class_names)
    figure = Figure(figsize=(min(16.0, max(6.0, 0.7 * num_classes * len(results))), 9))
    positions = np.arange(num_classes)
    width = 0.8 / len(results)
    for row, (title, values_of) in enumerate(panels, start=1):
        axes = figure.add_subplot(len(panels), 1, row)
        for index, (label, result) in enumerate(results.items()):
            values = np.array([np.nan if v is None else v for v in values_of(result)], dtype=float)
            offsets = positions + (index - (len(results) - 1) / 2) * width
            axes.bar(offsets, values, width, color=COLOURS.get(label), label=label)
        if title.startswith("attacker"):
            axes.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        axes.set_title(title)
        axes.set_xticks(
            positions, [literal_text(name) for name in class_names], rotation=30 if num_classes > 10 else 0
        )
        axes.set_xlim(-0.6, num_classes - 0.4)
        axes.margins(y=0.1)
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncols=len(results), bbox_to_anchor=(0.5, 1.03))
    figure.tight_layout()
    return png_bytes(figure)
