"""The human audit report: one self-contained HTML page (no JavaScript, plots inlined as PNG data URIs).

Every string that did not come from this module (class names, provenance, title) is HTML-escaped.
"""

import base64
import json
from collections.abc import Callable, Sequence
from html import escape
from typing import Any, NamedTuple

from unlearning.audit.plots import confidence_histograms, per_class_bars, roc_plot
from unlearning.audit.report import AuditReport
from unlearning.audit.result import AuditResult
from unlearning.audit.roc import TprAtFpr

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
figure { margin: 1.5em 0; }
figcaption { color: #555; max-width: 50em; }
img { max-width: 100%; }
pre { margin: 0; white-space: pre-wrap; text-align: left; }
.note { color: #555; }
"""

PROTOCOL_NOTE = """UA, RA, TA and MIA-efficacy follow Jia et al. 2023: the SVM learns retain (members)
vs test (non-members) from the true-label probability and reports the share of forget samples it calls
non-members. The four metric attacks (Song &amp; Mittal 2021) use per-class thresholds fitted on retain vs
one half of test and are scored on forget vs the other half. TPR at a low FPR needs at least 1/FPR
non-members to be measurable."""


class SummaryRow(NamedTuple):
    label: str
    cell: Callable[[AuditResult], str]
    """How to show this metric of one result."""
    disparity_key: str | None = None
    """The Avg. Disparity metric this row is, if any."""


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def tpr_cell(point: TprAtFpr) -> str:
    if point.tpr is None:
        return point.reason or "n/a"
    return (
        f"{point.tpr:.3f} ({point.true_positives}/{point.n_members} members at "
        f"{point.false_positives}/{point.n_nonmembers} non-members)"
    )


def attack_cell(attack: str, figure: str) -> Callable[[AuditResult], str]:
    def cell(result: AuditResult) -> str:
        value: float | None = getattr(result.attacks[attack], figure)
        return pct(value) if value is not None else result.attacks[attack].reason or "n/a"

    return cell


def low_fpr_cell(index: int) -> Callable[[AuditResult], str]:
    return lambda result: tpr_cell(result.attacker_view.overall.tpr_at_low_fpr[index])


def summary_rows(report: AuditReport) -> list[SummaryRow]:
    rows = [
        SummaryRow("UA: 100 - forget accuracy (%)", lambda r: pct(r.UA), "UA"),
        SummaryRow("RA: retain accuracy (%)", lambda r: pct(r.RA), "RA"),
        SummaryRow("TA: test accuracy (%)", lambda r: pct(r.TA), "TA"),
    ]
    if report.after.forget_class is not None:
        rows.append(
            SummaryRow("forgotten class, test accuracy (%)", lambda r: pct(r.forget_class_test_accuracy))
        )
    rows.append(SummaryRow("MIA-efficacy, SVM (% forget called non-member)", lambda r: pct(r.MIA), "MIA"))
    for name in report.after.attacks:
        rows.append(SummaryRow(f"{name} attack: accuracy (%)", attack_cell(name, "accuracy_pct")))
        rows.append(
            SummaryRow(f"{name} attack: forget called member (%)", attack_cell(name, "forget_member_pct"))
        )
    rows += [
        SummaryRow("attacker AUC, forget vs val+test", lambda r: ratio(r.attacker_view.overall.auc)),
        SummaryRow("attacker max |TPR - FPR|", lambda r: ratio(r.attacker_view.overall.max_tpr_fpr_gap)),
    ]
    for index, point in enumerate(report.after.attacker_view.overall.tpr_at_low_fpr):
        rows.append(SummaryRow(f"attacker TPR at {point.fpr_target:.1%} FPR", low_fpr_cell(index)))
    rows.append(SummaryRow("retain leakage AUC, retain vs test", lambda r: ratio(r.retain_leakage.auc)))
    return rows


def summary_table(report: AuditReport) -> str:
    columns: dict[str, AuditResult] = {"before": report.before, "after": report.after}
    if report.reference is not None:
        columns["reference (retrained)"] = report.reference
    disparity = report.disparity()
    header = "".join(f"<th>{escape(name)}</th>" for name in columns)
    if disparity is not None:
        header += "<th>|after - reference|</th>"
    body = []
    for row in summary_rows(report):
        cells = "".join(f"<td>{escape(row.cell(result))}</td>" for result in columns.values())
        if disparity is not None:
            distance = disparity["after"].distances.get(row.disparity_key) if row.disparity_key else None
            cells += f"<td>{pct(distance) if distance is not None else ''}</td>"
        body.append(f"<tr><td>{escape(row.label)}</td>{cells}</tr>")
    if disparity is not None:
        body.append(
            f"<tr><th>Avg. Disparity to the reference</th><td>{pct(disparity['before'].average)}</td>"
            f"<td>{pct(disparity['after'].average)}</td><td></td><td></td></tr>"
        )
    return f"<table><thead><tr><th>metric</th>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def image(png: bytes, alt: str, element_id: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="{element_id}"><img alt="{escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def plots_section(report: AuditReport, class_names: Sequence[str]) -> str:
    results = {"before": report.before, "after": report.after}
    if any(result.probs is None for result in results.values()):
        return '<p class="note">Plots unavailable: these audit results do not carry their probabilities.</p>'
    with_reference = dict(results)
    if report.reference is not None and report.reference.probs is not None:
        with_reference["reference"] = report.reference
    return "".join(
        [
            image(
                roc_plot(with_reference),
                "log-log ROC curves of the membership attack before and after unlearning",
                "plot-roc",
                "ROC of the true-label confidence as a membership score, forget samples (members) against "
                "validation and test samples (non-members), on log-log axes. Dashed lines mark 1% and "
                "0.1% FPR; the dotted diagonal is a blind guess.",
            ),
            image(
                confidence_histograms(results),
                "histograms of the true-label probability on forget, val and test",
                "plot-confidence",
                "Probability given to the true label on the forget, validation and test sets. A model that "
                "no longer remembers the forget set treats it like the held-out sets.",
            ),
            image(
                per_class_bars(with_reference, class_names),
                "per-class forget accuracy, test accuracy and attacker AUC",
                "plot-per-class",
                "Per class: accuracy on forget and test samples, and the attack's AUC (0.5 = chance). "
                "A missing bar: the class has no sample in that set.",
            ),
        ]
    )


def provenance_table(provenance: dict[str, Any]) -> str:
    if not provenance:
        return '<p class="note">No provenance recorded.</p>'
    rows = []
    for key, value in provenance.items():
        shown = value if isinstance(value, str) else json.dumps(value, indent=2, sort_keys=True, default=str)
        rows.append(f"<tr><th>{escape(str(key))}</th><td><pre>{escape(shown)}</pre></td></tr>")
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def set_sizes_line(result: AuditResult) -> str:
    sizes = ", ".join(f"{name} {count}" for name, count in result.set_sizes.items())
    mode = (
        f"class-wise (class {result.forget_class})" if result.forget_class is not None else "random samples"
    )
    return f"Forgetting: {mode}. Set sizes: {sizes}. Audit seed {result.seed}."


def render_html(
    report: AuditReport,
    *,
    class_names: Sequence[str] | None = None,
    title: str = "Unlearning audit report",
    plots: str | None = None,
) -> str:
    """The whole page as a string; `class_names` label the per-class plot (default: class indices).

    `plots`: a plots section drawn beforehand (`plots_section`), e.g. once for several reports of one job;
    by default the report's own plots are drawn."""
    names = (
        list(class_names) if class_names is not None else [str(c) for c in range(report.after.num_classes)]
    )
    if len(names) != report.after.num_classes:
        raise ValueError(
            f"class_names has {len(names)} names, the model has {report.after.num_classes} classes"
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p>{escape(set_sizes_line(report.after))}</p>
<h2>Summary</h2>
{summary_table(report)}
<p class="note">{PROTOCOL_NOTE}</p>
<h2>Plots</h2>
{plots if plots is not None else plots_section(report, names)}
<h2>Provenance</h2>
{provenance_table(report.provenance)}
</body></html>
"""
