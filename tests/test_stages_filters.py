"""Refractory, ROI, polarity, hot-pixel and pooling stages against independent references and
dv-processing, and the Chain against the stages run one after another."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.events import DVS_EVENT_DTYPE, dvs_events
from pipeline.stages import (
    STAGES,
    BackgroundActivityFilter,
    Chain,
    ChainError,
    HotPixelMask,
    PolaritySelect,
    RefractoryFilter,
    RoiCrop,
    SpatialPooling,
    masked_pixels,
)
from pipeline.stages.refractory import RefractoryParams, RefractoryState, refractory

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
    stage = RefractoryFilter(refractory_us=period, per_polarity=per_polarity).build(6, 5)
    got = run_split(stage, events, np.random.default_rng(seed))
    np.testing.assert_array_equal(got, refractory_reference(events, period, per_polarity))


def test_refractory_hand_checked_boundary():
    events = dvs_events([0, 999, 1000, 1500, 2000, 2001], [1, 1, 1, 2, 1, 1], [1] * 6, [1, 0, 1, 1, 1, 0])
    kept = RefractoryFilter(refractory_us=1000).build(4, 4)(events)
    np.testing.assert_array_equal(kept["timestamp"], [0, 1000, 1500, 2000])
    kept = RefractoryFilter(refractory_us=1000, per_polarity=True).build(4, 4)(events)
    np.testing.assert_array_equal(kept["timestamp"], [0, 999, 1000, 1500, 2000, 2001])


def test_refractory_on_real_recording_keeps_no_close_pairs(davis):
    (width, height), stores = davis
    events = concat([s.numpy() for s in stores])
    kept = RefractoryFilter(refractory_us=5000).build(width, height)(events)
    assert 0 < len(kept) < len(events)
    pixel = kept["y"].astype(np.int64) * width + kept["x"]
    order = np.lexsort((kept["timestamp"], pixel))
    same = pixel[order][1:] == pixel[order][:-1]
    assert np.all(np.diff(kept["timestamp"][order])[same] >= 5000)
    np.testing.assert_array_equal(run_split(RefractoryFilter(5000).build(width, height), events,
                                            np.random.default_rng(1)), kept)


@settings(deadline=None, max_examples=20)
@given(small_streams(), st.integers(1, 60), st.booleans())
def test_refractory_kernel_called_with_its_named_tuples(events, period, per_polarity):
    """The kernel's own API (words, state NamedTuple, params NamedTuple, out), no Stage in between."""
    params = RefractoryParams(6, 5, period, per_polarity)
    state = RefractoryState(np.full((2 if per_polarity else 1, 5, 6), -(2**62), dtype=np.int64))
    words = events.view(np.int64).reshape(-1, 2)
    out = np.empty_like(words)
    kept = refractory(words, state, params, out)
    np.testing.assert_array_equal(out[:kept].reshape(-1).view(DVS_EVENT_DTYPE),
                                  refractory_reference(events, period, per_polarity))


# ---------------------------------------------------------------- ROI and polarity vs dv-processing

@pytest.mark.parametrize("roi", [(0, 0, 346, 260), (100, 50, 120, 80), (345, 259, 1, 1), (0, 200, 346, 60)])
def test_roi_matches_dv_region_filter(davis, roi):
    (width, height), stores = davis
    x, y, w, h = roi
    reference = dv.EventRegionFilter(roi)
    ours = RoiCrop(x=x, y=y, w=w, h=h).build(width, height)
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
    ours = PolaritySelect(keep=keep).build(width, height)
    expected, got = [], []
    for store in stores:
        reference.accept(store)
        expected.append(reference.generateEvents().numpy())
        got.append(ours(store.numpy()))
    np.testing.assert_array_equal(concat(got), concat(expected))
    assert 0 < len(concat(got)) < sum(len(s) for s in stores)


