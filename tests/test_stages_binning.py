"""Binners: DVS events (StepBinner) and AER spikes (SpikeStepBinner) -> per-step unique active input indices,
carried across packets; AER spikes -> per-bin counts (CountBinner, tested with the neural sources in
test_bci_sources.py)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.events import DVS_EVENT_DTYPE, SPIKE_DTYPE, dvs_events, spikes
from pipeline.stages import SpatialPooling, StepBinner
from pipeline.stages.binning import CountBinner, SpikeStepBinner


def reference_steps(events, dt, width, height, by_polarity, t0):
    """Dict step -> list of unique indices in first-occurrence order (straightforward Python)."""
    steps = {}
    for e in events:
        k = (int(e["timestamp"]) - t0) // dt
        index = int(e["y"]) * width + int(e["x"])
        if by_polarity:
            index += int(e["polarity"] != 0) * width * height
        bucket = steps.setdefault(k, [])
        if index not in bucket:
            bucket.append(index)
    return steps


def collect(batches):
    """Concatenate StepBatches into {step: indices list}, checking they are contiguous."""
    out = {}
    expected_next = None
    for batch in batches:
        if expected_next is not None and len(batch):
            assert batch.first_step == expected_next
        for i in range(len(batch)):
            out[batch.first_step + i] = batch.step(i).tolist()
        if len(batch):
            expected_next = batch.first_step + len(batch)
    return out


def test_hand_checked_boundaries_and_carry():
    # 4x2 grid, dt = 1000 µs from t0 = 0: an event at exactly 1000 µs belongs to step 1.
    events = dvs_events([0, 10, 10, 999, 1000, 1500, 2999, 3000], [0, 1, 1, 0, 3, 0, 1, 2],
                        [0, 0, 0, 0, 1, 1, 1, 1], [1, 0, 0, 1, 1, 0, 1, 1])
    binner = StepBinner(1000, 4, 2, channels_by_polarity=True, t0_us=0)
    assert binner.n_inputs == 16
    first = binner.push(events[:5], t_end_us=1000)  # step 0 complete exactly at its end
    assert (first.first_step, len(first)) == (0, 1)
    assert first.step(0).tolist() == [8, 1]  # (0,0,ON) -> 8, (1,0,OFF) -> 1 once, duplicate ON at 999 dropped
    assert binner.pending_events == 1  # the event at 1000 waits for step 1
    second = binner.push(events[5:], t_end_us=2999)  # step 1 done, step 2 not yet
    assert (second.first_step, len(second)) == (1, 1)
    assert second.step(0).tolist() == [8 + 4 + 3, 4]
    assert second.step_start_us(0) == 1000 and second.end_us == 2000
    assert binner.pending_events == 2
    empty = binner.push(np.zeros(0, DVS_EVENT_DTYPE), t_end_us=3000)
    assert (empty.first_step, len(empty)) == (2, 1) and empty.step(0).tolist() == [8 + 4 + 1]
    last = binner.flush()
    assert (last.first_step, len(last)) == (3, 1) and last.step(0).tolist() == [8 + 4 + 2]
    assert len(binner.flush()) == 0


def test_silence_gives_empty_steps_and_t0_from_first_event():
    binner = StepBinner(1000, 4, 4, channels_by_polarity=False)
    assert len(binner.push(np.zeros(0, DVS_EVENT_DTYPE), 10_000)) == 0  # no t0 yet
    batch = binner.push(dvs_events([5000, 5001], [1, 1], [1, 1], [0, 1]), 10_000)
    assert binner.t0_us == 5000 and len(batch) == 5
    assert batch.step(0).tolist() == [5] and all(len(batch.step(i)) == 0 for i in range(1, 5))
    assert binner.complete_steps(10_000) == 0 and binner.complete_steps(12_000) == 2
    assert binner.to_index(1, 1, 1) == 5


def test_late_events_are_counted_not_binned():
    binner = StepBinner(100, 4, 4, t0_us=0)
    binner.push(dvs_events([10], [0], [0], [1]), 300)
    batch = binner.push(dvs_events([250, 320], [1, 2], [0, 0], [1, 1]), 400)
    assert binner.late_events == 1
    assert collect([batch]) == {3: [16 + 2]}


def test_errors_out_of_grid_and_unordered():
    binner = StepBinner(100, 4, 4, t0_us=0)
    with pytest.raises(ValueError, match=r"event 1 at \(x=4, y=0\) is outside the 4x4 input grid"):
        binner.push(dvs_events([1, 2], [0, 4], [0, 0], [1, 1]), 50)
    with pytest.raises(ValueError, match="event 1 .* earlier step"):
        binner.push(dvs_events([250, 150], [0, 1], [0, 0], [1, 1]), 300)
    # the failed pushes left no trace
    batch = binner.push(dvs_events([50, 150], [0, 1], [0, 0], [1, 1]), 200)
    assert collect([batch]) == {0: [16], 1: [17]}
    with pytest.raises(ValueError, match="dt_us"):
        StepBinner(0, 4, 4)
    with pytest.raises(ValueError, match="complete 10000005 steps"):
        StepBinner(1, 4, 4, t0_us=0).push(np.zeros(0, DVS_EVENT_DTYPE), 2_000_001 * 5)
    # events at the same step but with a timestamp a few µs back are fine (EVT3-style jitter)
    ok = StepBinner(100, 4, 4, t0_us=0).push(dvs_events([120, 110], [0, 1], [0, 0], [1, 1]), 200)
    assert collect([ok]) == {0: [], 1: [16, 17]}


@st.composite
def packet_streams(draw):
    n = draw(st.integers(0, 150))
    gaps = draw(st.lists(st.integers(0, 300), min_size=n, max_size=n))
    t = 10_000 + np.cumsum(gaps, dtype=np.int64)
    events = dvs_events(t, draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)),
                        draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)),
                        draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=10)))
    return events, cuts


@settings(deadline=None, max_examples=60)
@given(packet_streams(), st.sampled_from([5, 100, 1000]), st.booleans(), st.booleans())
def test_any_packet_split_gives_the_reference_steps(stream, dt, by_polarity, explicit_t0):
    events, cuts = stream
    t0 = 9_990 if explicit_t0 else None
    binner = StepBinner(dt, 5, 3, channels_by_polarity=by_polarity, t0_us=t0)
    batches = []
    parts = np.split(events, cuts)
    for i, part in enumerate(parts):
        # t_end: the next packet's first timestamp (a source may only claim what it has seen)
        later = [p for p in parts[i + 1:] if len(p)]
        t_end = int(later[0]["timestamp"][0]) if later else (int(part["timestamp"][-1]) if len(part) else 0)
        batches.append(binner.push(part, t_end))
    batches.append(binner.flush())
    got = collect(batches)
    if not len(events):
        assert got == {}
        return
    start = t0 if explicit_t0 else int(events["timestamp"][0])
    expected = reference_steps(events, dt, 5, 3, by_polarity, start)
    last = max(expected)
    first = min(got) if got else 0
    assert first == 0 and max(got) == last
    assert got == {k: expected.get(k, []) for k in range(0, last + 1)}
    assert binner.late_events == 0 and binner.pending_events == 0


def test_real_recording_binned_at_1ms(data_dir):
    dv = pytest.importorskip("dv_processing")
    recording = dv.io.MonoCameraRecording(str(data_dir / "events" / "dvxplorer_tonic.aedat4"))
    width, height = recording.getEventResolution()
    pool = SpatialPooling(factor=8).build(width, height)
    w, h = pool.output_resolution
    binner = StepBinner(1000, w, h, channels_by_polarity=True)
    pooled, batches = [], []
    while (store := recording.getNextEventBatch()) is not None:
        events = pool(store.numpy())
        pooled.append(events)
        batches.append(binner.push(events, int(events["timestamp"][-1]) if len(events) else 0))
    batches.append(binner.flush())
    events = np.concatenate(pooled, dtype=DVS_EVENT_DTYPE)
    got = collect(batches)
    t0 = int(events["timestamp"][0])
    steps = (events["timestamp"] - t0) // 1000
    index = binner.to_index(events["x"], events["y"], events["polarity"])
    assert len(got) == steps[-1] + 1 > 500
    for k in range(len(got)):
        in_step = index[steps == k]
        assert sorted(got[k]) == np.unique(in_step).tolist()


@st.composite
def spike_streams(draw):
    n = draw(st.integers(0, 150))
    t = 5_000 + np.cumsum(draw(st.lists(st.integers(0, 300), min_size=n, max_size=n)), dtype=np.int64)
    events = spikes(t, draw(st.lists(st.integers(0, 6), min_size=n, max_size=n)))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=10)))
    return events, cuts


@settings(deadline=None, max_examples=60)
@given(spike_streams(), st.sampled_from([7, 100, 1000]), st.booleans())
def test_spike_step_binner_any_packet_split_gives_the_reference_steps(stream, dt, explicit_t0):
    """AER spikes: index = channel; the same grid and carry as DVS events, checked against plain Python."""
    events, cuts = stream
    t0 = 4_990 if explicit_t0 else None
    binner = SpikeStepBinner(dt, 7, t0_us=t0)
    assert binner.n_inputs == 7 and binner.empty().dtype == SPIKE_DTYPE
    parts = np.split(events, cuts)
    batches = []
    for i, part in enumerate(parts):
        later = [p for p in parts[i + 1:] if len(p)]
        t_end = int(later[0]["timestamp"][0]) if later else (int(part["timestamp"][-1]) if len(part) else 0)
        batches.append(binner.push(part, t_end))
    batches.append(binner.flush())
    got = collect(batches)
    if not len(events):
        assert got == {}
        return
    start = t0 if explicit_t0 else int(events["timestamp"][0])
    expected = {}
    for e in events:
        bucket = expected.setdefault((int(e["timestamp"]) - start) // dt, [])
        if int(e["channel"]) not in bucket:
            bucket.append(int(e["channel"]))
    assert got == {k: expected.get(k, []) for k in range(0, max(expected) + 1)}
    assert binner.late_events == 0 and binner.pending_events == 0


def test_spike_step_binner_errors_and_merge():
    binner = SpikeStepBinner(100, 4, t0_us=0)
    with pytest.raises(ValueError, match="event 1 on channel 4 is outside the stream's 4 channels"):
        binner.push(spikes([1, 2], [0, 4]), 50)
    with pytest.raises(TypeError, match="SPIKE_DTYPE"):
        binner.push(dvs_events([1], [0], [0], [1]), 50)
    with pytest.raises(ValueError, match="event 1 .* earlier step"):
        binner.push(spikes([250, 150], [0, 1]), 300)
    merged = binner.merge([np.array([3, 1], np.int32), np.array([1, 2], np.int32)])
    assert binner.merges and merged.tolist() == [1, 2, 3] and merged.dtype == np.int32
    assert not CountBinner(100, 4).merges


@pytest.mark.parametrize("make, packet", [
    (lambda: StepBinner(1000, 4, 4, t0_us=0), dvs_events([10, 1500], [1, 2], [1, 3], [1, 0])),
    (lambda: SpikeStepBinner(1000, 4, t0_us=0), spikes([10, 1500], [1, 3])),
    (lambda: CountBinner(1000, 4, t0_us=0), spikes([10, 1500], [1, 3])),
])
def test_warmup_leaves_the_binner_as_it_was(make, packet):
    """The loop warms a binner up after building it: the same packets must bin the same afterwards."""
    cold, warm = make(), make()
    first = cold.push(packet, 1000)
    warm.push(packet, 1000)
    warm.warmup()
    assert warm.next_step == cold.next_step == 1 and warm.late_events == cold.late_events == 0
    a, b = cold.push(cold.empty(), 3000), warm.push(warm.empty(), 3000)  # the carried 1500 µs event: step 1
    assert len(first) == 1 and len(a) == len(b) == 2 and len(a.step(0))
    for i in range(2):
        np.testing.assert_array_equal(a.step(i), b.step(i))
