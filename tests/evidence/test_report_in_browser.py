"""The HTML audit report, served by the API, rendered by a real browser (Debian's chromium, headless).

Two renderings of the page the API served, at the same window size: a screenshot of the page as is, and
a DOM dump of a copy with a measuring script appended at the end (the report itself carries no
JavaScript). The script reports where each plot's <img> was laid out and its decoded size; the test
crops those rectangles from the screenshot and checks they show the plot's own pixels.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from evidence_helpers import succeed_request, synthetic_report
from PIL import Image

from core.storage import local_path
from unlearning.audit.html import render_html

WINDOW = (1200, 4000)
PLOT_IDS = ("plot-roc", "plot-confidence", "plot-per-class")
CLASS_NAMES = ["cat", "dog", "bird", "car"]
MEASURE = """<script>
window.addEventListener("load", () => {
  const plots = [...document.querySelectorAll("figure[id] > img")].map((img) => {
    const box = img.getBoundingClientRect();
    return {id: img.parentElement.id, complete: img.complete, natural: [img.naturalWidth, img.naturalHeight],
            box: [box.left + window.scrollX, box.top + window.scrollY, box.width, box.height]};
  });
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify(plots);
  document.body.appendChild(out);
});
</script>"""


@pytest.fixture
def chromium() -> str:
    """The browser binary; skipped (failed under REQUIRE_SERVICES=1) before any set-up when absent."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "Debian's chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("REQUIRE_SERVICES", "") not in ("", "0", "false", "no"):
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    return found


def _run_chromium(binary: str, profile: Path, *args: str) -> str:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    return done.stdout


def _plot_pngs(page: str) -> dict[str, Image.Image]:
    found = re.findall(r'<figure id="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)">', page)
    return {name: Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB") for name, data in found}


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite only: the page and the browser do not depend on the backend (the API tests cover both)."""
    from core.db.migrate import upgrade
    from core.db.session import dispose_engine

    url = f"sqlite:///{tmp_path_factory.mktemp('browser-db') / 'api.db'}"
    upgrade(url)
    yield url
    dispose_engine(url)


@pytest.fixture
def served_report(client, keys, admin, ready_model, settings, tmp_path) -> str:
    """The report page as `GET /v1/deletion-requests/{id}/audit.html` serves it."""
    request = client.post(
        "/v1/deletion-requests",
        json={"model_id": ready_model.model_id, "sample_ids": ready_model.train_ids[:5]},
        headers=admin,
    ).json()
    report = synthetic_report(
        provenance={"method": "dau", "request_id": request["id"], "seeds": {"audit": 0}}
    )
    page = render_html(report, class_names=CLASS_NAMES, title=f"Audit of {request['id']}")
    html_path = local_path(settings.artifact_url) / "reports" / f"{request['id']}.html"
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page, encoding="utf-8")
    succeed_request(
        settings.database_url,
        local_path(settings.artifact_url),
        request["id"],
        report.to_dict(),
        html_uri=str(html_path),
    )
    response = client.get(
        f"/v1/deletion-requests/{request['id']}/audit.html", headers=keys.headers("auditor")
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    stored, _ = page.split("</body>")
    assert response.text.startswith(stored), "the stored report is served as it is"
    assert "unlearn verify" in response.text, "followed by how to verify its certificate offline"
    return response.text


def test_report_renders_in_chromium_with_every_plot_visible(
    chromium: str, served_report: str, tmp_path: Path
) -> None:
    binary = chromium
    page_path = tmp_path / "report.html"
    page_path.write_text(served_report, encoding="utf-8")
    harness_path = tmp_path / "measured.html"
    harness_path.write_text(served_report.replace("</body>", MEASURE + "</body>"), encoding="utf-8")
    screenshot = tmp_path / "report.png"

    _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={screenshot}", page_path.as_uri())
    dom = _run_chromium(
        binary, tmp_path / "profile-dom", "--virtual-time-budget=10000", "--dump-dom", harness_path.as_uri()
    )
    keep = os.environ.get("UNLEARN_KEEP_SCREENSHOT")
    if keep:
        shutil.copyfile(screenshot, keep)

    shot = np.asarray(Image.open(screenshot).convert("RGB"), dtype=float)
    assert shot.shape[:2] == (WINDOW[1], WINDOW[0])
    gray = shot.mean(axis=2)
    assert gray.std() > 20 and (gray < 128).mean() > 0.005, "the screenshot is blank"

    measured = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert measured is not None, dom[-2000:]
    plots: list[dict[str, Any]] = json.loads(html.unescape(measured.group(1)))
    originals = _plot_pngs(served_report)
    assert [p["id"] for p in plots] == list(PLOT_IDS) and set(originals) == set(PLOT_IDS)
    for plot in plots:
        original = originals[plot["id"]]
        assert plot["complete"] and plot["natural"] == list(original.size), plot
        left, top, width, height = (round(v) for v in plot["box"])
        assert width > 200 and height > 150, plot
        assert 0 <= left and left + width <= WINDOW[0] and 0 <= top and top + height <= WINDOW[1], plot
        shown = shot[top : top + height, left : left + width]
        expected = np.asarray(original.resize((width, height), Image.Resampling.BILINEAR), dtype=float)
        difference = np.abs(shown - expected).mean()
        assert difference < 2, (plot["id"], difference)  # the plot's own pixels, drawn 1:1, are on screen
        assert shown.mean(axis=2).std() > 20, plot["id"]  # and they are not a flat box
        blank = np.full_like(expected, 255.0)
        assert np.abs(shown - blank).mean() > 3 * difference, plot["id"]