def test_roi_and_polarity_reject_bad_parameters():
    with pytest.raises(ValueError, match=r"roi: parameter 'w' = 10 is out of range \(expected 1 <= w <= 8\)"):
        RoiCrop(x=2, y=0, w=10, h=1).build(10, 10)
    with pytest.raises(ValueError, match="roi: parameter 'x' = 10 is out of range"):
        RoiCrop(x=10, y=0, w=1, h=1).build(10, 10)
    with pytest.raises(ValueError, match="roi: parameter 'x' = -1"):
        RoiCrop(x=-1, y=0, w=1, h=1)
    with pytest.raises(ValueError, match="polarity: parameter 'keep'"):
        PolaritySelect(keep="both")
    assert PolaritySelect(keep="OFF") == PolaritySelect(keep=0) == PolaritySelect("off")
    assert len(RoiCrop(0, 0, 2, 2).build(10, 10)(dvs_events([1], [-5], [30], [1]))) == 0


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
       st.sampled_from([(0.0, 100), (2000.0, 1000), (3000.0, 1000), (500.0, 20_000)]),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=2, unique=True))
def test_hot_pixels_match_reference_in_any_packet_split(events, seed, auto, explicit):
    rate_hz, window_us = auto
    stage = HotPixelMask(pixels=[list(p) for p in explicit], rate_hz=rate_hz, window_us=window_us).build(3, 3)
    expected, masked = hot_reference(events, explicit, rate_hz, window_us)
    np.testing.assert_array_equal(run_split(stage, events, np.random.default_rng(seed)), expected)
    assert {tuple(p) for p in masked_pixels(stage.state).tolist()} == masked


def test_hot_pixel_detected_in_real_recording_with_injected_pixel(davis):
    (width, height), stores = davis
    events = concat([s.numpy() for s in stores])
    t = events["timestamp"]
    hot = dvs_events(np.arange(t[0], t[-1], 50), 17, 23, 1)  # a 20 kHz stuck pixel
    mixed = np.sort(concat([events, hot]), order="timestamp", kind="stable")
    stage = HotPixelMask(rate_hz=2000.0, window_us=20_000).build(width, height)
    out = run_split(stage, mixed, np.random.default_rng(3))
    assert [17, 23] in masked_pixels(stage.state).tolist()
    assert np.count_nonzero((out["x"] == 17) & (out["y"] == 23)) <= 40
    assert len(masked_pixels(stage.state)) <= 5
    assert len(out) >= 0.97 * len(events)


def test_hot_pixel_parameters():
    with pytest.raises(ValueError, match=r"hot_pixels: parameter 'pixels\[1\]\[0\]' = 4 is out of range"):
        HotPixelMask(pixels=[[0, 0], [4, 0]]).build(4, 4)
    with pytest.raises(ValueError, match="hot_pixels: parameter 'pixels' must be a list of"):
        HotPixelMask(pixels=[1, 2, 3])
    with pytest.raises(ValueError, match="hot_pixels: parameter 'rate_hz' = 10 gives 0.01 events per 1000 µs window"):
        HotPixelMask(rate_hz=10.0, window_us=1000)
    stage = HotPixelMask(pixels=[[1, 2]]).build(4, 4)
    assert len(stage(dvs_events([1, 2], [1, 2], [2, 1], [1, 1]))) == 1
    assert masked_pixels(stage.state).tolist() == [[1, 2]]


# ---------------------------------------------------------------- pooling

