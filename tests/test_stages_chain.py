"""Stage configs as frozen values, Chain warm-up and reset, describe(), and the launch schema that the
config fields drive."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.app.launch import LaunchError, build_stages, load_launch
from pipeline.core.events import dvs_events
from pipeline.core.schema import annotation_expectation
from pipeline.stages import (
    STAGES,
    BackgroundActivityFilter,
    Chain,
    HotPixelMask,
    PolaritySelect,
    RefractoryFilter,
    RoiCrop,
    SpatialPooling,
    describe,
)

LAUNCH = Path(__file__).resolve().parent.parent / "launch"

#: One config of every stage type, for an 8 x 8 sensor.
EVERY_STAGE = [
    HotPixelMask(pixels=[[7, 7]], rate_hz=200_000.0, window_us=100),
    BackgroundActivityFilter(duration_us=50),
    RefractoryFilter(refractory_us=3, per_polarity=True),
    RoiCrop(x=1, y=0, w=7, h=8),
    PolaritySelect(keep="on"),
    SpatialPooling(factor=[2, 3]),
]


def random_events(n, width, height, seed):
    rng = np.random.default_rng(seed)
    return dvs_events(1000 + np.cumsum(rng.integers(0, 4, n)), rng.integers(0, width, n),
                      rng.integers(0, height, n), rng.integers(0, 2, n))


def state_copy(chain):
    return [[np.array(array) for array in stage.state] for stage in chain.stages]


def test_every_stage_type_is_in_the_registry_under_its_name():
    assert sorted(STAGES) == sorted(type(config).name for config in EVERY_STAGE)
    assert all(STAGES[type(config).name] is type(config) for config in EVERY_STAGE)


def test_configs_are_frozen_normalised_values():
    config = HotPixelMask(pixels=[[1, 2], [3, 4]], rate_hz=1000, window_us=10_000)
    assert config.pixels == ((1, 2), (3, 4)) and isinstance(config.rate_hz, float)
    assert config == HotPixelMask(pixels=((1, 2), (3, 4)), rate_hz=1000.0, window_us=10_000)
    assert len({config, HotPixelMask(pixels=[[1, 2], [3, 4]], rate_hz=1000.0, window_us=10_000)}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.rate_hz = 5.0
    assert SpatialPooling(factor=4).factor == (4, 4)
    assert dataclasses.replace(SpatialPooling(factor=[2, 4]), factor=3).factor == (3, 3)
    assert dataclasses.replace(RefractoryFilter(1000), per_polarity=True) == RefractoryFilter(1000, True)
    with pytest.raises(ValueError, match="refractory: parameter 'refractory_us' = 0 is out of range"):
        dataclasses.replace(RefractoryFilter(1000), refractory_us=0)
    with pytest.raises(ValueError, match="refractory: parameter 'per_polarity' must be true or false"):
        RefractoryFilter(1000, per_polarity=1)


def test_warmup_compiles_every_kernel_and_changes_no_state():
    events = random_events(3000, 8, 8, seed=1)
    first, second = events[:1500], events[1500:]
    reference = Chain(EVERY_STAGE, 8, 8)
    expected = [reference(first), reference(second)]
    assert 0 < len(expected[1]) < len(second)

    warmed = Chain(EVERY_STAGE, 8, 8)
    before = state_copy(warmed)
    warmed.warmup()  # on a fresh chain: the hot-pixel window origin must still come from the first event
    for old, new in zip(before, state_copy(warmed)):
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, b)
    got = [warmed(first)]
    before = state_copy(warmed)
    warmed.warmup()  # mid-stream
    for old, new in zip(before, state_copy(warmed)):
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, b)
    got.append(warmed(second))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_reset_restores_the_state_of_a_new_chain():
    events = random_events(2000, 8, 8, seed=2)
    chain = Chain(EVERY_STAGE, 8, 8)
    fresh = state_copy(chain)
    once = chain(events)
    assert any(not np.array_equal(a, b) for old, new in zip(fresh, state_copy(chain)) for a, b in zip(old, new))
    chain.reset()
    for old, new in zip(fresh, state_copy(chain)):
        for a, b in zip(old, new):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(chain(events), once)


def test_output_resolution_follows_the_stages():
    chain = Chain(EVERY_STAGE, 8, 8)
    assert chain.output_resolution == (4, 3)  # roi 7 x 8, then ceil(7 / 2) x ceil(8 / 3)
    assert [stage.output_resolution for stage in chain.stages][-3:] == [(7, 8), (7, 8), (4, 3)]
    out = chain(random_events(2000, 8, 8, seed=3))
    assert out["x"].max() < 4 and out["y"].max() < 3


def test_empty_chain_is_the_identity():
    events = random_events(50, 5, 4, seed=4)
    chain = Chain([], 5, 4)
    chain.warmup()
    assert chain.output_resolution == (5, 4) and len(chain) == 0
    np.testing.assert_array_equal(chain(events), events)


def test_describe_lists_every_config_field_with_help_and_unit():
    info = describe()
    assert sorted(info) == sorted(STAGES)
    for name, stage in info.items():
        assert stage.name == name and stage.config is STAGES[name] and stage.summary
        fields = dataclasses.fields(stage.config)
        assert [p.name for p in stage.params] == [f.name for f in fields]
        for p, f in zip(stage.params, fields):
            assert p.help and p.expectation == annotation_expectation(str(f.type))
            assert p.required == (f.default is dataclasses.MISSING)
            assert p.required or p.default == f.default
            suffix = {"_us": "µs", "_hz": "Hz"}.get(p.name[-3:])
            assert suffix is None or p.unit == suffix, (name, p)
    assert [p.name for p in info["roi"].params if p.required] == ["x", "y", "w", "h"]
    # Every default makes a valid config (pooling needs one of its two, roi its rectangle).
    needs = {"pooling": {"factor": 2}, "roi": {"x": 0, "y": 0, "w": 1, "h": 1}}
    for name, stage in info.items():
        defaults = {p.name: p.default for p in stage.params if not p.required}
        stage.config(**{**defaults, **needs.get(name, {})})


# ---------------------------------------------------------------- launch files

@pytest.fixture
def replay_toml(data_dir, tmp_path, monkeypatch):
    """launch/replay.toml on the DVXplorer recording (320 x 240), logging commands; returns a writer."""
    monkeypatch.chdir(tmp_path)
    text = (LAUNCH / "replay.toml").read_text()
    text = text.replace('"../recordings/samples/moving_bars.aedat4"',
                        json.dumps(str(data_dir / "events" / "dvxplorer_tonic.aedat4")))
    head = text[:text.index("[sinks.motors]")] + '[sinks.log]\ntype = "command_log"\npath = "commands.csv"\n'

    def write(old="", new=""):
        path = tmp_path / "stages.toml"
        path.write_text(head.replace(old, new, 1) if old else head)
        return path
    return write


def test_launch_stage_tables_become_configs_in_file_order(replay_toml):
    spec = load_launch(replay_toml())
    assert [(label, kind) for label, kind, _ in spec.stages] == [
        ("noise_filter", "noise_filter"), ("refractory", "refractory"), ("pooling", "pooling")]
    assert [config for _, _, config in spec.stages] == [
        BackgroundActivityFilter(2000), RefractoryFilter(1000), SpatialPooling(target=(16, 12))]
    chain = build_stages(spec, 320, 240)
    assert isinstance(chain, Chain) and chain.output_resolution == (16, 12)


def test_launch_rejects_bad_stage_values_before_anything_opens(replay_toml):
    crop = '[stages.crop]\ntype = "roi"\nx = 10\ny = 0\nw = 100\n\n[stages.pooling]'
    cases = [
        (("duration_us = 2000", "duration_us = 0"),
         "[stages.noise_filter] duration_us: 0 is out of range (expected 1 <= duration_us <= 1000000000000)"),
        (("duration_us = 2000", "duration_us = 2000.0"), "[stages.noise_filter] duration_us: must be an integer"),
        (("refractory_us = 1000", "refractory_ms = 1"),
         "[stages.refractory] refractory_ms: unknown key (expected one of: per_polarity, refractory_us)"),
        (("[stages.pooling]", crop), "[stages.crop] h: missing (expected an integer: rectangle height"),
        (("target = [16, 12]", "target = [16, 12]\nfactor = 4"), "[stages.pooling]: pooling: give exactly one of"),
        (("target = [16, 12]", "target = [16]"), "[stages.pooling] target: must be [width, height], got [16]"),
    ]
    for (old, new), expected in cases:
        path = replay_toml(old, new)
        with pytest.raises(LaunchError) as info:
            load_launch(path)
        assert str(info.value).startswith(f"{path}: {expected}"), str(info.value)


def test_launch_names_the_stage_that_does_not_fit_the_sensor(replay_toml):
    crop = '[stages.crop]\ntype = "roi"\nx = 10\ny = 0\nw = 400\nh = 100\n\n[stages.pooling]'
    path = replay_toml("[stages.pooling]", crop)
    spec = load_launch(path)  # the sensor size is not known before the source opens
    with pytest.raises(LaunchError) as info:
        build_stages(spec, 320, 240)
    assert str(info.value) == f"{path}: [stages.crop] w: 400 is out of range (expected 1 <= w <= 310)"
    assert build_stages(spec, 640, 480).output_resolution == (16, 12)
