"""`unlearn demo`'s client flow against the real stack: the audit it prints must show forgetting.

The demo forgets one digit class; its audit must show that class's training and test images no longer
recognised while the retained data and the other classes keep their accuracy. `check_forgetting` is
the guard the demo itself applies, so it is also checked on audits that show no forgetting.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from cli.demo import check_forgetting, run_demo

FORGET_CLASS = 3


def _audit(
    ua: tuple[float, float], class_test: tuple[float, float], ta: tuple[float, float]
) -> dict[str, Any]:
    def side(i: int) -> dict[str, Any]:
        return {
            "UA": ua[i],
            "RA": 100.0,
            "TA": ta[i],
            "MIA": 0.0,
            "forget_class": FORGET_CLASS,
            "forget_class_test_accuracy": class_test[i],
            "set_sizes": {"forget": 110},
        }

    return {"before": side(0), "after": side(1)}


def test_the_demo_guard_refuses_an_audit_that_shows_no_forgetting() -> None:
    assert check_forgetting(_audit((0.0, 99.0), (98.0, 1.0), (96.0, 95.0))) == []
    unchanged = check_forgetting(_audit((0.0, 0.0), (98.0, 98.0), (96.0, 96.0)))
    assert len(unchanged) == 2 and "100.0%" in unchanged[0], unchanged
    collateral = check_forgetting(_audit((0.0, 100.0), (98.0, 0.0), (96.0, 80.0)))
    assert collateral == ["test accuracy fell from 96.0% to 80.0%"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_forgets_a_class_and_its_audit_shows_it(embedded_stack: Any, tmp_path: Path) -> None:
    output = io.StringIO()
    summary = run_demo(
        embedded_stack.url,
        embedded_stack.admin_key,
        tmp_path,
        Console(file=output, width=200),
        forget_class=FORGET_CLASS,
        epochs=15,
        check_alive=embedded_stack.check_alive,
    )
    request, audit = summary["request"], summary["audit"]
    assert (
        request["status"] == "succeeded" and request["kind"] == "class" and request["class"] == FORGET_CLASS
    )
    before, after = audit["before"], audit["after"]
    assert after["forget_class"] == FORGET_CLASS and after["set_sizes"]["forget"] > 100

    # The class was known and is now forgotten: its training images and its unseen test images.
    assert 100 - before["UA"] >= 90 and 100 - after["UA"] <= 10, (before["UA"], after["UA"])
    class_test = (before["forget_class_test_accuracy"], after["forget_class_test_accuracy"])
    assert class_test[0] >= 85 and class_test[1] <= 10, class_test
    # The membership attack now calls the forgotten images non-members far more often.
    assert after["MIA"] >= before["MIA"] + 20, (before["MIA"], after["MIA"])
    # What was kept stays: retain accuracy and the other classes' test accuracy.
    assert before["RA"] >= 95 and before["RA"] - after["RA"] <= 5, (before["RA"], after["RA"])
    assert before["TA"] >= 90 and before["TA"] - after["TA"] <= 5, (before["TA"], after["TA"])
    assert check_forgetting(audit) == []

    printed = output.getvalue()
    assert "forget set accuracy" in printed and f"class {FORGET_CLASS} test accuracy" in printed
    html = Path(summary["html_report"])
    assert html.stat().st_size > 1000 and b"<html" in html.read_bytes()[:2000].lower()
    certificate = json.loads(Path(summary["certificate"]).read_text())
    assert certificate["certificate"]["forgotten"]["kind"] == "class"
    # The certificate names the policy and the figures that passed, and the parent's retirement.
    acceptance = certificate["certificate"]["acceptance"]
    assert (
        acceptance["passed"] and acceptance["test"] == "class-accuracy" and acceptance["rungs"] == ["method"]
    )
    assert acceptance["figures"]["accuracy"] <= acceptance["figures"]["limit"]
    retirement = certificate["certificate"]["parent_retirement"]
    assert retirement["retired_at"] and retirement["purge_after"]
    assert str(tmp_path / "downloads") in printed
    for path in (summary["html_report"], summary["certificate"], summary["checkpoint"]):
        assert Path(path).parent == tmp_path / "downloads" and Path(path).name in printed, path
    assert f"GET /v1/deletion-requests/{request['id']}/audit.html" in printed
    assert f"GET /v1/deletion-requests/{request['id']}/certificate" in printed
    assert f"GET /v1/model-versions/{summary['version']['id']}/checkpoint" in printed