def test_pooling_factor_and_target_hand_checked():
    events = dvs_events([1, 2, 3, 4], [0, 5, 9, 345], [0, 3, 7, 259], [1, 0, 1, 0])
    factor = SpatialPooling(factor=4).build(346, 260)
    out = factor(events)
    np.testing.assert_array_equal(out["x"], [0, 1, 2, 86])
    np.testing.assert_array_equal(out["y"], [0, 0, 1, 64])
    np.testing.assert_array_equal(out["polarity"], events["polarity"])
    np.testing.assert_array_equal(out["timestamp"], events["timestamp"])
    assert factor.output_resolution == (87, 65)
    target = SpatialPooling(target=[32, 24]).build(346, 260)
    out = target(events)
    np.testing.assert_array_equal(out["x"], [0, 5 * 32 // 346, 9 * 32 // 346, 31])
    np.testing.assert_array_equal(out["y"], [0, 0, 0, 23])
    assert target.output_resolution == (32, 24)
    assert SpatialPooling(factor=[2, 4]).build(346, 260).output_resolution == (173, 65)


def test_pooling_real_recording_fills_target_grid(davis):
    (width, height), stores = davis
    events = concat([s.numpy() for s in stores])
    out = SpatialPooling(target=[34, 26]).build(width, height)(events)
    assert len(out) == len(events)
    assert out["x"].max() == 33 and out["y"].max() == 25 and out["x"].min() >= 0
    np.testing.assert_array_equal(out["x"], events["x"].astype(np.int64) * 34 // width)


def test_pooling_parameters_and_range():
    with pytest.raises(ValueError, match="exactly one"):
        SpatialPooling()
    with pytest.raises(ValueError, match="exactly one"):
        SpatialPooling(factor=2, target=[5, 5])
    with pytest.raises(ValueError, match=r"pooling: parameter 'target\[0\]' = 11"):
        SpatialPooling(target=[11, 5]).build(10, 10)
    with pytest.raises(ValueError, match=r"pooling: parameter 'factor\[1\]' = 0"):
        SpatialPooling(factor=[2, 0])
    with pytest.raises(ValueError, match=r"pooling: parameter 'target' must be \[width, height\], got 8"):
        SpatialPooling(target=8)
    with pytest.raises(ValueError, match=r"pooling: event 0 at \(x=10, y=0"):
        SpatialPooling(factor=2).build(10, 10)(dvs_events([0], [10], [0], [1]))


# ---------------------------------------------------------------- chain

def test_chain_equals_stages_in_sequence_and_is_chunking_invariant(davis):
    (width, height), stores = davis
    events = concat([s.numpy() for s in stores])
    configs = [
        HotPixelMask(rate_hz=5000.0, window_us=10_000),
        BackgroundActivityFilter(duration_us=2000),
        RoiCrop(x=20, y=10, w=300, h=240),
        PolaritySelect(keep="on"),
        SpatialPooling(target=[30, 24]),
        RefractoryFilter(refractory_us=2000),
    ]
    chain = Chain(configs, width, height)
    assert chain.output_resolution == (30, 24) and len(chain) == 6
    whole = chain(events)
    manual = events
    for config, (w, h) in zip(configs, [(width, height)] * 3 + [(300, 240)] * 2 + [(30, 24)]):
        manual = config.build(w, h)(manual)
    np.testing.assert_array_equal(whole, manual)
    assert 0 < len(whole) < len(events)
    chain.reset()
    np.testing.assert_array_equal(run_split(chain, events, np.random.default_rng(5)), whole)


def test_chain_errors_name_the_position_and_parameter():
    with pytest.raises(ChainError, match=r"stages\[2\]: roi: parameter 'w' = 6 is out of range "
                                         r"\(expected 1 <= w <= 5\)") as info:
        Chain([PolaritySelect(), SpatialPooling(factor=2), RoiCrop(0, 0, 6, 5)], 10, 10)
    assert info.value.position == 2 and isinstance(info.value, ValueError)
    with pytest.raises(TypeError, match=r"chain: stages\[1\] must be a stage config"):
        Chain([PolaritySelect(), {"type": "refractory"}], 10, 10)
    with pytest.raises(ValueError, match="chain: parameter 'width' = 0"):
        Chain([], 0, 10)


def test_every_stage_handles_empty_and_packed_input():
    events = dvs_events([5, 6, 7], [1, 2, 3], [1, 1, 1], [1, 0, 1])
    packed = np.concatenate([events[:1], events[1:]])  # numpy 2: 13-byte dtype without padding
    assert packed.dtype.itemsize == 13 or packed.dtype == DVS_EVENT_DTYPE
    for name, cls in STAGES.items():
        params = {"pooling": {"factor": 2}, "roi": {"x": 0, "y": 0, "w": 4, "h": 4}}.get(name, {})
        stage = cls(**params).build(8, 8)
        empty = stage(np.zeros(0, DVS_EVENT_DTYPE))
        assert empty.dtype == DVS_EVENT_DTYPE and len(empty) == 0
        stage.reset()
        out_packed = stage(packed)
        stage.reset()
        np.testing.assert_array_equal(out_packed, stage(events))
        assert out_packed.dtype == DVS_EVENT_DTYPE
