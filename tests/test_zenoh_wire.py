"""The wire format: documented byte layout, round trips, hostile input gives counted WireErrors only."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.transport import wire
from pipeline.core.events import dvs_events, spikes

FIELDS = dict(t_end_us=5_000, sequence=7, stream_id=0xDEADBEEF, sent_ns=123_456_789)


def _events(n=50, width=64, height=48, seed=0):
    rng = np.random.default_rng(seed)
    return dvs_events(np.sort(rng.integers(0, 5_000, n)), rng.integers(0, width, n), rng.integers(0, height, n),
                      rng.integers(0, 2, n))


def test_header_layout_is_the_documented_one():
    events = _events()
    data = wire.encode_events(events, wire.KIND_DVS, width=64, height=48, **FIELDS)
    # Read back with the offsets of the module docstring, one field at a time.
    assert data[0:4] == b"SPKL" and data[4] == 1 and data[5] == 1
    assert int.from_bytes(data[6:8], "little") == 0
    assert int.from_bytes(data[8:10], "little") == 64 and int.from_bytes(data[10:12], "little") == 48
    assert int.from_bytes(data[16:24], "little", signed=True) == 5_000
    assert int.from_bytes(data[24:32], "little") == 7
    assert int.from_bytes(data[32:36], "little") == 0xDEADBEEF
    assert int.from_bytes(data[36:40], "little") == len(events) * 16 == len(data) - 48
    assert int.from_bytes(data[40:48], "little", signed=True) == 123_456_789
    # The payload is the array's own bytes: x of event 3 sits at 48 + 3*16 + 8.
    assert struct.unpack_from("<qhhb", data, 48 + 3 * 16) == (events["timestamp"][3], events["x"][3],
                                                               events["y"][3], events["polarity"][3])


def test_round_trips_every_kind():
    events = _events()
    message = wire.decode(wire.encode_events(events, wire.KIND_DVS, width=64, height=48, **FIELDS))
    assert message.header.kind_name == "dvs" and (message.header.width, message.header.height) == (64, 48)
    np.testing.assert_array_equal(message.payload, events)

    aer = spikes([1, 2, 2, 9], [0, 5, 3, 7])
    message = wire.decode(wire.encode_events(aer, wire.KIND_SPIKES, channels=8, **FIELDS))
    np.testing.assert_array_equal(message.payload, aer)
    assert message.header.channels == 8

    message = wire.decode(wire.encode_command([0.5, -1.25, 3.0], **FIELDS))
    np.testing.assert_array_equal(message.payload, [0.5, -1.25, 3.0])
    assert message.header.channels == 3 and message.header.t_end_us == 5_000

    report = {"steps": 10, "latency_us": {"p50": 120.5}}
    assert wire.decode(wire.encode_telemetry(report, **FIELDS)).payload == report

    end = wire.decode(wire.encode_end(wire.KIND_DVS, **FIELDS))
    assert end.header.end and end.payload is None


def _corrupt(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d[:20], "short"),
    (lambda d: _corrupt(d, 0, b"XXXX"), "magic"),
    (lambda d: _corrupt(d, 4, b"\x02"), "version"),
    (lambda d: _corrupt(d, 5, b"\x09"), "kind"),
    (lambda d: _corrupt(d, 6, b"\x02\x00"), "flags"),
    (lambda d: _corrupt(d, 36, (0xFFFFFFFF).to_bytes(4, "little")), "too_large"),
    (lambda d: _corrupt(d, 36, (wire.MAX_PAYLOAD_BYTES + 16).to_bytes(4, "little")), "too_large"),
    (lambda d: d[:-16], "length"),
    (lambda d: d + b"\0" * 16, "length"),
    (lambda d: d[:-8], "length"),
    (lambda d: _corrupt(d, 16, (10).to_bytes(8, "little")), "events"),   # t_end before the events
    (lambda d: _corrupt(d, 8, (3).to_bytes(2, "little")), "events"),     # x outside a 3-pixel width
    (lambda d: _corrupt(d, 48 + 12, b"\x02"), "events"),                 # polarity 2
    (lambda d: _corrupt(d, 48, (10**9).to_bytes(8, "little")), "events"),  # first event after the rest
])
def test_bad_samples_raise_wire_errors_with_a_reason(mutate, reason):
    data = wire.encode_events(_events(), wire.KIND_DVS, width=64, height=48, **FIELDS)
    with pytest.raises(wire.WireError) as caught:
        wire.decode(mutate(data))
    assert caught.value.reason == reason


def test_bad_commands_and_telemetry():
    with pytest.raises(wire.WireError, match="command"):
        wire.decode(wire.encode_command([1.0, float("nan")], **FIELDS))
    too_many = wire.encode(wire.KIND_COMMAND, b"\0" * 8 * (wire.MAX_COMMAND_VALUES + 1),
                           channels=wire.MAX_COMMAND_VALUES + 1, **FIELDS)
    assert pytest.raises(wire.WireError, wire.decode, too_many).value.reason == "too_large"
    mismatched = wire.encode(wire.KIND_COMMAND, b"\0" * 16, channels=3, **FIELDS)
    assert pytest.raises(wire.WireError, wire.decode, mismatched).value.reason == "length"
    for text in (b"\xff\xfe", b"[1, 2]", b"{not json"):
        assert pytest.raises(wire.WireError, wire.decode,
                             wire.encode(wire.KIND_TELEMETRY, text, **FIELDS)).value.reason == "telemetry"
    spikes_out_of_range = wire.encode_events(spikes([1, 2], [0, 8]), wire.KIND_SPIKES, channels=8, **FIELDS)
    assert pytest.raises(wire.WireError, wire.decode, spikes_out_of_range).value.reason == "events"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_garbage_never_escapes_as_another_exception(data, with_magic):
    if with_magic:
        data = b"SPKL\x01" + data
    try:
        wire.decode(data)
    except wire.WireError:
        pass


def _header(sequence, stream_id=1, end=False):
    return wire.Header(wire.KIND_DVS, wire.FLAG_END if end else 0, 0, 0, 0, 0, sequence, stream_id, 0, 0)


def test_sequence_tracker_counts_gaps_reorders_restarts_and_ends():
    tracker = wire.SequenceTracker()
    accepted = [tracker.accept("a", _header(s)) for s in (5, 6, 9, 8, 10, 10)]
    # joining at 5 is no gap; 9 after 6 loses 7 and 8; 8 late and 10 repeated are refused
    assert accepted == [True, True, True, False, True, False]
    assert (tracker.gaps, tracker.reordered, tracker.restarts) == (2, 2, 0)
    assert tracker.accept("a", _header(0, stream_id=2))  # the publisher restarted
    assert tracker.restarts == 1
    assert tracker.accept("b", _header(0)) and tracker.open_streams == 3
    assert tracker.accept("b", _header(1, end=True)) and tracker.ended == 1
    assert not tracker.accept("b", _header(2))  # nothing after END
    assert tracker.open_streams == 2


def test_sequence_tracker_memory_is_bounded():
    tracker = wire.SequenceTracker(max_streams=16)
    for stream_id in range(1000):
        tracker.accept(f"k{stream_id % 50}", _header(0, stream_id))
    assert tracker.streams <= 16
    assert len(tracker._keys) <= 16


def test_telemetry_payload_is_plain_json():
    data = wire.encode_telemetry({"a": [1, 2]}, **FIELDS)
    assert json.loads(data[48:]) == {"a": [1, 2]}
