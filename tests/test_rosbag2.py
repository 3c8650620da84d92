"""rosbag2 files (sqlite3 and MCAP) with dvs_msgs/EventArray and event_camera_msgs/EventPacket: bags are
written by rosbags' own writer and serializer (an independent implementation); the decoded events must
be the ones put in."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import dv_processing as dv
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from recordings.base import RecordingDamageWarning, RecordingError
from recordings.detect import detect_format, open_recording
from recordings.rosbag2 import Reader

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 346, 260

STORE = get_typestore(Stores.ROS2_JAZZY)
STORE.register({
    **get_types_from_msg("uint16 x\nuint16 y\nbuiltin_interfaces/Time ts\nbool polarity", "dvs_msgs/msg/Event"),
    **get_types_from_msg("std_msgs/Header header\nuint32 height\nuint32 width\ndvs_msgs/Event[] events",
                         "dvs_msgs/msg/EventArray"),
    **get_types_from_msg("std_msgs/Header header\nuint32 height\nuint32 width\nuint64 seq\nuint64 time_base\n"
                         "string encoding\nbool is_bigendian\nuint8[] events", "event_camera_msgs/msg/EventPacket"),
})
T = STORE.types
STORAGES = {"db3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


def _truth(n_messages=5, per_message=301, seed=0):
    """Per message: (t µs, x, y, p) columns; µs timestamps from a 2024 epoch, sorted."""
    rng = np.random.default_rng(seed)
    t = 1_700_000_000_000_000 + np.sort(rng.integers(0, 2_000_000, n_messages * per_message))
    x, y, p = rng.integers(0, WIDTH, t.size), rng.integers(0, HEIGHT, t.size), rng.integers(0, 2, t.size)
    return [(t[i:i + per_message], x[i:i + per_message], y[i:i + per_message], p[i:i + per_message])
            for i in range(0, t.size, per_message)]


def _header(t_us):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=int(t_us // 1_000_000),
                                                                            nanosec=int(t_us % 1_000_000) * 1000),
                                    frame_id="camera")


def _event_array(t, x, y, p):
    Time, Event = T["builtin_interfaces/msg/Time"], T["dvs_msgs/msg/Event"]
    events = [Event(x=int(a), y=int(b), ts=Time(sec=int(ts // 1_000_000), nanosec=int(ts % 1_000_000) * 1000 + 7),
                    polarity=bool(c)) for ts, a, b, c in zip(t, x, y, p)]
    return T["dvs_msgs/msg/EventArray"](header=_header(t[0]), height=HEIGHT, width=WIDTH, events=events)


def _mono_packet(t, x, y, p, bigendian=False):
    time_base_ns = int(t[0]) * 1000 - 123  # not a multiple of 1000: the sum is what is truncated to µs
    dt = t * 1000 - time_base_ns
    words = dt.astype(np.uint64) | (x.astype(np.uint64) << 32) | (y.astype(np.uint64) << 48) | (
        p.astype(np.uint64) << 63)
    data = words.astype(">u8" if bigendian else "<u8").view(np.uint8)
    return T["event_camera_msgs/msg/EventPacket"](header=_header(t[0]), height=HEIGHT, width=WIDTH, seq=0,
                                                  time_base=time_base_ns, encoding="mono", is_bigendian=bigendian,
                                                  events=data)


def _write_bag(directory: Path, storage: str, messages, msgtype: str, topic="/dvs/events", extra_topics=()):
    """A rosbag2 written by rosbags; returns its storage file (.db3 / .mcap)."""
    with Writer(directory, version=9, storage_plugin=STORAGES[storage]) as writer:
        for name, other in extra_topics:
            writer.add_connection(name, other, typestore=STORE)
        connection = writer.add_connection(topic, msgtype, typestore=STORE)
        for index, message in enumerate(messages):
            writer.write(connection, 1_000_000 * (index + 1), STORE.serialize_cdr(message, msgtype))
    (file,) = directory.glob(f"*.{storage}")
    return file


def _concat(truth):
    return [np.concatenate(column) for column in zip(*truth)]


@pytest.mark.parametrize("storage", ["db3", "mcap"])
def test_event_array_bags_decode_to_the_events_written(tmp_path, storage):
    truth = _truth()
    bag = _write_bag(tmp_path / "bag", storage, [_event_array(*m) for m in truth], "dvs_msgs/msg/EventArray",
                     extra_topics=[("/imu", "sensor_msgs/msg/Imu")])
    assert detect_format(bag) is Reader
    with open_recording(bag, chunk_events=500) as reader:
        assert (reader.header.width, reader.header.height) == (WIDTH, HEIGHT)
        assert reader.header.extra["topic"] == "/dvs/events" and reader.header.extra["messages"] == len(truth)
        chunks = list(reader.chunks())
    assert max(len(c) for c in chunks) <= 500
    events = np.concatenate(chunks)
    t, x, y, p = _concat(truth)
    np.testing.assert_array_equal(events["timestamp"], t)  # +7 ns is below a µs
    np.testing.assert_array_equal(events["x"], x)
    np.testing.assert_array_equal(events["y"], y)
    np.testing.assert_array_equal(events["polarity"], p)


@pytest.mark.parametrize("storage, bigendian", [("db3", False), ("mcap", False), ("mcap", True)])
def test_mono_event_packets_decode_to_the_events_written(tmp_path, storage, bigendian):
    truth = _truth(seed=1)
    bag = _write_bag(tmp_path / "bag", storage, [_mono_packet(*m, bigendian=bigendian) for m in truth],
                     "event_camera_msgs/msg/EventPacket")
    with open_recording(bag) as reader:
        assert reader.header.extra["encoding"] == "mono"
        events = np.concatenate(list(reader.chunks()))
    t, x, y, p = _concat(truth)
    np.testing.assert_array_equal(events["timestamp"], t)  # time_base + dt = t * 1000 ns exactly
    np.testing.assert_array_equal(events["x"], x)
    np.testing.assert_array_equal(events["y"], y)
    np.testing.assert_array_equal(events["polarity"], p)


def _evt3_words(t, x, y, p):
    """EVT 3.0 words for single events (TIME_HIGH / TIME_LOW / ADDR_Y / ADDR_X per event), written from
    the format's documented word types, independently of the reader's kernel."""
    words = []
    for ts, a, b, c in zip(t.tolist(), x.tolist(), y.tolist(), p.tolist()):
        words += [0x8000 | ((ts >> 12) & 0xFFF), 0x6000 | (ts & 0xFFF), 0x0000 | b, 0x2000 | (c << 11) | a]
    return np.array(words, dtype="<u2").view(np.uint8)


def test_evt3_event_packets_carry_decoder_state_across_messages(tmp_path):
    rng = np.random.default_rng(2)
    t = np.sort(rng.integers(0, 1 << 24, 900))  # camera µs clock, below the first 24-bit wrap
    x, y, p = rng.integers(0, WIDTH, t.size), rng.integers(0, HEIGHT, t.size), rng.integers(0, 2, t.size)
    words = _evt3_words(t, x, y, p)
    # split the byte stream at arbitrary word boundaries: an event's TIME_HIGH may sit in an earlier packet
    cuts = [0, 8 * 100 + 2, 8 * 450 + 6, 8 * 700, len(words)]
    packet = T["event_camera_msgs/msg/EventPacket"]
    messages = [packet(header=_header(0), height=HEIGHT, width=WIDTH, seq=i, time_base=0, encoding="evt3",
                       is_bigendian=False, events=words[a:b]) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    bag = _write_bag(tmp_path / "bag", "mcap", messages, "event_camera_msgs/msg/EventPacket")
    with open_recording(bag) as reader:
        events = np.concatenate(list(reader.chunks()))
    np.testing.assert_array_equal(events["timestamp"], t)
    np.testing.assert_array_equal(events["x"], x)
    np.testing.assert_array_equal(events["y"], y)
    np.testing.assert_array_equal(events["polarity"], p)


def test_unsupported_encoding_and_no_event_topic_are_named(tmp_path):
    truth = _truth(n_messages=1)
    message = _mono_packet(*truth[0])
    message.encoding = "libcaer_cmp"
    bag = _write_bag(tmp_path / "a", "mcap", [message], "event_camera_msgs/msg/EventPacket")
    with pytest.raises(RecordingError, match="'libcaer_cmp' is not supported .supported: mono, evt3"):
        open_recording(bag)
    with Writer(tmp_path / "b", version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        writer.add_connection("/imu", "sensor_msgs/msg/Imu", typestore=STORE)
    with pytest.raises(RecordingError, match=r"no dvs_msgs/msg/EventArray or .* topic \(topics: /imu"):
        open_recording(next((tmp_path / "b").glob("*.db3")))


def test_damaged_message_keeps_the_events_before_it(tmp_path):
    truth = _truth(n_messages=3)
    bag = _write_bag(tmp_path / "bag", "db3", [_event_array(*m) for m in truth], "dvs_msgs/msg/EventArray")
    # rewrite message 2 in place with a claimed event count far beyond its bytes
    import sqlite3

    with sqlite3.connect(bag) as db:
        (rowid, data), *_ = db.execute("SELECT id, data FROM messages ORDER BY timestamp LIMIT 1 OFFSET 2")
        count_at = 4 + 16 + 4 + 4 + 4  # header stamp 8 + frame_id "camera\0" (4 + 7 -> 20) + height + width
        data = bytearray(data)
        assert int.from_bytes(data[count_at:count_at + 4], "little") == len(truth[2][0])
        data[count_at:count_at + 4] = (10**9).to_bytes(4, "little")
        db.execute("UPDATE messages SET data = ? WHERE id = ?", (bytes(data), rowid))
    with open_recording(bag) as reader, pytest.warns(RecordingDamageWarning, match="message 2 on /dvs/events"):
        events = np.concatenate(list(reader.chunks()))
    assert len(events) == 2 * len(truth[0][0])
    with pytest.raises(RecordingError, match="message 2"), open_recording(bag, strict=True) as reader:
        list(reader.chunks())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_recording(bag) as reader:
            assert reader.header.extra["messages"] == 3


def test_info_replay_and_convert_commands_on_a_bag(tmp_path):
    truth = _truth()
    bag = _write_bag(tmp_path / "bag", "mcap", [_event_array(*m) for m in truth], "dvs_msgs/msg/EventArray")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    info = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "info", str(bag), "--json"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    t, x, _y, _p = _concat(truth)
    assert facts["format"] == "rosbag2" and facts["events"] == len(t) and facts["t_start_us"] == t[0]
    replayed = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "replay", str(bag), "--fast"],
                              capture_output=True, text=True, env=env, timeout=120)
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {len(t):,} events in " in replayed.stdout + replayed.stderr
    out = tmp_path / "out.aedat4"
    done = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "convert", str(bag), str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    reader = dv.io.MonoCameraRecording(str(out))
    stores = []
    while (batch := reader.getNextEventBatch()) is not None:
        stores.append(batch.numpy())
    back = np.concatenate(stores)
    np.testing.assert_array_equal(back["timestamp"], t)
    np.testing.assert_array_equal(back["x"], x)
