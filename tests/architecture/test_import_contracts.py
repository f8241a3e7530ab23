"""The dependency direction is a contract checked by import-linter (`[tool.importlinter]` in
pyproject.toml): cli -> app | worker -> core -> unlearning -> models; core imports no web framework or
task queue; unlearning and models import no web, database or queue code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "app", "worker", "core", "unlearning", "models")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", str(root / "pyproject.toml")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    """The packages and pyproject.toml, copied, so a test can add a module that breaks a contract."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        ("core/_bad_upward.py", "from app import errors\n", "Dependencies point inward"),
        ("unlearning/_bad_upward.py", "import core.settings\n", "Dependencies point inward"),
        ("app/_bad_sideways.py", "import worker.tasks\n", "Dependencies point inward"),
        ("core/_bad_web.py", "import fastapi\n", "The shared core knows no web framework"),
        ("core/_bad_queue.py", "def send():\n    import celery\n", "The shared core knows no web framework"),
        ("unlearning/_bad_db.py", "import sqlalchemy\n", "The library knows no web, database or queue"),
    ],
)
def test_a_module_that_breaks_a_contract_fails_the_check(
    tree_copy: Path, module: str, source: str, broken: str
) -> None:
    (tree_copy / module).write_text(source)
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    broken_lines = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(broken) for line in broken_lines), result.stdout
