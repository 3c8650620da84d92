"""Clock offset between two hosts over Zenoh: NTP-style ping/pong on ``KEY/clock``.

A publisher of a stream (:class:`devices.transport.zenoh_link.PacketPublisher`) answers queries on
``<its key>/clock`` with two readings of the same wall clock it stamps ``sent_ns`` with: when the query
arrived (t2) and when the reply left (t3), each ``time.time_ns()`` (ns since the UNIX epoch). A
subscriber stamps its own wall clock before asking (t1) and when the reply arrives (t4); then, as in NTP,

    offset = ((t2 - t1) + (t3 - t4)) / 2      the remote clock minus ours (ns)
    delay  = (t4 - t1) - (t3 - t2)            the round trip on the wire (ns)

and the true offset lies within ``offset ± delay / 2``. :func:`estimate_offset` pings several times and
keeps the reply with the smallest delay (the one least disturbed by queueing). The reply payload is 16
bytes: ``<qq`` t2, t3.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

REPLY = struct.Struct("<qq")
#: Suffix of the key a publisher answers clock queries on.
CLOCK_SUFFIX = "/clock"


@dataclass(frozen=True)
class ClockOffset:
    """An offset estimate: ``offset_ns`` = remote wall clock minus ours, within ± ``rtt_ns / 2``;
    ``pings`` replies were used (the best one kept)."""

    offset_ns: int
    rtt_ns: int
    pings: int

    def as_dict(self) -> dict:
        """JSON-ready, in µs: ``clock_offset_us``, ``clock_uncertainty_us`` (half the round trip), ``pings``."""
        return {"clock_offset_us": self.offset_ns / 1e3, "clock_uncertainty_us": self.rtt_ns / 2e3,
                "clock_pings": self.pings}


def clock_key(key: str) -> str:
    """The key a stream published on ``key`` answers clock queries on."""
    return key + CLOCK_SUFFIX


class ClockResponder:
    """Answers clock queries on ``clock_key(key)`` with ``clock_ns()`` readings (a queryable on
    ``session``)."""

    def __init__(self, session, key: str, clock_ns=time.time_ns):
        self.clock_ns = clock_ns
        self._queryable = session.declare_queryable(clock_key(key), self._answer)

    def _answer(self, query) -> None:
        received = self.clock_ns()
        try:
            query.reply(query.key_expr, REPLY.pack(received, self.clock_ns()))
        except Exception:  # the asker went away; nothing to do on Zenoh's thread
            pass

    def close(self) -> None:
        self._queryable.undeclare()


def estimate_offset(session, key: str, *, pings: int = 8, timeout_s: float = 0.5,
                    clock_ns=time.time_ns) -> ClockOffset | None:
    """Ping the responder of the stream on ``key`` ``pings`` times; the estimate from the reply with the
    smallest round trip, or None when nobody answered (an older publisher, or a peer without one)."""
    best: tuple[int, int] | None = None
    answered = 0
    for _ in range(pings):
        t1 = clock_ns()
        try:
            replies = list(session.get(clock_key(key), timeout=timeout_s))
        except Exception:
            return None
        t4 = clock_ns()
        for reply in replies[:1]:
            ok = reply.ok
            if ok is None:
                continue
            data = ok.payload.to_bytes()
            if len(data) != REPLY.size:
                continue
            t2, t3 = REPLY.unpack(data)
            if t3 < t2:
                continue
            delay = (t4 - t1) - (t3 - t2)
            offset = ((t2 - t1) + (t3 - t4)) // 2
            answered += 1
            if best is None or delay < best[1]:
                best = (offset, max(delay, 0))
        if not replies:
            break
    return None if best is None else ClockOffset(best[0], best[1], answered)
