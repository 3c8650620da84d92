"""The public API (`import spikeloop`): the README's example script runs as printed, from the repository
root: its launch run steps the network and writes commands, its model steps and classifies."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_api_script() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_script_runs():
    result = subprocess.run([sys.executable, "-c", readme_api_script()], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    header, run, step, evaluation = result.stdout.strip().splitlines()
    assert header.startswith("aedat4 64 48 ") and int(header.split()[-2]) > 0
    steps, commands = int(run.split()[0]), int(run.split()[2])
    assert steps == 2000 and 0 < commands <= steps
    assert step.startswith("output spikes [") and len(step.split("[")[1].split()) == 10  # one per class
    # the shipped model's 96/100 (tests/test_train_qat.py checks the same on the loihi runtime)
    assert evaluation == "accuracy 0.96, early decision 0.85"


def test_the_api_names_resolve():
    import spikeloop

    missing = [name for name in spikeloop.__all__ if not hasattr(spikeloop, name)]
    assert not missing
