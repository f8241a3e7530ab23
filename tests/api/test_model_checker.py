"""The API's model-check child (`app.model_registry.checker`): stopping the API while the child is still
starting (importing torch, which takes a minute on a loaded machine) kills the child at once instead of
waiting for its start-up to finish."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from app.model_registry.checker import ModelChecker


def test_close_during_the_warm_up_kills_the_starting_child(tmp_path: Path) -> None:
    never_ready = tmp_path / "never-ready"
    never_ready.write_text("#!/bin/sh\nexec sleep 600\n")  # a child that never says it is ready
    never_ready.chmod(0o755)
    checker = ModelChecker(python=str(never_ready))
    checker.warm_up()
    deadline = time.monotonic() + 60
    while checker._process is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child = checker._process
    assert child is not None and child.poll() is None, "the warm-up did not start its child"

    closing = threading.Thread(target=checker.close, daemon=True)
    closing.start()
    closing.join(60)  # before the fix, close() waited out the start-up timeout (300 s)
    assert not closing.is_alive(), "close() waited for the start-up instead of cutting it short"
    assert child.poll() is not None and checker._process is None
