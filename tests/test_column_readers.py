"""Reading back the .npy and HDF5 (DSEC layout) files that `spikeloop convert` writes, and DSEC's own layout
written here with h5py (uint32 t relative to /t_offset, no sensor-size attributes): round trips against the
original format's reader, chunking, and damaged or foreign files refused in one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_formats import decode
from test_formats_damage import SETTINGS, assert_contract, run

from pipeline.app.commands.convert import convert
from recordings import hdf5_reader, npy_reader
from recordings.base import RecordingDamageWarning, RecordingError
from recordings.detect import detect_format, open_recording
from recordings.hdf5_writer import Hdf5Writer
from recordings.npy_writer import NpyEventWriter

ROOT = Path(__file__).resolve().parent.parent
#: Real recordings of different sensors and formats (AEDAT 4 with frames/IMU, EVT 3.0, Event Stream).
SOURCES = ["davis346_aestream.aedat4", "evt3_expelliarmus.raw", "dvs_faery.es"]


def cli(*args) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "SPIKELOOP_DATA": os.environ.get("SPIKELOOP_DATA", "")}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env)


def read_all(path: Path, **kwargs) -> np.ndarray:
    with open_recording(path, **kwargs) as reader:
        return decode(reader)


@pytest.fixture(scope="module", params=SOURCES)
def converted(request, data_dir, tmp_path_factory) -> tuple[Path, np.ndarray, tuple[int, int], dict[str, Path]]:
    """(source, its events by its own reader, its sensor size, {".npy": converted, ".h5": converted})."""
    source = data_dir / "events" / request.param
    with open_recording(source) as reader:
        events = decode(reader)
        size = (reader.header.width, reader.header.height)
    folder = tmp_path_factory.mktemp("converted")
    outputs = {}
    for suffix in (".npy", ".h5"):
        outputs[suffix] = folder / f"{source.stem}{suffix}"
        assert convert(source, outputs[suffix]) == len(events)
    return source, events, size, outputs


@pytest.mark.parametrize("suffix, name", [(".npy", "npy"), (".h5", "hdf5")])
def test_round_trip_equals_the_original_reader(converted, suffix, name):
    _source, events, (width, height), outputs = converted
    path = outputs[suffix]
    assert detect_format(path).format_name == name
    with open_recording(path, strict=True) as reader:
        back = decode(reader)
        header = reader.header
    np.testing.assert_array_equal(back, events)
    if suffix == ".h5":  # the writer's width/height attributes
        assert (header.width, header.height) == (width, height)
    else:  # no size in a .npy: the largest coordinates + 1, independently computed here
        assert (header.width, header.height) == (int(events["x"].max()) + 1, int(events["y"].max()) + 1)
        assert "no sensor size" in header.extra["sensor_size"]


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
def test_tiny_chunks_give_the_same_events(converted, suffix):
    _source, events, _size, outputs = converted
    with open_recording(outputs[suffix], chunk_events=777) as reader:
        chunks = list(reader.chunks())
    assert max(len(c) for c in chunks) <= 777
    np.testing.assert_array_equal(np.concatenate(chunks), events)


def test_npy_reads_what_numpy_and_h5py_read(converted):
    """Independent peers: numpy.load of the .npy and h5py of the .h5 hold the events the readers yield."""
    _source, _events, _size, outputs = converted
    array = np.load(outputs[".npy"], allow_pickle=False)
    for ours, theirs in (("timestamp", "t"), ("x", "x"), ("y", "y"), ("polarity", "p")):
        np.testing.assert_array_equal(read_all(outputs[".npy"])[ours], array[theirs])
    with h5py.File(outputs[".h5"], "r") as f:
        t = f["events/t"][:] + f["t_offset"][()]
        np.testing.assert_array_equal(read_all(outputs[".h5"])["timestamp"], t)


def write_dsec(path: Path, t_us: np.ndarray, x, y, p, t_offset: int, chunks: int | None = 1000) -> None:
    """An events.h5 exactly as DSEC ships it (minus the Blosc filter): uint32 t relative to the int64 t_offset,
    uint16 x/y, uint8 p, uint64 ms_to_idx, no attributes."""
    with h5py.File(path, "w") as f:
        group = f.create_group("events")
        rel = (t_us - t_offset).astype(np.uint32)
        for name, values in (("t", rel), ("x", np.asarray(x, np.uint16)), ("y", np.asarray(y, np.uint16)),
                             ("p", np.asarray(p, np.uint8))):
            group.create_dataset(name, data=values, chunks=(chunks,) if chunks and len(values) else None)
        f.create_dataset("t_offset", data=np.int64(t_offset))
        ms_to_idx = np.searchsorted(rel, np.arange(0, rel[-1] // 1000 + 1) * 1000)
        f.create_dataset("ms_to_idx", data=ms_to_idx.astype(np.uint64))


def dsec_events(count: int = 5000, seed: int = 3):
    rng = np.random.default_rng(seed)
    t = 1_600_000_000_000_000 + np.cumsum(rng.integers(0, 40, count))  # absolute µs, as DSEC's offsets are
    return t, rng.integers(0, 640, count), rng.integers(0, 480, count), rng.integers(0, 2, count)


def test_dsec_layout_written_with_h5py_reads_correctly(tmp_path):
    t, x, y, p = dsec_events()
    path = tmp_path / "events.h5"
    write_dsec(path, t, x, y, p, t_offset=int(t[0]) - 17)
    with open_recording(path, strict=True, chunk_events=999) as reader:
        events = decode(reader)
        header = reader.header
    assert header.format == "hdf5" and header.extra["t_offset_us"] == int(t[0]) - 17
    assert (header.width, header.height) == (int(x.max()) + 1, int(y.max()) + 1)
    assert "no width/height attributes" in header.extra["sensor_size"]
    np.testing.assert_array_equal(events["timestamp"], t)
    np.testing.assert_array_equal(events["x"], x)
    np.testing.assert_array_equal(events["y"], y)
    np.testing.assert_array_equal(events["polarity"], p)


def test_dsec_file_replays_and_converts_from_the_command_line(tmp_path):
    t, x, y, p = dsec_events(2000)
    path = tmp_path / "events.h5"
    write_dsec(path, t, x, y, p, t_offset=int(t[0]))
    info = cli("info", path, "--json")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["format"] == "hdf5" and facts["events"] == 2000 and facts["t_start_us"] == int(t[0])
    replay = cli("replay", path, "--fast")
    assert replay.returncode == 0 and "replayed 2,000 events" in replay.stderr, replay.stderr
    out = tmp_path / "back.npy"
    assert cli("convert", path, out).returncode == 0
    np.testing.assert_array_equal(np.load(out)["t"], t)


def hdf5_with(path: Path, **columns) -> Path:
    with h5py.File(path, "w") as f:
        for name, values in columns.items():
            f.create_dataset(f"events/{name}", data=values)
    return path


def good_columns(n: int = 10) -> dict:
    return {"t": np.arange(n, dtype=np.int64) * 5000, "x": np.arange(n, dtype=np.uint16),
            "y": np.arange(n, dtype=np.uint16), "p": np.arange(n, dtype=np.uint8) % 2}


@pytest.mark.parametrize("change, message", [
    ({"x": np.arange(9, dtype=np.uint16)}, "event datasets differ in length (/events/t 10, /events/x 9"),
    ({"t": np.arange(10, dtype=np.float64)}, "/events/t: field t has dtype float64, expected integers"),
    ({"p": np.zeros((10, 2), dtype=np.uint8)}, "/events/p: shape (10, 2), expected (n,)"),
    ({"y": None}, "no dataset /events/y"),
])
def test_malformed_hdf5_is_refused_in_one_line(tmp_path, change, message):
    columns = {**good_columns(), **change}
    path = hdf5_with(tmp_path / "bad.h5", **{k: v for k, v in columns.items() if v is not None})
    with pytest.raises(RecordingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_recording(path)
    result = cli("info", path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert message in result.stderr


def test_hdf5_without_events_group_and_truncated_hdf5_are_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("images", data=np.zeros(4))
    with pytest.raises(RecordingError, match="no /events group"):
        open_recording(other)
    good = hdf5_with(tmp_path / "good.h5", **good_columns(50000))
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    result = cli("info", cut)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(cut) in result.stderr


@pytest.mark.parametrize("attrs, message", [({"width": 0, "height": 10}, "outside 1..32767"),
                                            ({"width": 40000, "height": 10}, "outside 1..32767"),
                                            ({"width": "wide", "height": 10}, "expected an integer")])
def test_absurd_sensor_attributes_are_refused(tmp_path, attrs, message):
    path = hdf5_with(tmp_path / "size.h5", **good_columns())
    with h5py.File(path, "a") as f:
        f.attrs.update(attrs)
    with pytest.raises(RecordingError, match=message):
        open_recording(path)


@pytest.mark.parametrize("column, index, value, message", [
    ("x", 6, 20, "/events index 6: event at x=20, y=6 is outside the 12x12 sensor"),
    ("x", 3, 40000, "/events index 3: event at x=40000, y=3 is outside the 12x12 sensor"),
    ("p", 4, 2, "/events index 4: event polarity 2 is not 0 or 1"),
    ("t", 7, 0, "/events index 7: timestamp went back from 30000 to 0 µs"),
])
def test_hdf5_damage_names_the_event_index(tmp_path, column, index, value, message):
    columns = good_columns()
    columns["x"] = columns["x"].astype(np.int32)
    columns[column][index] = value
    path = hdf5_with(tmp_path / "damaged.h5", **columns)
    with h5py.File(path, "a") as f:
        f.attrs.update({"width": 12, "height": 12})
    with pytest.warns(RecordingDamageWarning, match=message):
        events = read_all(path)
    assert len(events) == index  # the events before the damage, then nothing
    with pytest.raises(RecordingError, match=message):
        read_all(path, strict=True)


def npy_header_only(path: Path, header: str) -> Path:
    """A .npy format 1.0 file whose header dict is ``header`` (padded as NumPy pads it), and no data."""
    body = header.encode("latin1")
    body += b" " * (63 - (10 + len(body)) % 64) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body)
    return path


def test_foreign_npy_files_are_refused_in_one_line(tmp_path):
    cases = []
    np.save(tmp_path / "object.npy", np.array([1, "a"], dtype=object))
    cases.append(("object.npy", "holds Python objects: not read (allow_pickle=False"))
    np.save(tmp_path / "plain.npy", np.arange(5))
    cases.append(("plain.npy", "not a structured array (dtype int64); expected fields t, x, y, p"))
    np.save(tmp_path / "no_p.npy", np.zeros(3, dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2")]))
    cases.append(("no_p.npy", "without field(s) p"))
    np.save(tmp_path / "float_t.npy", np.zeros(3, dtype=[("t", "<f8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")]))
    cases.append(("float_t.npy", "field t has dtype float64, expected integers (µs)"))
    np.save(tmp_path / "matrix.npy", np.zeros((3, 2), dtype=[("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")]))
    cases.append(("matrix.npy", "array of shape (3, 2), expected one dimension (n,)"))
    npy_header_only(tmp_path / "huge.npy", "{'descr': [('t', '<i8'), ('x', '<i2'), ('y', '<i2'), ('p', '|i1')], "
                                           "'fortran_order': False, 'shape': (1125899906842624,), }")
    cases.append(("huge.npy", "header declares 1,125,899,906,842,624 events (more than 2^40)"))
    npy_header_only(tmp_path / "code.npy",
                    "{'descr': __import__('os').getcwd(), 'fortran_order': False, 'shape': (1,)}")
    cases.append(("code.npy", "not a readable .npy header"))
    for name, message in cases:
        with pytest.raises(RecordingError, match="at byte 0: "):
            open_recording(tmp_path / name)
        result = cli("info", tmp_path / name)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr, (name, result.stderr)


def test_truncated_npy_yields_the_whole_events_and_names_the_byte(converted, tmp_path):
    _source, events, _size, outputs = converted
    data = outputs[".npy"].read_bytes()
    record = npy_reader.Reader(outputs[".npy"])._dtype.itemsize
    header = len(data) - len(events) * record
    cut = tmp_path / "cut.npy"
    cut.write_bytes(data[:header + 1000 * record + 5])  # 1000 whole events and 5 bytes of the next
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = read_all(cut)
    np.testing.assert_array_equal(back, events[:1000])
    [warning] = [w for w in caught if issubclass(w.category, RecordingDamageWarning)]
    expected = f"at byte {header + 1000 * record}: file ends after 1,000 of the {len(events):,} events"
    assert expected in str(warning.message)
    result = cli("info", cut, "--strict")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "file ends after 1,000" in result.stderr


def test_npy_damage_names_the_byte_offset_of_the_event(tmp_path):
    array = np.zeros(20, dtype=npy_reader.np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")]))
    array["t"] = np.arange(20) * 5000
    array["t"][12] = 3  # 55 ms back
    array["x"] = 7
    np.save(tmp_path / "back.npy", array)
    header = (tmp_path / "back.npy").stat().st_size - 20 * 13  # records of 13 bytes after the header
    with pytest.raises(RecordingError, match=rf"at byte {header + 12 * 13}: event 12: timestamp went back from 55000 "
                                             rf"to 3 µs"):
        read_all(tmp_path / "back.npy", strict=True)


def test_hdf5_reader_needs_no_hdf5plugin_for_plain_files():
    """The DSEC hint is added to filter errors only (the plugin is optional)."""
    assert "hdf5plugin" in hdf5_reader._hint(OSError("required filter 'blosc' is not registered"))
    assert "hdf5plugin" not in hdf5_reader._hint(OSError("truncated file"))



READERS = {".npy": npy_reader.Reader, ".h5": hdf5_reader.Reader}


@pytest.fixture(scope="module")
def small_files(data_dir, tmp_path_factory) -> dict[str, tuple[bytes, np.ndarray, list[tuple[int, int]]]]:
    """The first 400 events of a real recording written as .npy and .h5: suffix -> (file bytes, events,
    byte ranges a fuzz may flip: the whole .npy; the .h5's event-data chunks, its metadata being fuzzed
    by test_hdf5_metadata_damage.py, each case in a process of its own)."""
    with open_recording(data_dir / "events" / "evt3_expelliarmus.raw", chunk_events=400) as reader:
        events = next(iter(reader.chunks()))
        width, height = reader.header.width, reader.header.height
    folder = tmp_path_factory.mktemp("small")
    out = {}
    writers = {".npy": NpyEventWriter(folder / "s.npy"), ".h5": Hdf5Writer(folder / "s.h5", width, height)}
    for suffix, writer in writers.items():
        with writer:
            writer.write(events)
        raw = (folder / f"s{suffix}").read_bytes()
        ranges = [(0, len(raw))]
        if suffix == ".h5":
            with h5py.File(folder / "s.h5", "r") as f:
                chunks = [f[f"events/{name}"].id.get_chunk_info(0) for name in "txyp"]
            ranges = [(chunk.byte_offset, chunk.byte_offset + chunk.size) for chunk in chunks]
        out[suffix] = (raw, events, ranges)
    return out


@pytest.mark.parametrize("suffix", [".npy", ".h5"])
@SETTINGS
@given(data=st.data())
def test_flipped_bytes_never_crash_and_keep_the_contract(small_files, tmp_path, suffix, data):
    raw, _events, ranges = small_files[suffix]
    raw = bytearray(raw)
    position = st.sampled_from(ranges).flatmap(lambda r: st.integers(r[0], r[1] - 1))
    flips = data.draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=8))
    for at, value in flips:
        raw[at] = value
    path = tmp_path / f"flipped{suffix}"
    path.write_bytes(bytes(raw))
    events, _error, _damage = run(READERS[suffix], path)
    if events is not None:
        assert_contract(events, READERS[suffix], path)


@SETTINGS
@given(data=st.data())
def test_npy_cut_anywhere_gives_a_prefix_and_names_the_byte(small_files, tmp_path, data):
    raw, events, _ranges = small_files[".npy"]
    header = len(raw) - len(events) * 13
    cut = data.draw(st.integers(0, len(raw) - 1))
    path = tmp_path / "cut.npy"
    path.write_bytes(raw[:cut])
    back, error, damage = run(npy_reader.Reader, path)
    if cut < header:
        assert error is not None and back is None
        return
    whole = (cut - header) // 13
    np.testing.assert_array_equal(back, events[:whole])
    [warning] = damage
    assert f"at byte {header + whole * 13}: file ends after {whole:,} of the 400 events" in str(warning.message)
