"""Damaged recordings (property-based): cut, flipped bytes, garbage before/after, empty, header only.

For every format a small clean file is made from a real recording (its header plus the first few
hundred records; AEDAT 3.1 from the spec-built writer in test_formats.py; AEDAT 4 its first packets, LZ4
compressed as the camera wrote them, without the data table). The readers must never crash or hang:
they yield a prefix of the clean decode and warn (RecordingDamageWarning naming the file and the byte
offset), or raise RecordingError in strict mode, or refuse a damaged header with RecordingError. Whatever
they yield keeps the reader contract (recordings.invariants), checked here with plain numpy: inside the
sensor, polarity 0/1, time >= 0, never more than 1000 µs behind the latest event nor 2^31 µs ahead.
"""
from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_formats import decode, synthetic_events, write_aedat3

from recordings import aedat2, aedat3, aedat4, eventstream, evt2, evt3, nmnist, prophesee_dat
from recordings._blocks import DroppedEventsWarning
from recordings.base import RecordingDamageWarning, RecordingError
from recordings.detect import detect_format

#: Examples per property; raise SPIKELOOP_DAMAGE_EXAMPLES for a longer hunt than CI's.
EXAMPLES = int(os.environ.get("SPIKELOOP_DAMAGE_EXAMPLES", "25"))
SETTINGS = settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Sample:
    """A clean small file of one format and what a reader must make of it."""

    name: str
    reader: type
    raw: bytes
    data_offset: int
    clean: np.ndarray
    unit: int | None  # fixed record size in bytes, None when records vary
    boundaries: frozenset[int] | None  # byte offsets where a cut leaves no partial record (variable units)
    suffix: str


def _first_records(path: Path, data_offset: int, unit: int, count: int) -> bytes:
    raw = path.read_bytes()
    return raw[: data_offset + unit * count]


@pytest.fixture(scope="module")
def samples(data_dir, tmp_path_factory) -> dict[str, Sample]:
    events_dir = data_dir / "events"
    out: dict[str, Sample] = {}

    def add(name, reader_cls, raw, data_offset, unit, boundaries, suffix):
        path = tmp_path_factory.mktemp(name) / f"clean{suffix}"
        path.write_bytes(raw)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with reader_cls(path) as reader:
                clean = decode(reader)
        assert len(clean) > 50
        assert_contract(clean, reader_cls, path)
        out[name] = Sample(name, reader_cls, raw, data_offset, clean, unit, boundaries, suffix)

    for name, file, cls, unit, count in (
        ("aedat2_dvs128", "dvs128_walking_a.aedat", aedat2.Reader, 8, 300),
        ("aedat2_davis", "davis240_boxes.aedat", aedat2.Reader, 8, 300),
        ("evt2", "evt2_faery.raw", evt2.Reader, 4, 1500),
        ("evt3", "evt3_expelliarmus.raw", evt3.Reader, 2, 1500),
        ("prophesee_dat", "ncars_tonic.dat", prophesee_dat.Reader, 8, 300),
        ("nmnist", "nmnist_tonic.bin", nmnist.Reader, 5, 300),
    ):
        path = events_dir / file
        offset = cls(path).header.extra.get("data_offset", 0)
        add(name, cls, _first_records(path, offset, unit, count), offset, unit, None, path.suffix)

    for name, file, packets in (("aedat4_davis", "davis346_aestream.aedat4", 4),
                                ("aedat4_dvx", "dvxplorer_tonic.aedat4", 6)):
        path = events_dir / file
        header = aedat4.read_ioheader(path)
        rows, _, _ = aedat4.index_packets(path, header)
        raw = bytearray(path.read_bytes()[: int(rows[packets]["offset"])])
        field = struct.pack("<q", header.data_table_position)
        at = raw.find(field, aedat4.IOHEADER_START, header.data_start)
        assert at > 0 and raw.count(field) == 1
        raw[at:at + 8] = struct.pack("<q", -1)  # no data table: a clean file that ends after these packets
        starts = [int(r) for r in rows["offset"][: packets + 1]]
        add(name, aedat4.Reader, bytes(raw), header.data_start, None, frozenset(starts), ".aedat4")

    raw = (events_dir / "dvs_faery.es").read_bytes()
    pos, boundaries = 20, {20}
    for _ in range(400):
        pos += 1 if raw[pos] >= 0xFE else 5
        boundaries.add(pos)
    add("eventstream", eventstream.Reader, raw[:pos], 20, None, frozenset(boundaries), ".es")

    path = tmp_path_factory.mktemp("aedat3_src") / "src.aedat"
    _, starts = write_aedat3(path, synthetic_events(300, seed=3), per_packet=40)
    raw = path.read_bytes()
    add("aedat3", aedat3.Reader, raw, starts[0], None, frozenset(starts + [len(raw)]), ".aedat")
    return out


