"""numpy <-> dv EventStore conversion: exact round trips, ordering and dtype checks."""
from __future__ import annotations

import dv_processing as dv
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.events import DVS_EVENT_DTYPE
from recordings.dv_bridge import PUSH_BACK_MAX, to_event_store, to_numpy


def random_events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=DVS_EVENT_DTYPE)
    events["timestamp"] = np.sort(rng.integers(0, 10 * n + 1, n)) + 1_600_000_000_000_000
    events["x"] = rng.integers(0, 1280, n)
    events["y"] = rng.integers(0, 720, n)
    events["polarity"] = rng.integers(0, 2, n)
    return events


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert len(a) == len(b)
    for name in DVS_EVENT_DTYPE.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("n", [0, 1, PUSH_BACK_MAX - 1, PUSH_BACK_MAX, 100_003, 600_000])
def test_round_trip(n):
    events = random_events(n, seed=n)
    store = to_event_store(events)
    assert store.size() == n
    if n:
        assert store.getLowestTime() == events["timestamp"][0]
        assert store.getHighestTime() == events["timestamp"][-1]
    back = to_numpy(store)
    assert back.dtype == DVS_EVENT_DTYPE
    assert_same(back, events)


def test_matches_push_back_store():
    """The fast path gives the same store as dv-processing's own per-event construction."""
    events = random_events(5000, seed=3)
    reference = dv.EventStore()
    for t, x, y, p in events.tolist():
        reference.push_back(t, x, y, bool(p))
    assert_same(to_event_store(events).numpy(), reference.numpy())


def test_store_is_usable_by_dv_processing():
    """dv-processing algorithms accept the store: time slicing sees every event."""
    events = random_events(50_000, seed=5)
    store = to_event_store(events)
    t0, t1 = int(events["timestamp"][100]), int(events["timestamp"][40_000])
    sliced = store.sliceTime(t0, t1)
    expected = events[(events["timestamp"] >= t0) & (events["timestamp"] < t1)]
    assert_same(sliced.numpy(), expected)


def test_unsorted_and_wrong_dtype_rejected():
    events = random_events(1000)
    events["timestamp"][500] = 0
    with pytest.raises(ValueError, match="sorted"):
        to_event_store(events)
    with pytest.raises(TypeError):
        to_event_store(np.zeros(10, dtype=[("t", "<i8")]))


def test_packed_layout_is_accepted():
    """numpy drops the padding when concatenating; the bridge restores the 16-byte layout."""
    events = random_events(1000)
    packed = np.concatenate([events[:500], events[500:]])
    assert packed.dtype.itemsize != 16
    assert_same(to_numpy(to_event_store(packed)), events)


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(0, 3000),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_property(n, seed):
    rng = np.random.default_rng(seed)
    events = np.zeros(n, dtype=DVS_EVENT_DTYPE)
    events["timestamp"] = np.cumsum(rng.integers(0, 3, n))
    events["x"] = rng.integers(-32768, 32768, n)
    events["y"] = rng.integers(-32768, 32768, n)
    events["polarity"] = rng.integers(0, 2, n)
    assert_same(to_numpy(to_event_store(events)), events)
