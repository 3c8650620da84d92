"""Waiting for a ``time.perf_counter_ns`` deadline with sub-millisecond precision.

Kernel sleeps overshoot by ~0.1-0.6 ms here, which alone would miss many 1 ms ticks; so the wait sleeps
while the deadline is far and spins the last ``spin_ns``, with ``time.sleep(0)`` so other threads (the
loop, a source's reader, motor I/O) keep the GIL moving meanwhile; the last ``HOLD_NS`` are spun without
yielding, since a yield itself costs tens of µs.
"""
from __future__ import annotations

import time

#: Default spin margin (ns) before a deadline.
SPIN_NS = 400_000
#: The final stretch (ns) spun without yielding the GIL.
HOLD_NS = 50_000


def wait_until(deadline_ns: int, spin_ns: int = SPIN_NS) -> None:
    """Block until ``time.perf_counter_ns() >= deadline_ns``: sleep most of the way, spin the last ``spin_ns``."""
    remaining = deadline_ns - time.perf_counter_ns()
    if remaining > spin_ns:
        time.sleep((remaining - spin_ns) / 1e9)
    while (remaining := deadline_ns - time.perf_counter_ns()) > 0:
        if remaining > HOLD_NS:
            time.sleep(0)
