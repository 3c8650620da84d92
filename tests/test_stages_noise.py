"""Background-activity filter: event-for-event agreement with dv-processing's BackgroundActivityNoiseFilter."""
from __future__ import annotations

import datetime

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

dv = pytest.importorskip("dv_processing")

from pipeline.core.events import DVS_EVENT_DTYPE, dvs_events  # noqa: E402
from pipeline.stages import STAGES, BackgroundActivityFilter  # noqa: E402

RECORDINGS = ["davis346_aestream.aedat4", "dvxplorer_tonic.aedat4"]


def stored_packets(path):
    """The recording's stored event packets as (EventStore, numpy) pairs, plus its resolution."""
    recording = dv.io.MonoCameraRecording(str(path))
    resolution = recording.getEventResolution()
    packets = []
    while (store := recording.getNextEventBatch()) is not None:
        packets.append((store, store.numpy()))
    return resolution, packets


def dv_filter(resolution, duration_us):
    return dv.noise.BackgroundActivityNoiseFilter(
        resolution, backgroundActivityDuration=datetime.timedelta(microseconds=duration_us))


def to_store(events):
    store = dv.EventStore()
    for t, x, y, p in zip(events["timestamp"].tolist(), events["x"].tolist(), events["y"].tolist(),
                          events["polarity"].tolist()):
        store.push_back(t, x, y, bool(p))
    return store


def dv_reference(events, width, height, duration_us):
    filt = dv_filter((width, height), duration_us)
    filt.accept(to_store(events))
    return filt.generateEvents().numpy()


def concat(arrays):
    """np.concatenate keeping DVS_EVENT_DTYPE (numpy 2 drops the 3 padding bytes otherwise)."""
    return np.concatenate(arrays, dtype=DVS_EVENT_DTYPE)


def random_split(events, rng, max_parts=12):
    cuts = np.sort(rng.integers(0, len(events) + 1, rng.integers(0, max_parts)))
    return np.split(events, cuts)


@pytest.fixture(scope="module", params=RECORDINGS)
def recording(request, data_dir):
    return stored_packets(data_dir / "events" / request.param)


@pytest.mark.parametrize("duration_us", [100, 2000, 10_000])
def test_matches_dv_processing_on_real_recordings(recording, duration_us):
    (width, height), packets = recording
    reference = dv_filter((width, height), duration_us)
    ours = BackgroundActivityFilter(duration_us=duration_us).build(width, height)
    expected, got = [], []
    for store, array in packets:
        reference.accept(store)
        expected.append(reference.generateEvents().numpy())
        got.append(ours(array))
    expected = concat(expected)
    got = concat(got)
    total = sum(len(array) for _, array in packets)
    assert 0 < len(expected) < total
    assert got.dtype == DVS_EVENT_DTYPE
    np.testing.assert_array_equal(got, expected)


def test_real_recording_is_chunking_invariant(recording):
    (width, height), packets = recording
    events = concat([array for _, array in packets])
    whole = BackgroundActivityFilter(2000).build(width, height)(events)
    rng = np.random.default_rng(7)
    for _ in range(3):
        filt = BackgroundActivityFilter(2000).build(width, height)
        parts = [filt(part) for part in random_split(events, rng, 40)]
        np.testing.assert_array_equal(concat(parts), whole)


OTHER_RECORDINGS = ["evt2_faery.raw", "evt3_expelliarmus.raw", "dvs_faery.es", "davis240_boxes.aedat",
                    "dvs128_walking_b.aedat", "nmnist_tonic.bin", "ncars_tonic.dat"]


@pytest.mark.parametrize("name", OTHER_RECORDINGS)
def test_matches_dv_processing_on_other_formats(data_dir, name):
    """Every other real recording, decoded by the project's readers, handed to dv-processing as an EventStore."""
    from recordings.detect import open_recording
    from recordings.dv_bridge import to_event_store

    with open_recording(data_dir / "events" / name) as reader:
        width, height = reader.header.width, reader.header.height
        events = concat([events for events in reader.chunks()])
    store = to_event_store(events, width, height)
    reference = dv_filter((width, height), 2000)
    reference.accept(store)
    expected = reference.generateEvents().numpy()
    got = BackgroundActivityFilter(2000).build(width, height)(events)
    assert 0 < len(expected) < len(events)
    np.testing.assert_array_equal(got, expected)