SAMPLE_NAMES = ["aedat2_dvs128", "aedat2_davis", "aedat3", "aedat4_davis", "aedat4_dvx", "eventstream", "evt2", "evt3",
                "prophesee_dat", "nmnist"]


def run(reader_cls, path: Path, strict: bool = False):
    """(events or None if the header was refused, the RecordingError raised or None, damage warnings)."""
    events, error = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with reader_cls(path, strict=strict) as reader:
                events = decode(reader)
        except RecordingError as exc:
            error = exc
    others = [w for w in caught if not issubclass(w.category, (RecordingDamageWarning, DroppedEventsWarning))]
    assert not others, [str(w.message) for w in others]
    return events, error, [w for w in caught if issubclass(w.category, RecordingDamageWarning)]


def assert_contract(events: np.ndarray, reader_cls, path: Path) -> None:
    """The reader contract on ``events``, from the header's sensor size (if any) and plain numpy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with reader_cls(path) as reader:
            width, height = reader.header.width, reader.header.height
    if not len(events):
        return
    assert events["x"].min() >= 0 and events["y"].min() >= 0
    if width:
        assert events["x"].max() < width and events["y"].max() < height
    assert set(np.unique(events["polarity"]).tolist()) <= {0, 1}
    t = events["timestamp"]
    assert t.min() >= 0
    latest = np.maximum.accumulate(t)
    assert np.all(t[1:] >= latest[:-1] - 1000), "more than 1000 µs behind the latest event"
    assert np.all(np.diff(latest) <= 2**31), "more than 2^31 µs ahead of the latest event"


def clean_cut(sample: Sample, cut: int) -> bool:
    """True when a file cut at byte ``cut`` (in the data) ends on a record boundary."""
    if sample.unit is not None:
        return (cut - sample.data_offset) % sample.unit == 0
    return cut in sample.boundaries


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@SETTINGS
@given(data=st.data())
def test_cut_anywhere_gives_prefix_and_names_offset(samples, tmp_path, name, data):
    sample = samples[name]
    cut = data.draw(st.one_of(st.integers(sample.data_offset, len(sample.raw)), st.integers(0, len(sample.raw))))
    path = tmp_path / f"cut{sample.suffix}"
    path.write_bytes(sample.raw[:cut])
    events, error, damage = run(sample.reader, path)
    if cut < sample.data_offset:
        assert error is not None or (events is not None and len(events) == 0)
        return
    assert error is None
    np.testing.assert_array_equal(events, sample.clean[: len(events)])
    if clean_cut(sample, cut):
        assert not damage
    else:
        assert len(damage) == 1
        message = str(damage[0].message)
        assert str(path) in message and " at byte " in message
        offset = int(message.split(" at byte ")[1].split(":")[0])
        assert sample.data_offset <= offset <= cut
        if sample.unit is not None:
            assert (offset - sample.data_offset) % sample.unit == 0 and cut - offset < sample.unit
    strict_events, strict_error, _ = run(sample.reader, path, strict=True)
    assert (strict_error is not None) == bool(damage)
    if strict_error is not None:
        assert strict_error.path == str(path) and strict_error.offset is not None


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@SETTINGS
@given(data=st.data())
def test_flipped_bytes_never_crash(samples, tmp_path, name, data):
    sample = samples[name]
    raw = bytearray(sample.raw)
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), min_size=1, max_size=8))
    for position, value in flips:
        raw[position] = value
    path = tmp_path / f"flipped{sample.suffix}"
    path.write_bytes(bytes(raw))
    events, error, damage = run(sample.reader, path)
    if events is not None:
        assert_contract(events, sample.reader, path)
        first = min(p for p, _ in flips)
        if sample.unit is not None and first >= sample.data_offset:
            intact = (first - sample.data_offset) // sample.unit
            records_events = _events_in_first_records(sample, intact)
            np.testing.assert_array_equal(events[:records_events], sample.clean[:records_events])
    if damage:
        _, strict_error, _ = run(sample.reader, path, strict=True)
        assert isinstance(strict_error, RecordingError)


def _events_in_first_records(sample: Sample, records: int) -> int:
    """Events the clean file yields from its first ``records`` fixed-size records (decode of the cut)."""
    tmp = Path(f"/tmp/spikeloop_formats_prefix_{sample.name}{sample.suffix}")
    tmp.write_bytes(sample.raw[: sample.data_offset + records * sample.unit])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return len(decode(sample.reader(tmp)))


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@SETTINGS
@given(garbage=st.binary(min_size=1, max_size=64), where=st.sampled_from(["before", "after"]))
def test_garbage_before_or_after(samples, tmp_path, name, garbage, where):
    sample = samples[name]
    path = tmp_path / f"garbage{sample.suffix}"
    path.write_bytes(garbage + sample.raw if where == "before" else sample.raw + garbage)
    if where == "after":
        events, error, _ = run(sample.reader, path)
        assert error is None
        np.testing.assert_array_equal(events[: len(sample.clean)], sample.clean)
        assert_contract(events, sample.reader, path)
        return
    try:
        cls = detect_format(path)
    except RecordingError:
        return
    events, _, _ = run(cls, path)
    if events is not None:
        assert_contract(events, cls, path)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_empty_and_header_only(samples, tmp_path, name):
    sample = samples[name]
    empty = tmp_path / f"empty{sample.suffix}"
    empty.write_bytes(b"")
    with pytest.raises(RecordingError, match="empty"):
        detect_format(empty)
    events, error, damage = run(sample.reader, empty)
    if sample.data_offset:
        assert isinstance(error, RecordingError) and str(empty) in str(error)
    else:
        assert error is None and len(events) == 0 and not damage
    if sample.data_offset:
        header_only = tmp_path / f"header{sample.suffix}"
        header_only.write_bytes(sample.raw[: sample.data_offset])
        events, error, damage = run(sample.reader, header_only)
        assert error is None and len(events) == 0 and not damage
        assert detect_format(header_only) is sample.reader


@pytest.mark.parametrize("name, ts_byte", [("aedat2_davis", 4), ("aedat2_dvs128", 4), ("prophesee_dat", 3)])
def test_flipped_timestamp_high_byte_is_damage_at_that_record(samples, tmp_path, name, ts_byte):
    """A flipped top timestamp byte is a jump of > 2^31 µs ahead or a far jump back, never a fake wrap."""
    sample = samples[name]
    record = 100
    position = sample.data_offset + record * sample.unit + ts_byte
    raw = bytearray(sample.raw)
    raw[position] ^= 0xF0
    path = tmp_path / f"hi{sample.suffix}"
    path.write_bytes(bytes(raw))
    events, error, damage = run(sample.reader, path)
    assert len(damage) == 1 and f"at byte {position - ts_byte}" in str(damage[0].message)
    np.testing.assert_array_equal(events, sample.clean[: len(events)])


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@SETTINGS
@given(chunk_events=st.integers(1, 3000), block_bytes=st.integers(1, 4000))
def test_any_chunk_and_block_size_gives_the_clean_events(samples, tmp_path, name, chunk_events, block_bytes):
    """Decoder state carries across every block and chunk boundary (vectors, packets, time bases)."""
    sample = samples[name]
    path = tmp_path / f"clean{sample.suffix}"
    path.write_bytes(sample.raw)
    reader = sample.reader(path, chunk_events=chunk_events)
    reader.block_bytes = block_bytes
    np.testing.assert_array_equal(decode(reader), sample.clean)


def _contract_index(events: np.ndarray, width: int, height: int, t_max: int) -> int:
    """Index of the first event breaking the reader contract, read literally from recordings.invariants'
    docstring (plain Python, one event at a time), or len(events)."""
    for i, (t, x, y, p) in enumerate(events[["timestamp", "x", "y", "polarity"]].tolist()):
        if x < 0 or (width and x >= width) or y < 0 or (height and y >= height) or p not in (0, 1) or t < 0:
            return i
        if t_max >= 0 and not t_max - 1000 <= t <= t_max + 2**31:
            return i
        if t_max < 0 and i + 1 < len(events) and events["timestamp"][i + 1] < t - 1000:
            return i
        t_max = max(t_max, t)
    return len(events)


@SETTINGS
@given(data=st.data())
def test_the_contract_check_agrees_with_its_definition(data):
    from pipeline.core.events import DVS_EVENT_DTYPE
    from recordings import invariants

    n = data.draw(st.integers(1, 60))
    events = np.zeros(n, DVS_EVENT_DTYPE)
    events["timestamp"] = np.sort(data.draw(st.lists(st.integers(0, 10**7), min_size=n, max_size=n)))
    events["x"] = data.draw(st.lists(st.integers(0, 99), min_size=n, max_size=n))
    events["y"] = data.draw(st.lists(st.integers(0, 79), min_size=n, max_size=n))
    events["polarity"] = data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, n - 1))
        field = data.draw(st.sampled_from(["timestamp", "x", "y", "polarity"]))
        value = data.draw({"timestamp": st.sampled_from([-1, 0, 2**31, 9 * 10**18]) | st.integers(-3000, 3000).map(
            lambda d: int(events["timestamp"][i]) + d), "x": st.sampled_from([-1, 100, -32768, 32767]),
                           "y": st.sampled_from([-1, 80, 500]), "polarity": st.sampled_from([-1, 2, 8, 127])}[field])
        events[field][i] = value
    width, height = data.draw(st.sampled_from([(100, 80), (0, 0)]))
    t_max = data.draw(st.sampled_from([-1, 0, 5_000_000, 10**7 + 500]))
    state = invariants.new_state()
    state[0] = t_max
    index, reason = invariants.first_invalid(events, width, height, state)
    assert index == _contract_index(events, width, height, t_max)
    assert (reason == invariants.OK) == (index == n)
    if reason != invariants.OK:
        assert invariants.describe(reason, state, width, height)
