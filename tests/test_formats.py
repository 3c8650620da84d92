"""Binary event-format readers (AEDAT 2.0/3.1, Event Stream, EVT 2.0/3.0, DAT, N-MNIST) on real data.

Facts (event counts, resolutions, durations) come from ../shared/data/README.md; conventions (polarity
1 = ON, origin upper-left) are checked against small independent numpy decodes written from
../shared/reference/formats.md. AEDAT 3.1 has no real sample here, so it is checked on files built by
``write_aedat3`` below from the spec's packet layout.
"""
from __future__ import annotations

import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.events import DVS_EVENT_DTYPE, dvs_events
from recordings import aedat2, aedat3, eventstream, evt2, evt3, nmnist, prophesee_dat
from recordings._blocks import DroppedEventsWarning
from recordings.base import RecordingDamageWarning, RecordingError
from recordings.detect import detect_format, open_recording

#: file -> (format, width, height, events, duration s, duration tolerance s), from data/README.md.
FACTS = {
    "dvs128_walking_a.aedat": ("aedat2", 128, 128, 19_182, 6.9, 0.05),
    "dvs128_walking_b.aedat": ("aedat2", 128, 128, 70_304, 9.2, 0.05),
    "davis240_boxes.aedat": ("aedat2", 240, 180, 162_771, 2.07, 0.005),
    "nmnist_tonic.bin": ("nmnist", 34, 34, 4_325, 0.310, 0.001),
    "ncars_tonic.dat": ("prophesee_dat", None, None, 2_009, 0.100, 0.001),
    "evt2_faery.raw": ("evt2", 640, 480, 521_252, 0.096, 0.0005),
    "evt3_expelliarmus.raw": ("evt3", 1280, 720, 219_596, 0.0088, 0.0001),
    "dvs_faery.es": ("eventstream", 320, 240, 473_225, 0.999, 0.0005),
}


def decode(reader) -> np.ndarray:
    """All events of a reader, concatenated (DVS_EVENT_DTYPE)."""
    chunks = list(reader.chunks())
    for chunk in chunks:
        assert chunk.dtype == DVS_EVENT_DTYPE and len(chunk) <= reader.chunk_events
    return np.concatenate(chunks) if chunks else np.zeros(0, DVS_EVENT_DTYPE)


def data_bytes(path: Path, offset: int) -> np.ndarray:
    return np.fromfile(path, dtype=np.uint8)[offset:]


@pytest.mark.parametrize("name", sorted(FACTS))
def test_real_file_matches_readme(data_dir, name):
    fmt, width, height, count, duration, tolerance = FACTS[name]
    path = data_dir / "events" / name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader = open_recording(path)
        events = decode(reader)
    assert reader.header.format == fmt
    if width is not None:
        assert (reader.header.width, reader.header.height) == (width, height)
    assert len(events) == count
    span_s = (events["timestamp"][-1] - events["timestamp"][0]) / 1e6
    assert abs(span_s - duration) <= tolerance
    assert events["x"].min() >= 0 and events["x"].max() < reader.header.width
    assert events["y"].min() >= 0 and events["y"].max() < reader.header.height
    assert set(np.unique(events["polarity"])) == {0, 1}
    assert np.all(np.diff(events["timestamp"]) >= 0)


