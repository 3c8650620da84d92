"""Refractory, ROI, polarity, hot-pixel and pooling stages, the Chain and the launch-file registry."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.events import DVS_EVENT_DTYPE, dvs_events
from pipeline.stages import (
    STAGES,
    Chain,
    HotPixelMask,
    PolaritySelect,
    RefractoryFilter,
    RoiCrop,
    SpatialPooling,
    build_chain,
)

dv = pytest.importorskip("dv_processing")


def concat(arrays):
    """np.concatenate keeping DVS_EVENT_DTYPE (numpy 2 drops the 3 padding bytes otherwise)."""
    return np.concatenate(arrays, dtype=DVS_EVENT_DTYPE)


def read_aedat4(path):
    recording = dv.io.MonoCameraRecording(str(path))
    resolution = recording.getEventResolution()
    stores = []
    while (store := recording.getNextEventBatch()) is not None:
        stores.append(store)
    return resolution, stores


@pytest.fixture(scope="module")
def davis(data_dir):
    return read_aedat4(data_dir / "events" / "davis346_aestream.aedat4")


def split(events, rng, max_parts=20):
    return np.split(events, np.sort(rng.integers(0, len(events) + 1, rng.integers(0, max_parts))))


def run_split(stage, events, rng):
    return concat([events[:0]] + [stage(part) for part in split(events, rng)])


def small_streams(max_events=120, width=6, height=5):
    @st.composite
    def build(draw):
        n = draw(st.integers(0, max_events))
        steps = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
        xs = draw(st.lists(st.integers(0, width - 1), min_size=n, max_size=n))
        ys = draw(st.lists(st.integers(0, height - 1), min_size=n, max_size=n))
        ps = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
        return dvs_events(1000 + np.cumsum(steps, dtype=np.int64), xs, ys, ps)
    return build()


# ---------------------------------------------------------------- refractory

def refractory_reference(events, period, per_polarity):
    last = {}
    keep = []
    for e in events:
        key = (int(e["x"]), int(e["y"]), int(e["polarity"]) if per_polarity else 0)
        if key not in last or int(e["timestamp"]) - last[key] >= period:
            last[key] = int(e["timestamp"])
            keep.append(True)
        else:
            keep.append(False)
    return events[np.array(keep, dtype=bool)]


@settings(deadline=None, max_examples=40)
@given(small_streams(), st.integers(1, 60), st.booleans(), st.integers(0, 2**31))
def test_refractory_matches_reference_in_any_packet_split(events, period, per_polarity, seed):
    stage = RefractoryFilter(6, 5, refractory_us=period, per_polarity=per_polarity)
    got = run_split(stage, events, np.random.default_rng(seed))
    np.testing.assert_array_equal(got, refractory_reference(events, period, per_polarity))


def test_refractory_hand_checked_boundary():
    events = dvs_events([0, 999, 1000, 1500, 2000, 2001], [1, 1, 1, 2, 1, 1], [1] * 6, [1, 0, 1, 1, 1, 0])
    kept = RefractoryFilter(4, 4, refractory_us=1000)(events)
    np.testing.assert_array_equal(kept["timestamp"], [0, 1000, 1500, 2000])
    kept = RefractoryFilter(4, 4, refractory_us=1000, per_polarity=True)(events)
    np.testing.assert_array_equal(kept["timestamp"], [0, 999, 1000, 1500, 2000, 2001])


def test_refractory_on_real_recording_keeps_no_close_pairs(davis):
    (width, height), stores = davis
    events = concat([s.numpy() for s in stores])
    kept = RefractoryFilter(width, height, refractory_us=5000)(events)
    assert 0 < len(kept) < len(events)
    pixel = kept["y"].astype(np.int64) * width + kept["x"]
    order = np.lexsort((kept["timestamp"], pixel))
    same = pixel[order][1:] == pixel[order][:-1]
    assert np.all(np.diff(kept["timestamp"][order])[same] >= 5000)
    np.testing.assert_array_equal(run_split(RefractoryFilter(width, height, 5000), events,
                                            np.random.default_rng(1)), kept)


# ---------------------------------------------------------------- ROI and polarity vs dv-processing

@pytest.mark.parametrize("roi", [(0, 0, 346, 260), (100, 50, 120, 80), (345, 259, 1, 1), (0, 200, 346, 60)])
def test_roi_matches_dv_region_filter(davis, roi):
    (width, height), stores = davis
    x, y, w, h = roi
    reference = dv.EventRegionFilter(roi)
    ours = RoiCrop(width, height, x=x, y=y, w=w, h=h)
    expected, got = [], []
    for store in stores:
        reference.accept(store)
        expected.append(reference.generateEvents().numpy())
        got.append(ours(store.numpy()))
    expected, got = concat(expected), concat(got)
    expected["x"] -= x
    expected["y"] -= y
    np.testing.assert_array_equal(got, expected)
    assert ours.output_resolution == (w, h)
    if len(got):
        assert got["x"].max() < w and got["y"].max() < h


@pytest.mark.parametrize("keep", ["on", "off"])
def test_polarity_matches_dv_polarity_filter(davis, keep):
    (width, height), stores = davis
    reference = dv.EventPolarityFilter(keep == "on")
    ours = PolaritySelect(width, height, keep=keep)
    expected, got = [], []
    for store in stores:
        reference.accept(store)
        expected.append(reference.generateEvents().numpy())
        got.append(ours(store.numpy()))
    np.testing.assert_array_equal(concat(got), concat(expected))
    assert 0 < len(concat(got)) < sum(len(s) for s in stores)


def test_roi_and_polarity_reject_bad_parameters():
    with pytest.raises(ValueError, match=r"'w' = 10 is out of range \(expected 1 <= w <= 8\)"):
        RoiCrop(10, 10, x=2, y=0, w=10, h=1)
    with pytest.raises(ValueError, match="'x'"):
        RoiCrop(10, 10, x=-1, y=0, w=1, h=1)
    with pytest.raises(ValueError, match="'keep'"):
        PolaritySelect(10, 10, keep="both")
    assert len(RoiCrop(10, 10, 0, 0, 2, 2)(dvs_events([1], [-5], [30], [1]))) == 0


# ---------------------------------------------------------------- hot pixels

def hot_reference(events, explicit, rate_hz, window_us):
    limit = int(np.floor(rate_hz * window_us / 1e6)) if rate_hz else None
    masked = {tuple(p) for p in explicit}
    counts = {}
    origin = None
    keep = []
    for e in events:
        pixel = (int(e["x"]), int(e["y"]))
        if pixel in masked:
            keep.append(False)
            continue
        if limit is not None:
            origin = int(e["timestamp"]) if origin is None else origin
            window = (int(e["timestamp"]) - origin) // window_us
            seen_window, count = counts.get(pixel, (window, 0))
            count = count + 1 if seen_window == window else 1
            counts[pixel] = (window, count)
            if count > limit:
                masked.add(pixel)
                keep.append(False)
                continue
        keep.append(True)
    return events[np.array(keep, dtype=bool)], masked


@settings(deadline=None, max_examples=40)
@given(small_streams(max_events=150, width=3, height=3), st.integers(0, 2**31),
       st.sampled_from([(None, 100), (2000.0, 1000), (3000.0, 1000), (500.0, 20_000)]),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=2, unique=True))
def test_hot_pixels_match_reference_in_any_packet_split(events, seed, auto, explicit):
    rate_hz, window_us = auto
    stage = HotPixelMask(3, 3, pixels=[list(p) for p in explicit], rate_hz=rate_hz, window_us=window_us)
    expected, masked = hot_reference(events, explicit, rate_hz, window_us)
    np.testing.assert_array_equal(run_split(stage, events, np.random.default_rng(seed)), expected)
    assert {tuple(p) for p in stage.hot_pixels.tolist()} == masked


def test_hot_pixel_detected_in_real_recording_with_injected_pixel(davis):
    (width, height), stores = davis
    events = concat([s.numpy() for s in stores])
    t = events["timestamp"]
    hot = dvs_events(np.arange(t[0], t[-1], 50), 17, 23, 1)  # a 20 kHz stuck pixel
    mixed = np.sort(concat([events, hot]), order="timestamp", kind="stable")
    stage = HotPixelMask(width, height, rate_hz=2000.0, window_us=20_000)
    out = run_split(stage, mixed, np.random.default_rng(3))
    assert [17, 23] in stage.hot_pixels.tolist()
    assert np.count_nonzero((out["x"] == 17) & (out["y"] == 23)) <= 40
    assert len(stage.hot_pixels) <= 5
    assert len(out) >= 0.97 * len(events)


def test_hot_pixel_parameters():
    with pytest.raises(ValueError, match=r"pixels\[1\]\[0\] \(x\)"):
        HotPixelMask(4, 4, pixels=[[0, 0], [4, 0]])
    with pytest.raises(ValueError, match="'pixels'"):
        HotPixelMask(4, 4, pixels=[1, 2, 3])
    with pytest.raises(ValueError, match="needs >= 1"):
        HotPixelMask(4, 4, rate_hz=10.0, window_us=1000)
    stage = HotPixelMask(4, 4, pixels=[[1, 2]])
    assert len(stage(dvs_events([1, 2], [1, 2], [2, 1], [1, 1]))) == 1


# ---------------------------------------------------------------- pooling

def test_pooling_factor_and_target_hand_checked():
    events = dvs_events([1, 2, 3, 4], [0, 5, 9, 345], [0, 3, 7, 259], [1, 0, 1, 0])
    factor = SpatialPooling(346, 260, factor=4)
    out = factor(events)
    np.testing.assert_array_equal(out["x"], [0, 1, 2, 86])
    np.testing.assert_array_equal(out["y"], [0, 0, 1, 64])
    np.testing.assert_array_equal(out["polarity"], events["polarity"])
    np.testing.assert_array_equal(out["timestamp"], events["timestamp"])
    assert factor.output_resolution == (87, 65)
    target = SpatialPooling(346, 260, target=[32, 24])
    out = target(events)
    np.testing.assert_array_equal(out["x"], [0, 5 * 32 // 346, 9 * 32 // 346, 31])
    np.testing.assert_array_equal(out["y"], [0, 0, 0, 23])
    assert target.output_resolution == (32, 24)
    assert SpatialPooling(346, 260, factor=[2, 4]).output_resolution == (173, 65)


def test_pooling_real_recording_fills_target_grid(davis):
    (width, height), stores = davis
    events = concat([s.numpy() for s in stores])
    out = SpatialPooling(width, height, target=[34, 26])(events)
    assert len(out) == len(events)
    assert out["x"].max() == 33 and out["y"].max() == 25 and out["x"].min() >= 0
    np.testing.assert_array_equal(out["x"], events["x"].astype(np.int64) * 34 // width)


def test_pooling_parameters_and_range():
    with pytest.raises(ValueError, match="exactly one"):
        SpatialPooling(10, 10)
    with pytest.raises(ValueError, match="exactly one"):
        SpatialPooling(10, 10, factor=2, target=[5, 5])
    with pytest.raises(ValueError, match=r"'target\[0\]' = 11"):
        SpatialPooling(10, 10, target=[11, 5])
    with pytest.raises(ValueError, match=r"event 0 at \(x=10, y=0"):
        SpatialPooling(10, 10, factor=2)(dvs_events([0], [10], [0], [1]))


# ---------------------------------------------------------------- chain and registry

def test_chain_equals_stages_in_sequence_and_is_chunking_invariant(davis):
    (width, height), stores = davis
    events = concat([s.numpy() for s in stores])
    specs = [
        {"type": "hot_pixels", "rate_hz": 5000.0, "window_us": 10_000},
        {"type": "noise_filter", "duration_us": 2000},
        {"type": "roi", "x": 20, "y": 10, "w": 300, "h": 240},
        {"type": "polarity", "keep": "on"},
        {"type": "pooling", "target": [30, 24]},
        {"type": "refractory", "refractory_us": 2000},
    ]
    chain = build_chain(specs, width, height)
    assert chain.output_resolution == (30, 24)
    whole = chain(events)
    manual = events
    for stage in (STAGES["hot_pixels"](width, height, rate_hz=5000.0, window_us=10_000),
                  STAGES["noise_filter"](width, height, duration_us=2000),
                  RoiCrop(width, height, 20, 10, 300, 240), PolaritySelect(300, 240, "on"),
                  SpatialPooling(300, 240, target=[30, 24]), RefractoryFilter(30, 24, 2000)):
        manual = stage(manual)
    np.testing.assert_array_equal(whole, manual)
    assert 0 < len(whole) < len(events)
    chain.reset()
    np.testing.assert_array_equal(run_split(chain, events, np.random.default_rng(5)), whole)


def test_build_chain_errors_name_the_stage_and_parameter():
    with pytest.raises(ValueError, match=r"stages\[1\]: unknown stage type 'blur'"):
        build_chain([{"type": "polarity"}, {"type": "blur"}], 10, 10)
    with pytest.raises(ValueError, match=r"stages\[0\] \(refractory\): unknown parameter\(s\) refractory_ms"):
        build_chain([{"type": "refractory", "refractory_ms": 1}], 10, 10)
    with pytest.raises(ValueError, match=r"stages\[1\]: refractory: parameter 'refractory_us' must be an integer"):
        build_chain([{"type": "polarity"}, {"type": "refractory", "refractory_us": "1 ms"}], 10, 10)
    with pytest.raises(ValueError, match=r"stages\[0\]: expected a table with a 'type' key"):
        build_chain([{"duration_us": 5}], 10, 10)
    with pytest.raises(ValueError, match="expects 10x10 input but roi emits 5x5"):
        Chain([RoiCrop(10, 10, 0, 0, 5, 5), RefractoryFilter(10, 10)])


def test_every_stage_handles_empty_and_packed_input():
    events = dvs_events([5, 6, 7], [1, 2, 3], [1, 1, 1], [1, 0, 1])
    packed = np.concatenate([events[:1], events[1:]])  # numpy 2: 13-byte dtype without padding
    assert packed.dtype.itemsize == 13 or packed.dtype == DVS_EVENT_DTYPE
    for name, cls in STAGES.items():
        params = {"pooling": {"factor": 2}, "roi": {"x": 0, "y": 0, "w": 4, "h": 4}}.get(name, {})
        stage = cls(width=8, height=8, **params)
        empty = stage(np.zeros(0, DVS_EVENT_DTYPE))
        assert empty.dtype == DVS_EVENT_DTYPE and len(empty) == 0
        stage.reset()
        out_packed = stage(packed)
        stage.reset()
        np.testing.assert_array_equal(out_packed, stage(events))
        assert out_packed.dtype == DVS_EVENT_DTYPE
