"""How every ``spikeloop`` command reports failure (one line on stderr, a documented exit status) and
writes its output files (checked before work starts, written atomically).

Line: ``spikeloop <command>: <file or key>: <what went wrong> (<hint>)``. Status (README, "Command line"):

* 0 ok (``launch``: also stopped by SIGTERM/SIGINT, as a service is);
* 1 a runtime failure (a device or stream failed while running, a write failed, a check did not match);
* 2 bad input or usage (a missing or unreadable file, a bad value or flag: nothing was started or written);
* 3 a device was lost for good (motors stopped);
* 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import errno
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DEVICE_LOST = 3
EXIT_INTERRUPTED = 130

#: OSError numbers that mean the user named a wrong path (bad input, status 2), not a failure while running.
PATH_ERRNOS = frozenset({errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
                         errno.EROFS})


def fail(command: str, message: str, hint: str = "", status: int = EXIT_USAGE) -> int:
    """Print ``spikeloop <command>: <message> (<hint>)`` on stderr; return ``status``."""
    print(f"spikeloop {command}: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
    return status


def os_error_text(exc: OSError) -> str:
    """``<file>: <reason>`` of an OSError (the file first, as every other message)."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def guarded(command: str, body: Callable[[], int]) -> int:
    """Run a command body: bad input (a RecordingError, an .npz the readers refuse, a path that does not
    work) -> one line, status 2; an OSError while running -> one line, status 1. Damage warnings are
    printed as one ``spikeloop <command>: warning: ...`` line each instead of Python's multi-line format."""
    from pipeline.core.npz import NpzError
    from recordings.base import RecordingDamageWarning, RecordingError

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"spikeloop {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", RecordingDamageWarning)
        warnings.showwarning = show
        try:
            return body()
        except (RecordingError, NpzError) as exc:
            return fail(command, str(exc))
        except BrokenPipeError:
            raise  # the reader of our output left (``| head``): spikeloop's main exits quietly
        except OSError as exc:
            return fail(command, os_error_text(exc), status=EXIT_USAGE if exc.errno in PATH_ERRNOS else EXIT_FAILED)


def check_output_path(path: str | Path, flag: str) -> str:
    """Why ``path`` (given with ``flag``) cannot be written, or "" when it can: checked before any work starts,
    so a long run does not end in a traceback for a missing folder."""
    path = Path(path).expanduser()
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return f"{flag} {path}: is a directory (expected a file name)"
    if not parent.is_dir():
        return f"{flag} {path}: folder {parent} does not exist"
    if not os.access(parent, os.W_OK):
        return f"{flag} {path}: folder {parent} is not writable"
    return ""


def write_atomically(path: str | Path, write: Callable) -> None:
    """Call ``write(handle)`` on a temporary file beside ``path`` (binary), then rename it over ``path``: a
    reader never sees a half-written file and a failure leaves any earlier file as it was."""
    path = Path(path).expanduser()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