def test_header_only_aedat(data_dir):
    reader = open_recording(data_dir / "events" / "header_only.aedat")
    assert isinstance(reader, aedat2.Reader)
    assert (reader.header.width, reader.header.height) == (346, 260)
    assert "Davis346red" in reader.header.extra["chip"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(decode(reader)) == 0


def test_dvs128_conventions_against_numpy_decode(data_dir):
    """jAER DVS128: x = 127 - raw x, y flipped to upper-left, raw bit 0 = 0 is ON."""
    path = data_dir / "events" / "dvs128_walking_a.aedat"
    reader = aedat2.Reader(path)
    words = data_bytes(path, reader.header.extra["data_offset"]).view(">u4").reshape(-1, 2).astype(np.int64)
    address, t = words[:, 0], words[:, 1]
    keep = (address & 0x8000) == 0
    expected = dvs_events(t[keep], 127 - ((address[keep] >> 1) & 0x7F), 127 - ((address[keep] >> 8) & 0x7F),
                          1 - (address[keep] & 1))
    events = decode(reader)
    np.testing.assert_array_equal(events, expected)
    assert int(events["polarity"].sum()) == int(((address & 1) == 0).sum()) == 7_102


def test_davis240_keeps_dvs_words_only(data_dir):
    path = data_dir / "events" / "davis240_boxes.aedat"
    reader = aedat2.Reader(path)
    words = data_bytes(path, reader.header.extra["data_offset"]).view(">u4").reshape(-1, 2).astype(np.int64)
    address, t = words[:, 0], words[:, 1]
    dvs = ((address >> 31) == 0) & (((address >> 10) & 1) == 0)
    assert (~dvs).sum() == 33_837
    a = address[dvs]
    expected = dvs_events(t[dvs], 239 - ((a >> 12) & 0x3FF), 179 - ((a >> 22) & 0x1FF), (a >> 11) & 1)
    np.testing.assert_array_equal(decode(reader), expected)


def test_dvs128_person_is_upright(data_dir):
    """Regression guard for the orientation checked by eye (the PNG left in /tmp shows an upright
    person walking away): in every 1 s window the head and shoulders (dark hair) fire on more pixels
    than the feet, so the top quarter of the person's bounding box is wider than the bottom quarter.
    A vertical flip inverts this in all windows."""
    events = decode(aedat2.Reader(data_dir / "events" / "dvs128_walking_a.aedat"))
    t = events["timestamp"] - events["timestamp"][0]
    for start_s in (0.5, 1.5, 2.5, 3.5):
        window = events[(t >= start_s * 1e6) & (t < (start_s + 1) * 1e6)]
        image = np.zeros((128, 128), np.int32)
        np.add.at(image, (window["y"], window["x"]), 1)
        if start_s == 0.5:
            write_png(Path("/tmp/spikeloop_dvs128_walking_a.png"), image)
        widths = (image >= 3).sum(axis=1)
        rows = np.nonzero(widths >= 3)[0]
        top, bottom = rows[0], rows[-1]
        quarter = (bottom - top) // 4
        assert bottom - top > 40
        assert widths[top : top + quarter].mean() > widths[bottom - quarter : bottom + 1].mean()


def write_png(path: Path, counts: np.ndarray) -> None:
    import cv2

    scaled = (255 * np.minimum(counts / max(np.percentile(counts[counts > 0], 95), 1), 1)).astype(np.uint8)
    cv2.imwrite(str(path), cv2.resize(scaled, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST))


def test_evt2_against_numpy_decode(data_dir):
    path = data_dir / "events" / "evt2_faery.raw"
    reader = evt2.Reader(path)
    words = data_bytes(path, reader.header.extra["data_offset"]).view("<u4").astype(np.int64)
    kind = words >> 28
    is_high = kind == 8
    last_high = np.maximum.accumulate(np.where(is_high, np.arange(len(words)), -1))
    cd = (kind <= 1) & (last_high >= 0)
    high = (words[last_high] & 0xFFFFFFF)[cd]
    w = words[cd]
    expected = dvs_events((high << 6) | ((w >> 22) & 0x3F), (w >> 11) & 0x7FF, w & 0x7FF, kind[cd])
    np.testing.assert_array_equal(decode(reader), expected)
    assert int(expected["polarity"].sum()) == 185_861


def forward_fill(select: np.ndarray) -> np.ndarray:
    """For every position, the index of the last position <= it where ``select`` holds (-1: none)."""
    return np.maximum.accumulate(np.where(select, np.arange(len(select)), -1))


def evt3_numpy_decode(words: np.ndarray) -> np.ndarray:
    """EVT 3.0 per formats.md §7, vectorised (no wraps: the sample spans 8.8 ms inside one TIME_HIGH era)."""
    kind = words >> 12
    y = words[forward_fill(kind == 0)] & 0x7FF
    t = ((words[forward_fill(kind == 8)] & 0xFFF) << 12) | (words[forward_fill(kind == 6)] & 0xFFF)
    base = forward_fill(kind == 3)
    step = np.where(kind == 4, 12, np.where(kind == 5, 8, 0))
    advanced = np.cumsum(step) - step
    base_x = (words[base] & 0x7FF) + advanced - advanced[base]
    base_p = (words[base] >> 11) & 1
    single = np.nonzero(kind == 2)[0]
    rows = [(single, words[single] & 0x7FF, (words[single] >> 11) & 1)]
    for k, width in ((4, 12), (5, 8)):
        vec = np.nonzero(kind == k)[0]
        bits = (words[vec, None] >> np.arange(width)) & 1
        where, bit = np.nonzero(bits)
        rows.append((vec[where] + bit / 16, base_x[vec[where]] + bit, base_p[vec[where]]))
    order_key = np.concatenate([r[0] for r in rows])
    order = np.argsort(order_key, kind="stable")
    word_index = np.floor(order_key[order]).astype(np.int64)
    x = np.concatenate([r[1] for r in rows])[order]
    p = np.concatenate([r[2] for r in rows])[order]
    return dvs_events(t[word_index], x, y[word_index], p)


def test_evt3_against_numpy_decode_and_facts(data_dir):
    """formats.md / data README: 219,596 events in 1280x720 over 8.8 ms, t = TIME_HIGH<<12 | TIME_LOW;
    every event (t, x, y, p) equals a vectorised decode written from the spec."""
    path = data_dir / "events" / "evt3_expelliarmus.raw"
    reader = evt3.Reader(path)
    words = data_bytes(path, reader.header.extra["data_offset"]).view("<u2").astype(np.int64)
    kind = words >> 12
    first_event = np.argmax((kind == 2) | (kind == 4) | (kind == 5))
    assert kind[0] == 8 and all(np.argmax(kind == k) < first_event for k in (0, 6))  # state set before use
    assert np.argmax(kind == 3) < np.argmax((kind == 4) | (kind == 5))
    expected = evt3_numpy_decode(words)
    events = decode(reader)
    assert len(expected) == len(events) == 219_596
    np.testing.assert_array_equal(events, expected)
    assert events["timestamp"][-1] - events["timestamp"][0] == 8_801


def test_prophesee_dat_against_numpy_decode(data_dir):
    path = data_dir / "events" / "ncars_tonic.dat"
    reader = prophesee_dat.Reader(path)
    assert reader.header.extra["geometry_from"].startswith("data")
    words = data_bytes(path, reader.header.extra["data_offset"]).view("<u4").reshape(-1, 2).astype(np.int64)
    w = words[:, 1]
    expected = dvs_events(words[:, 0], w & 0x3FFF, (w >> 14) & 0x3FFF, w >> 28)
    np.testing.assert_array_equal(decode(reader), expected)
    assert (reader.header.width, reader.header.height) == (int(expected["x"].max()) + 1, int(expected["y"].max()) + 1)


def test_nmnist_against_numpy_decode(data_dir):
    path = data_dir / "events" / "nmnist_tonic.bin"
    r = np.fromfile(path, np.uint8).reshape(-1, 5).astype(np.int64)
    expected = dvs_events(((r[:, 2] & 0x7F) << 16) | (r[:, 3] << 8) | r[:, 4], r[:, 0], r[:, 1], r[:, 2] >> 7)
    np.testing.assert_array_equal(decode(nmnist.Reader(path)), expected)


def test_eventstream_against_python_decode_and_y_flip(data_dir):
    """formats.md §8, byte by byte over the first 100 kB: 0xFF = +127 µs, 0xFE = reset marker, else
    Δt = b >> 1, p = b & 1, x, y uint16 LE with y flipped (file origin bottom-left). The first bytes
    01 0000 ef00 are an ON event at file (0, 239) = upper-left (0, 0)."""
    path = data_dir / "events" / "dvs_faery.es"
    raw = np.fromfile(path, np.uint8)[20:100_020].tolist()
    expected, t, i = [], 0, 0
    while i + 5 <= len(raw):
        b = raw[i]
        if b >= 0xFE:
            t += 127 if b == 0xFF else 0
            i += 1
            continue
        t += b >> 1
        expected.append((t, raw[i + 1] | raw[i + 2] << 8, 239 - (raw[i + 3] | raw[i + 4] << 8), b & 1))
        i += 5
    events = decode(eventstream.Reader(path))
    assert events[: len(expected)].tolist() == expected
    assert expected[0] == (0, 0, 0, 1)


def test_nmnist_small_set(data_dir):
    files = sorted((data_dir / "nmnist_small").glob("*/*.bs2"))
    assert len(files) == 1000
    counts = []
    for path in files:
        reader = open_recording(path)
        assert isinstance(reader, nmnist.Reader)
        assert (reader.header.width, reader.header.height) == (34, 34)
        events = decode(reader)
        assert 0 < events["timestamp"][-1] < 400_000
        counts.append(len(events))
    counts = np.array(counts)
    assert counts.min() >= 1000 and counts.max() <= 8000 and 3000 < np.median(counts) < 5000


CHUNKING_FILES = ["dvs128_walking_b.aedat", "davis240_boxes.aedat", "evt2_faery.raw", "evt3_expelliarmus.raw",
                  "dvs_faery.es", "ncars_tonic.dat", "nmnist_tonic.bin"]


@pytest.mark.parametrize("name", CHUNKING_FILES)
def test_tiny_chunks_and_blocks_give_identical_arrays(data_dir, name):
    path = data_dir / "events" / name
    whole = decode(open_recording(path))
    reader = open_recording(path, chunk_events=7)
    reader.block_bytes = 13
    chunks = list(reader.chunks())
    assert max(len(c) for c in chunks) <= 7
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


@pytest.mark.parametrize("suffix", [".xyz", ".bin"])
@pytest.mark.parametrize("name", [n for n in FACTS if FACTS[n][0] != "nmnist"] + ["header_only.aedat"])
def test_detected_by_header_with_wrong_extension(data_dir, tmp_path, name, suffix):
    copy = tmp_path / f"recording{suffix}"
    shutil.copyfile(data_dir / "events" / name, copy)
    expected = FACTS[name][0] if name in FACTS else "aedat2"
    assert detect_format(copy).format_name == expected


def test_nmnist_detected_without_extension_by_size_and_plausibility(data_dir, tmp_path):
    copy = tmp_path / "sample"
    shutil.copyfile(data_dir / "events" / "nmnist_tonic.bin", copy)
    assert detect_format(copy) is nmnist.Reader


# ---------------------------------------------------------------------------------------------------
# AEDAT 3.1: files built from the spec's layout (no real 3.1 sample in ../shared/data).


def aedat3_packet(kind: int, events: bytes, event_size: int, overflow: int = 0, source: int = 1) -> bytes:
    """One AEDAT 3.1 packet: the 28-byte LE header and its events (capacity = number = valid)."""
    count = len(events) // event_size
    header = struct.pack("<hhiiiiii", kind, source, event_size, 4, overflow, count, count, count)
    return header + events


def polarity_events(t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, valid: np.ndarray) -> bytes:
    """POLARITY events (8 B): data = x<<17 | y<<2 | p<<1 | valid, then the low 31 bits of t."""
    data = (x.astype(np.uint32) << 17) | (y.astype(np.uint32) << 2) | (p.astype(np.uint32) << 1) | valid
    out = np.zeros((len(t), 2), dtype="<u4")
    out[:, 0] = data
    out[:, 1] = t & 0x7FFFFFFF
    return out.tobytes()


def write_aedat3(path: Path, events: np.ndarray, per_packet: int = 50, source: str = "DVS128",
                 invalid_every: int = 0) -> tuple[np.ndarray, list[int]]:
    """Write DVS events (DVS_EVENT_DTYPE, t < 2^40) as an AEDAT 3.1 file with POLARITY packets of
    ``per_packet`` events, interleaved with SPECIAL (type 0) and IMU6 (type 3) packets that must be
    skipped. Every ``invalid_every``-th event is written with valid = 0 (0: none). Returns (the events a
    reader must yield, byte offsets where packets start)."""
    header = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: " + source.encode() +
              b"\r\n#Start-Time: 2017-01-01 10:00:00 (TZ+0000)\r\n#!END-HEADER\r\n")
    body = bytearray(header)
    starts = []
    valid = np.ones(len(events), np.uint32)
    if invalid_every:
        valid[::invalid_every] = 0
    for first in range(0, len(events), per_packet):
        part = events[first : first + per_packet]
        overflows = part["timestamp"] >> 31
        for overflow in np.unique(overflows):
            sel = overflows == overflow
            starts.append(len(body))
            body += aedat3_packet(0, struct.pack("<Ii", 0, 0), 8, int(overflow))
            starts.append(len(body))
            body += aedat3_packet(1, polarity_events(part["timestamp"][sel], part["x"][sel], part["y"][sel],
                                                     part["polarity"][sel], valid[first : first + per_packet][sel]),
                                  8, int(overflow))
        starts.append(len(body))
        body += aedat3_packet(3, bytes(range(36)), 36)
    path.write_bytes(bytes(body))
    return events[valid == 1], starts


