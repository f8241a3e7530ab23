"""Where prometheus-client's multiprocess mode keeps its files (see `core.observability.metrics`).

Kept apart from the metrics themselves: prometheus-client chooses its value store when first imported,
so the command that starts the processes names the directory before anything imports it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiproc_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiproc_dir() -> tuple[Path, bool]:
    """Name the multiprocess directory for this process and those it starts: the environment's (emptied
    of an earlier run's files) or a fresh temporary one. Returns it and whether it was created here (the
    caller removes it once its processes have ended)."""
    given = multiproc_dir()
    if given is not None:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        return path, False
    path = Path(tempfile.mkdtemp(prefix="unlearn-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True
