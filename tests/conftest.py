"""Test fixtures. Real data comes from ../shared/data (or $SPIKELOOP_DATA).

In CI (CI=true) a missing data folder is a failure, not a skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from recordings.datasets import shared_data_dir, shared_dir


def _require(path: Path) -> Path:
    if path.exists():
        return path
    message = f"shared data not found at {path} (set SPIKELOOP_DATA)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data: events/, nmnist_small/, audio/fsdd/, bci/."""
    return _require(shared_data_dir())


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """../shared/conformance: Lava's bit-accurate reference outputs."""
    return _require(shared_dir() / "conformance")
