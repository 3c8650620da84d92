"""Damaged HDF5 metadata (not event data): libhdf5 may loop forever or crash on it, so the reader walks the
metadata in a forked child first (recordings.contained) and refuses the file in one line when the child
hangs or crashes. The fuzz flips bytes outside every dataset's raw data (superblock, object headers,
B-trees, heaps) of a real `spikeloop convert` output, each case in a forked process under a timeout: a
one-line RecordingError naming the file or a read that keeps the reader contract, never a hang, a crash or
a traceback."""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_formats_damage import SETTINGS, assert_contract, run

from pipeline.app.commands.convert import convert
from recordings import hdf5_reader
from recordings.base import RecordingError
from recordings.contained import run_contained
from recordings.detect import open_recording

ROOT = Path(__file__).resolve().parent.parent
#: Bound on one fuzz case (open + read of 117,667 events); far above the reader's own walk timeout.
CASE_TIMEOUT_S = 300.0


def test_contained_work_that_returns_or_raises_is_fine():
    assert run_contained(lambda: None, 60.0) is None
    assert run_contained(lambda: 1 / 0, 60.0) is None  # the caller meets the exception again in-process


def test_contained_hang_and_crash_are_reported():
    started = time.monotonic()
    assert run_contained(lambda: time.sleep(600), 1.0) == "did not finish within 1 s"
    assert time.monotonic() - started < 300  # killed, not waited for
    assert run_contained(os.abort, 60.0) == "crashed (SIGABRT)"
    assert run_contained(lambda: os.kill(os.getpid(), signal.SIGSEGV), 60.0) == "crashed (SIGSEGV)"


@pytest.fixture(scope="module")
def converted_h5(data_dir, tmp_path_factory) -> tuple[bytes, list[tuple[int, int]], int]:
    """The DAVIS346 recording (events, frames, IMU, triggers, camera name) as `spikeloop convert` writes it:
    (file bytes, byte ranges outside every dataset's raw data, event count)."""
    path = tmp_path_factory.mktemp("h5") / "davis346.h5"
    count = convert(data_dir / "events" / "davis346_aestream.aedat4", path)
    raw_data = []
    with h5py.File(path, "r") as f:
        def visit(_name, item):
            if isinstance(item, h5py.Dataset):
                if item.chunks:
                    item.id.chunk_iter(lambda chunk: raw_data.append((chunk.byte_offset, chunk.size)))
                elif item.id.get_offset() is not None:
                    raw_data.append((item.id.get_offset(), item.id.get_storage_size()))
        f.visititems(visit)
    raw = path.read_bytes()
    metadata, at = [], 0
    for start, size in sorted(raw_data):
        if start > at:
            metadata.append((at, start))
        at = max(at, start + size)
    if at < len(raw):
        metadata.append((at, len(raw)))
    assert metadata[0][0] == 0 and sum(b - a for a, b in metadata) < len(raw) // 10
    return raw, metadata, count


def test_hanging_metadata_walk_is_refused_in_one_line(converted_h5, tmp_path, monkeypatch):
    """A walk that never ends (libhdf5 looping on a damaged heap) is killed and the file refused."""
    path = tmp_path / "hangs.h5"
    path.write_bytes(converted_h5[0])
    monkeypatch.setattr(hdf5_reader, "walk_metadata", lambda h5py, path: time.sleep(600))
    monkeypatch.setattr(hdf5_reader.Reader, "metadata_timeout_s", 1.0)
    with pytest.raises(RecordingError) as caught:
        open_recording(path)
    assert str(caught.value) == (f"{path}: damaged HDF5 metadata: libhdf5 did not finish within 1 s reading it in "
                                 f"a child process (not opened here)")


def _read(path: Path, results) -> None:
    """One fuzz case, in a forked process: ("events", n), ("refused", message) or ("traceback", text)."""
    import traceback

    try:
        events, error, damage = run(hdf5_reader.Reader, path)
        if events is not None:
            assert_contract(events, hdf5_reader.Reader, path)
        results.send(("events", len(events)) if events is not None else ("refused", str(error)))
    except BaseException:  # noqa: BLE001  (reported to the parent as the failure it is)
        results.send(("traceback", traceback.format_exc()))


def read_in_child(path: Path) -> tuple[str, object]:
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_read, args=(path, send))
    child.start()
    if not receive.poll(CASE_TIMEOUT_S):
        child.kill()
        child.join()
        pytest.fail(f"reading {path} did not finish within {CASE_TIMEOUT_S:g} s")
    outcome = receive.recv()
    child.join()
    assert child.exitcode == 0, f"the reading process ended with {child.exitcode}"
    return outcome


@SETTINGS
@given(data=st.data())
def test_flipped_metadata_bytes_give_one_line_or_a_valid_read(converted_h5, tmp_path, data):
    raw, metadata, count = converted_h5
    raw = bytearray(raw)
    position = st.sampled_from(metadata).flatmap(lambda r: st.integers(r[0], r[1] - 1))
    for at, value in data.draw(st.lists(st.tuples(position, st.integers(0, 255)), min_size=1, max_size=12)):
        raw[at] = value
    path = tmp_path / "flipped.h5"
    path.write_bytes(bytes(raw))
    kind, detail = read_in_child(path)
    assert kind != "traceback", detail
    if kind == "refused":
        assert detail.startswith(f"{path}: ") and "\n" not in detail
    else:
        assert 0 <= detail <= count


def test_damaged_metadata_from_the_command_line_is_one_line(converted_h5, tmp_path):
    """`spikeloop info` on a file whose superblock and root object header are overwritten: exit 2, one line."""
    raw = bytearray(converted_h5[0])
    raw[8:1024] = (bytes(range(256)) * 4)[:1016]
    path = tmp_path / "garbled.h5"
    path.write_bytes(bytes(raw))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "SPIKELOOP_DATA": os.environ.get("SPIKELOOP_DATA", "")}
    done = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "info", str(path)], capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and str(path) in done.stderr, done.stderr
