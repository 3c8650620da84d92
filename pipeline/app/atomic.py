"""Output files appear whole or not at all: written to a temporary file next to the target, then renamed."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def check_writable(path: str | Path) -> Path:
    """``path`` as a Path; ValueError naming it unless its directory exists and it is not a directory."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a file name")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: directory {path.parent} does not exist")
    return path


def write_atomic(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary path)``, then rename the result to ``path`` (the temporary file is removed
    if ``write`` fails). OSError names ``path``."""
    path = check_writable(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise ValueError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if temporary.exists():
            temporary.unlink()