def synthetic_events(count: int, seed: int = 0, width: int = 128, height: int = 128, start_us: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = start_us + np.cumsum(rng.integers(0, 50, count))
    return dvs_events(t, rng.integers(0, width, count), rng.integers(0, height, count), rng.integers(0, 2, count))


def test_aedat3_round_trip_with_skipped_packets_and_overflow(tmp_path):
    events = synthetic_events(3000, start_us=(1 << 31) - 40_000)
    assert events["timestamp"][0] < (1 << 31) < events["timestamp"][-1]
    path = tmp_path / "gesture.aedat"
    expected, _ = write_aedat3(path, events, invalid_every=11)
    reader = open_recording(path)
    assert isinstance(reader, aedat3.Reader)
    assert (reader.header.width, reader.header.height) == (128, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(decode(reader), expected)
    tiny = aedat3.Reader(path, chunk_events=3)
    tiny.block_bytes = 5
    np.testing.assert_array_equal(decode(tiny), expected)


def test_aedat3_davis346_resolution_and_bounds(tmp_path):
    events = synthetic_events(200, width=346, height=260)
    path = tmp_path / "davis.aedat"
    expected, _ = write_aedat3(path, events, source="DAVIS346B")
    reader = aedat3.Reader(path)
    assert (reader.header.width, reader.header.height) == (346, 260)
    np.testing.assert_array_equal(decode(reader), expected)
    events["x"][100] = 400
    write_aedat3(path, events, source="DAVIS346B")
    with pytest.warns(RecordingDamageWarning, match=r"davis\.aedat at byte \d+: event at x=400"):
        assert len(decode(aedat3.Reader(path))) == 100


# ---------------------------------------------------------------------------------------------------
# EVT 2.0 / 3.0 time base and wraps on hand-built words.


def raw_file(path: Path, encoding: str, words: list[int], word_format: str) -> Path:
    header = f"% evt {encoding}\n% geometry 640x480\n% end\n".encode()
    path.write_bytes(header + struct.pack(f"<{len(words)}{word_format}", *words))
    return path


def test_evt2_drops_events_before_first_time_high_and_says_so_once(tmp_path):
    cd = lambda p, low, x, y: (p << 28) | (low << 22) | (x << 11) | y  # noqa: E731
    words = [cd(1, 5, 10, 20), cd(0, 6, 11, 21), (8 << 28) | 3, cd(1, 7, 12, 22), (8 << 28) | 4, cd(0, 1, 13, 23)]
    path = raw_file(tmp_path / "a.raw", "2.0", words, "I")
    with pytest.warns(DroppedEventsWarning, match="dropped 2 events") as record:
        events = decode(open_recording(path, chunk_events=1))
    assert len([w for w in record if issubclass(w.category, DroppedEventsWarning)]) == 1
    assert events.tolist() == [(3 * 64 + 7, 12, 22, 1), (4 * 64 + 1, 13, 23, 0)]


def test_evt2_time_high_wrap_and_backward_damage(tmp_path):
    top = (1 << 28) - 1
    words = [(8 << 28) | top, (1 << 28) | (63 << 22), (8 << 28) | 0, (1 << 28) | (1 << 22)]
    events = decode(evt2.Reader(raw_file(tmp_path / "w.raw", "2.0", words, "I")))
    assert events["timestamp"].tolist() == [(top << 6) | 63, (1 << 34) | 1]
    words = [(8 << 28) | 100, (1 << 28), (8 << 28) | 90, (1 << 28)]
    path = raw_file(tmp_path / "b.raw", "2.0", words, "I")
    with pytest.warns(RecordingDamageWarning, match=r"b\.raw at byte \d+: TIME_HIGH went back from 100 to 90"):
        assert len(decode(evt2.Reader(path))) == 1


def test_evt3_vectors_wraps_and_time_low_glitch(tmp_path):
    """A TIME_LOW step back is kept as recorded (no wrap); a TIME_HIGH 0xFFF -> 0 is one wrap (+2^24)."""
    words = [
        0x8000 | 0xFFF, 0x6000 | 811, 0x0000 | 7,                  # TIME_HIGH, TIME_LOW, y = 7
        0x2000 | 0x800 | 5,                                        # ON event at x = 5
        0x6000 | 800,                                              # TIME_LOW glitch back 11 µs
        0x3000 | 100,                                              # vector base x = 100, OFF
        0x4000 | 0b100000000101,                                   # VECT_12: x = 100, 102, 111
        0x5000 | 0b10000001,                                       # VECT_8: x = 112, 119
        0x8000 | 0x000, 0x6000 | 2, 0x2000 | 6,                    # wrap, event at x = 6
    ]
    path = raw_file(tmp_path / "v.raw", "3.0", words, "H")
    events = decode(evt3.Reader(path, chunk_events=2))
    t0 = (0xFFF << 12) | 811
    t1 = (0xFFF << 12) | 800
    assert events.tolist() == [(t0, 5, 7, 1)] + [(t1, x, 7, 0) for x in (100, 102, 111, 112, 119)] + [
        ((1 << 24) | 2, 6, 7, 0)]


def test_aedat2_wrap_and_reset(tmp_path):
    """jAER 32-bit timestamps: a drop of more than 2^31 is a wrap; a drop to near zero is a reset."""
    header = b"#!AER-DAT2.0\r\n# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n"
    stamps = [(1 << 32) - 10, 5, 50_000_000, 20]
    body = b"".join(struct.pack(">Ii", 0x0102, s - (1 << 32) if s >= 1 << 31 else s) for s in stamps)
    path = tmp_path / "wrap.aedat"
    path.write_bytes(header + body)
    events = decode(aedat2.Reader(path))
    assert events["timestamp"].tolist() == [(1 << 32) - 10, (1 << 32) + 5, (1 << 32) + 50_000_000,
                                            (1 << 32) + 50_000_000]
    assert tuple(events[0])[1:] == (127 - 1, 127 - 1, 1)


def test_aedat1_six_byte_records_decode_like_aedat2(data_dir, tmp_path):
    """AEDAT 1.0 (no version line; int16 address, int32 t) of the same DVS128 events as the 2.0 file."""
    source = data_dir / "events" / "dvs128_walking_a.aedat"
    reader = aedat2.Reader(source)
    words = data_bytes(source, reader.header.extra["data_offset"]).view(">u4").reshape(-1, 2)
    records = np.zeros(len(words), dtype=[("address", ">u2"), ("t", ">u4")])
    records["address"] = words[:, 0]
    records["t"] = words[:, 1]
    path = tmp_path / "old.dat"
    path.write_bytes(b"# This is a raw AE data file - do not edit\r\n"
                     b"# AEChip: ch.unizh.ini.jaer.chip.retina.DVS128\r\n" + records.tobytes())
    old = open_recording(path)
    assert isinstance(old, aedat2.Reader) and old.header.extra["version"] == "1.0"
    np.testing.assert_array_equal(decode(old), decode(reader))


@pytest.mark.parametrize("content, match", [
    (b"#!AER-DAT2.0\r\n# AEChip: org.example.UnknownChip\r\n", "AEChip 'org.example.UnknownChip' is not supported"),
    (b"Event Stream\x02\x00\x00\x02\x40\x01\xf0\x00", "type ATIS: only DVS"),
    (b"Event Stream\x01\x00\x00\x01\x40\x01\xf0\x00", "version 1.0.0: only 2.x"),
    (b"% Data file containing Event2D events\n% Version 2\n\x00\x10", "event size 16 bytes, expected 8"),
    (b"% Data file containing Event2D events\n% Version 2\n\x05\x08", "event type 5 is not a CD event type"),
    (b"#!AER-DAT3.1\r\n#Format: SerializedTS\r\n#!END-HEADER\r\n", "SerializedTS .compressed. is not supported"),
    (b"#!AER-DAT3.1\r\n#Format: RAW\r\n", "no '#!END-HEADER' line"),
])
def test_unsupported_headers_are_refused_with_a_reason(tmp_path, content, match):
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    assert not nmnist.Reader.sniff(content, path)
    with pytest.raises(RecordingError, match=match) as info:
        open_recording(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("header, fmt, size", [
    (b"% camera_integrator_name Prophesee\n% format EVT3;height=480;width=640\n% end\n", "evt3", (640, 480)),
    (b"% evt 3.0\n% geometry 320x320\n% end\n", "evt3", (320, 320)),
    (b"% format EVT2;height=720;width=1280\n% end\n", "evt2", (1280, 720)),
    (b"% evt 2.0\n% plugin_name hal_plugin_gen31_fx3\n", "evt2", (640, 480)),
    (b"% evt 3.0\n% plugin_name unknown_plugin\n% end\n", "evt3", (0, 0)),
])
def test_raw_geometry_from_header_lines(tmp_path, header, fmt, size):
    """Resolution from `% geometry`, `% format ...;width=;height=`, else the sensor named by the plugin."""
    path = tmp_path / "cam.raw"
    first = 0x25 if header.endswith(b"% end\n") else 0x00  # after `% end` a data byte may even be '%'
    path.write_bytes(header + bytes([first, 0x80, 0x00, 0x80]))
    reader = open_recording(path)
    assert reader.header.format == fmt and (reader.header.width, reader.header.height) == size
    assert reader.header.extra["data_offset"] == len(header)
