"""Where the shared real data lives (../shared/data), for tests and benchmarks.

``SPIKELOOP_DATA`` overrides the default ``<repo>/../shared/data``.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The shared data folder (it may not exist; callers decide whether that is fatal)."""
    env = os.environ.get("SPIKELOOP_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def shared_dir() -> Path:
    """The shared folder (data/, conformance/, reference/ ...): the parent of the data folder."""
    return shared_data_dir().parent
