"""The layer rules of DESIGN.md, as import-linter contracts in pyproject.toml: they hold on this tree, and
they catch a violation (a copy of the tree with one forbidden import added fails)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("spikeloop", "pipeline", "devices", "recordings")
LINT = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """Run lint-imports on the tree at ``root`` (its packages shadow the installed ones)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", LINT, "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layer_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "samples"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize("module, line, contract", [
    ("recordings/base.py", "from pipeline.app import launch", "Layers"),
    ("devices/world.py", "import pipeline.loop", "Layers"),
    ("pipeline/snn/network.py", "import pipeline.stages", "network layer stands alone"),
    ("pipeline/core/events.py", "import numba", "core imports numpy only"),
    ("pipeline/loop.py", "import spikeloop", "Layers"),
])
def test_a_broken_rule_fails(tmp_path, module, line, contract):
    root = _copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # the violation under test\n")
    result = lint_imports(root)
    assert result.returncode != 0
    broken = [l for l in result.stdout.splitlines() if l.rstrip().endswith("BROKEN")]
    assert len(broken) == 1 and contract in broken[0], result.stdout