def test_known_keep_fraction_dvxplorer(data_dir):
    """formats.md §9.5: dv-processing keeps 26.2 % of the DVXplorer sample at 2 ms."""
    (width, height), packets = stored_packets(data_dir / "events" / "dvxplorer_tonic.aedat4")
    events = concat([array for _, array in packets])
    kept = BackgroundActivityFilter(2000).build(width, height)(events)
    assert len(events) == 111_954
    assert round(100 * len(kept) / len(events), 1) == 26.2


def test_matches_dv_processing_on_generated_stream_from_time_zero():
    """dv's uniform generator (timestamps from 0, duplicates): exercises the zero-initialised surface."""
    store = dv.data.generate.uniformEventsWithinTimeRange(0, datetime.timedelta(microseconds=20_000), (64, 48),
                                                          30_000, 3)
    events = store.numpy()
    filt = dv_filter((64, 48), 1000)
    filt.accept(store)
    np.testing.assert_array_equal(BackgroundActivityFilter(1000).build(64, 48)(events), filt.generateEvents().numpy())


@settings(deadline=None, max_examples=40)
@given(st.data())
def test_matches_dv_processing_on_small_sensors(data):
    """Tiny sensors put most events on borders and corners, where the neighbourhood is clipped."""
    width = data.draw(st.integers(1, 6))
    height = data.draw(st.integers(1, 6))
    n = data.draw(st.integers(0, 80))
    duration = data.draw(st.integers(1, 50))
    start = data.draw(st.sampled_from([0, 10, 1_700_000_000_000_000]))
    steps = data.draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))
    xs = data.draw(st.lists(st.integers(0, width - 1), min_size=n, max_size=n))
    ys = data.draw(st.lists(st.integers(0, height - 1), min_size=n, max_size=n))
    ps = data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    events = dvs_events(start + np.cumsum(steps, dtype=np.int64), xs, ys, ps)
    expected = dv_reference(events, width, height, duration)
    filt = BackgroundActivityFilter(duration).build(width, height)
    rng = np.random.default_rng(n)
    got = concat([events[:0]] + [filt(part) for part in random_split(events, rng)])
    np.testing.assert_array_equal(got, expected)


def test_hand_checked_neighbourhood_and_strict_window():
    t0 = 1_000_000
    events = dvs_events(
        [t0, t0 + 1999, t0 + 4000, t0 + 6000, t0 + 6500, t0 + 6600],
        [10, 11, 10, 10, 12, 10],
        [10, 10, 10, 10, 10, 10],
        [1, 0, 1, 1, 1, 1],
    )
    kept = BackgroundActivityFilter(2000).build(32, 32)(events)
    # t0: no neighbour ever fired (surface 0 is far in the past) -> dropped.
    # t0+1999 at (11,10): neighbour (10,10) fired 1999 µs ago (< 2000) -> kept, whatever the polarity.
    # t0+4000 at (10,10): (11,10) fired 2001 µs ago -> dropped. Its own pixel never supports it.
    # t0+6000 at (10,10): only its own pixel fired (2000 µs ago) -> dropped.
    # t0+6500 at (12,10): distance 2 from (10,10) -> not a neighbour -> dropped.
    # t0+6600 at (10,10): (11,10) last at t0+1999 -> too old -> dropped.
    np.testing.assert_array_equal(kept["timestamp"], [t0 + 1999])


def test_surface_starts_at_zero_like_dv_processing():
    events = dvs_events([100, 5000], [3, 20], [3, 20], [1, 1])
    kept = BackgroundActivityFilter(2000).build(32, 32)(events)
    np.testing.assert_array_equal(kept["timestamp"], [100])


def test_reset_empty_and_errors():
    filt = BackgroundActivityFilter(10).build(8, 8)
    assert len(filt(np.zeros(0, DVS_EVENT_DTYPE))) == 0
    filt(dvs_events([1_000_000, 1_000_001], [1, 2], [1, 1], [1, 1]))
    filt.reset()
    assert len(filt(dvs_events([1_000_002], [1], [1], [1]))) == 0
    with pytest.raises(ValueError, match=r"event 1 at \(x=8, y=0"):
        filt(dvs_events([5, 6], [0, 8], [0, 0], [1, 1]))
    with pytest.raises(ValueError, match="noise_filter: parameter 'duration_us' = 0 is out of range"):
        BackgroundActivityFilter(duration_us=0)
    with pytest.raises(ValueError, match="noise_filter: parameter 'width' = 0"):
        BackgroundActivityFilter().build(0, 8)
    with pytest.raises(TypeError, match="DVS_EVENT_DTYPE"):
        filt(np.zeros(3, dtype=np.int64))
    assert STAGES["noise_filter"] is BackgroundActivityFilter
