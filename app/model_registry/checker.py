"""The API's handle on the model-check process (`unlearning.upload_check`): the API never imports torch, so
checking an upload (strict load, one forward pass on real images) or a train request's architecture runs in
a child process. The child stays up between checks, so only the first check of an API process pays for
importing torch and torchvision (a few seconds); `warm_up()` pays it at start-up instead.

One check at a time per API process (a lock); a child that dies or overruns the timeout is killed and the
next check starts a fresh one; so is one started before `sys.path` changed (the child gets the API's
`sys.path` as PYTHONPATH, so architectures the API can import, plugins included, are the ones it checks).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
from typing import IO, Any

CHECK_TIMEOUT_S = 300.0
"""Longest one check may take (the first one loads the dataset, which decodes an image folder once)."""
START_TIMEOUT_S = 300.0
CHILD_MODULE = "unlearning.upload_check"


class CheckerUnavailable(RuntimeError):
    """The check process could not answer (failed to start, died, or timed out)."""


class ModelChecker:
    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self._lock = threading.Lock()
        self._process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._path: tuple[str, ...] = ()
        self.started_in_s: float | None = None

    @staticmethod
    def _import_path() -> tuple[str, ...]:
        return tuple(os.path.abspath(entry) if entry else os.getcwd() for entry in sys.path)

    def check(self, request: dict[str, Any], timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
        """The child's answer to `request` (see `unlearning.upload_check`)."""
        with self._lock:
            self._ensure_started()
            assert self._process is not None and self._process.stdin is not None
            try:
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
            except OSError as error:
                self._stop()
                raise CheckerUnavailable(f"the model check process is gone: {error}") from None
            return self._answer(timeout_s)

    def warm_up(self) -> None:
        """Start the child in the background (imports torch there now, not at the first upload)."""

        def start() -> None:
            try:
                with self._lock:
                    self._ensure_started()
            except CheckerUnavailable:
                pass  # the first check tries again and reports it

        threading.Thread(target=start, name="model-check-warm-up", daemon=True).start()

    def close(self) -> None:
        """Stop the child. A start-up or check in progress is cut short (its child killed: the waiting
        thread reads the end of its output and gives up), not waited for: an API stopping during the
        warm-up must not wait for torch's import."""
        if not self._lock.acquire(blocking=False):
            process = self._process
            if process is not None:
                process.kill()
            self._lock.acquire()
        try:
            self._stop()
        finally:
            self._lock.release()

    def _ensure_started(self) -> None:
        path = self._import_path()
        if self._process is not None and self._process.poll() is None and path == self._path:
            return
        self._stop()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        process = subprocess.Popen(
            [self.python, "-m", CHILD_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=env,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        reader = threading.Thread(target=_pump, args=(process.stdout, lines), name="model-check-reader")
        reader.daemon = True
        reader.start()
        self._process, self._lines, self._path = process, lines, path
        ready = self._answer(START_TIMEOUT_S)
        if not ready.get("ready"):
            self._stop()
            raise CheckerUnavailable(f"the model check process did not start: {ready}")
        self.started_in_s = ready.get("seconds")

    def _answer(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            self._stop()
            raise CheckerUnavailable(f"the model check took longer than {timeout_s:.0f} s") from None
        if line is None:
            code = self._process.poll() if self._process is not None else None
            self._stop()
            raise CheckerUnavailable(f"the model check process exited (code {code}); see the API's log")
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            self._stop()
            raise CheckerUnavailable(f"the model check process answered {line[:200]!r}") from None
        return answer  # type: ignore[no-any-return]

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.close()
                process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired, AssertionError):
                process.kill()
                process.wait()


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


CHECKER = ModelChecker()
"""The API process's one checker (shared by every app instance in the process, as tests make many)."""
atexit.register(CHECKER.close)
