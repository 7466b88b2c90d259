"""The layer order is a contract: core -> data -> backbones -> heads -> losses -> optim -> methods ->
evaluate -> train -> experiments -> cli. import-linter checks it (contracts in pyproject.toml), and
these tests show the check passes on the tree and fails on an upward import or a cycle."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"]


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(LINT + ["--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=package_parent,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_its_layers_and_has_no_cycles():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "2 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("where, line, broken", [
    ("core/io.py", "from ..train import run  # upward: core may not know training", "Layers point down"),
    ("evaluate/knn.py", "from ..train import config  # evaluate never imports train", "Layers point down"),
    ("evaluate/metrics.py", "from . import protocols  # protocols imports metrics: a circle", "No import cycles"),
])
def test_an_upward_import_or_a_cycle_breaks_the_contract(tmp_path, where, line, broken):
    shutil.copytree(ROOT / "autossl", tmp_path / "autossl", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "autossl" / where
    target.write_text(target.read_text() + "\n" + line + "\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert f"{broken}" in out.stdout and "BROKEN" in out.stdout, out.stdout[-3000:]
