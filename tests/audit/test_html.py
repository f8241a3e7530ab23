"""The HTML report: self-contained, every plot a real PNG, user strings escaped."""

import base64
import io
import re
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from unlearning.audit import AuditProbs, AuditReport, metrics_from_probs
from unlearning.audit.html import render_html

PLOT_IDS = ("plot-roc", "plot-confidence", "plot-per-class")
HOSTILE = "<script>alert('x')</script>"


def figure_pngs(page: str) -> dict[str, bytes]:
    figures = re.findall(r'<figure id="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)">', page)
    return {element_id: base64.b64decode(data, validate=True) for element_id, data in figures}


def assert_is_a_drawn_png(png: bytes) -> None:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and min(image.size) > 200
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert (pixels < 128).mean() > 0.01  # something dark (lines, bars, text) is drawn, not a blank canvas


@pytest.fixture
def report(before_and_after: tuple[AuditProbs, AuditProbs]) -> AuditReport:
    before, after = (metrics_from_probs(probs) for probs in before_and_after)
    return AuditReport(
        before=before,
        after=after,
        reference=after,
        provenance={"method": "dau", HOSTILE: {"note": "a < b & c"}, "parent_sha256": "ab" * 32},
    )


def test_every_plot_is_an_inline_png(report: AuditReport) -> None:
    page = render_html(report, class_names=["cat", "dog", "bird", "car"])
    pngs = figure_pngs(page)
    assert set(pngs) == set(PLOT_IDS)
    for png in pngs.values():
        assert_is_a_drawn_png(png)
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(?!data:image/png;base64,)', page)  # nothing loaded from elsewhere


def test_summary_shows_the_figures_before_after_and_disparity(report: AuditReport) -> None:
    page = render_html(report)
    for result in (report.before, report.after):
        assert f"<td>{result.MIA:.2f}</td>" in page
        assert f"<td>{result.UA:.2f}</td>" in page
        assert f"<td>{result.attacker_view.overall.auc:.3f}</td>" in page
    disparity = report.disparity()
    assert disparity is not None
    assert f"<td>{disparity['before'].average:.2f}</td>" in page
    assert "Avg. Disparity" in page
    assert "not measurable: needs at least 1000 non-members, has 350" in page
    at_1pct = report.before.attacker_view.overall.tpr_at_low_fpr[0]
    assert f"({at_1pct.true_positives}/80 members at {at_1pct.false_positives}/350 non-members)" in page


def test_user_strings_are_escaped(report: AuditReport) -> None:
    page = render_html(report, class_names=[HOSTILE, "a$b", "$\\frac", "d"], title="Audit <b>1</b>")
    assert HOSTILE not in page and "<b>1</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "a &lt; b &amp; c" in page
    assert set(figure_pngs(page)) == set(PLOT_IDS)  # '$' in class names does not break the plots


def test_without_reference_or_probabilities(
    before_and_after: tuple[AuditProbs, AuditProbs], make_audit_probs: Callable[..., AuditProbs]
) -> None:
    before, after = (metrics_from_probs(probs) for probs in before_and_after)
    page = render_html(AuditReport(before=before, after=after))
    assert "Avg. Disparity" not in page and set(figure_pngs(page)) == set(PLOT_IDS)

    page = render_html(AuditReport(before=before, after=replace(after, probs=None)))
    assert figure_pngs(page) == {} and "Plots unavailable" in page

    classwise = metrics_from_probs(make_audit_probs(forget_margin=6.0, forget_class=1))
    page = render_html(AuditReport(before=classwise, after=classwise))
    assert "forgotten class, test accuracy" in page and set(figure_pngs(page)) == set(PLOT_IDS)


def test_class_names_must_match_the_model(report: AuditReport) -> None:
    with pytest.raises(ValueError, match="3 names, the model has 4 classes"):
        render_html(report, class_names=["a", "b", "c"])
