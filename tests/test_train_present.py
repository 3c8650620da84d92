"""Presenting recordings to a network: against tonic's ToFrame computed independently from the raw bytes,
and labelled folders (N-MNIST labels file, FSDD names)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.snn.model import InputSpec
from pipeline.train.present import present_file
from recordings.labelled import LabelsError, open_labelled


def tonic_frames(path, bin_us=1000):
    """ToFrame(time_window) straight from the N-MNIST 40-bit records: (T, 2, 34, 34), full bins only."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    x, y, p = raw[:, 0], raw[:, 1], (raw[:, 2] & 128) >> 7
    t = ((raw[:, 2] & 127) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    n = (t[-1] - t[0]) // bin_us
    b = (t - t[0]) // bin_us
    keep = b < n
    frames = np.zeros((n, 2, 34, 34), np.int64)
    np.add.at(frames, (b[keep], p[keep], y[keep], x[keep]), 1)
    return frames


@pytest.mark.parametrize("encoding", ["counts", "spikes"])
def test_nmnist_presentation_is_tonic_to_frame(data_dir, encoding):
    path = data_dir / "nmnist_small" / "test" / "60001.bs2"
    presented = present_file(path, InputSpec(encoding=encoding, tail_steps=3), (2, 34, 34), 2 * 34 * 34)
    frames = tonic_frames(path).reshape(-1, 2 * 34 * 34)
    expected = frames if encoding == "counts" else np.minimum(frames, 1)
    dense = presented.dense(2 * 34 * 34)
    assert dense.shape[0] == frames.shape[0] + 3
    np.testing.assert_array_equal(dense[:-3], expected)
    assert not dense[-3:].any()


def test_fixed_duration_and_pooling(data_dir):
    path = data_dir / "nmnist_small" / "test" / "60001.bs2"
    presented = present_file(path, InputSpec(duration_us=100_000, scale=2, polarity="merge"), (1, 17, 17), 289)
    assert presented.n_steps == 100
    frames = tonic_frames(path)[:100].sum(axis=1)  # merge polarity
    pooled = frames.reshape(100, 17, 2, 17, 2).sum(axis=(2, 4)).reshape(100, -1)
    np.testing.assert_array_equal(presented.dense(289), np.minimum(pooled, 1))


def test_frame_encoding_repeats_the_window_count_in_every_step(data_dir):
    """"frame": the events of the first 300 ms counted once (from the raw records), in each of 25 steps."""
    path = data_dir / "nmnist_small" / "test" / "60001.bs2"
    spec = InputSpec(encoding="frame", bin_us=12_000, duration_us=300_000, tail_steps=2)
    presented = present_file(path, spec, (2, 34, 34), 2 * 34 * 34)
    window = tonic_frames(path, bin_us=300_000)[0].reshape(-1)
    dense = presented.dense(2 * 34 * 34)
    assert dense.shape[0] == 25 + 2 and spec.start_us == 300_000 and spec.graded
    np.testing.assert_array_equal(dense[:25], np.broadcast_to(window, (25, window.size)))
    assert not dense[25:].any()
    with pytest.raises(ValueError, match="duration_us"):
        InputSpec(encoding="frame", bin_us=1000, duration_us=0)


def test_labelled_folders(data_dir, tmp_path):
    nmnist = data_dir / "nmnist_small"
    test = open_labelled(nmnist / "test", nmnist / "test_labels.txt")
    assert len(test) == 100 and test.classes == tuple(str(d) for d in range(10))
    assert test.paths[0].name == "60001.bs2"
    with pytest.raises(LabelsError, match="no label for 100"):
        open_labelled(nmnist / "test", nmnist / "train_labels.txt")
    fsdd = open_labelled(data_dir / "audio" / "fsdd")
    assert len(fsdd) == 2500 and set(fsdd.speakers()) == {"george", "jackson", "lucas", "nicolas", "yweweler"}
    bad = tmp_path / "labels.txt"
    bad.write_text("#sample #class\n60001 3 extra\n")
    with pytest.raises(LabelsError, match="labels.txt:2"):
        open_labelled(nmnist / "test", bad)


def test_a_wav_through_the_cochlea(data_dir):
    path = data_dir / "audio" / "fsdd" / "0_george_0.wav"
    presented = present_file(path, InputSpec(sensor="cochlea", channels=64, bin_us=1000), None, 64)
    assert 200 <= presented.n_steps <= 2000 and presented.index.max() < 64 and len(presented.index) > 100


def reference_augment(p, rng, shape, aug, binary):
    """The augmentation written with numpy set operations (independent of present.transform's loops)."""
    c, h, w = shape
    steps = np.repeat(np.arange(p.n_steps), np.diff(p.indptr))
    index, count = p.index.astype(np.int64), p.count.astype(np.int64)
    keep = rng.random(index.size) >= aug["drop"] if aug["drop"] > 0 else np.ones(index.size, bool)
    dx = dy = 0
    if aug["jitter_px"] > 0:
        dx, dy = rng.integers(-aug["jitter_px"], aug["jitter_px"] + 1, 2)
    if aug["channel_shift"] > 0:
        dx += rng.integers(-aug["channel_shift"], aug["channel_shift"] + 1)
    if dx or dy:
        x, y = index % w + dx, (index // w) % h + dy
        keep &= (x >= 0) & (x < w) & (y >= 0) & (y < h)
        index = (index // (w * h) * h + y) * w + x
    if aug["time_scale"] > 0:
        steps = np.floor(steps * rng.uniform(1 - aug["time_scale"], 1 + aug["time_scale"])).astype(np.int64)
        keep &= steps < p.n_steps
    key = steps[keep] * (c * h * w) + index[keep]
    unique, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, weights=count[keep], minlength=unique.size).astype(np.int32)
    indptr = np.zeros(p.n_steps + 1, np.int64)
    np.cumsum(np.bincount(unique // (c * h * w), minlength=p.n_steps), out=indptr[1:])
    return indptr, unique % (c * h * w), np.ones_like(total) if binary else total


@pytest.mark.parametrize("binary", [True, False], ids=["spikes", "counts"])
def test_augmentation_moves_drops_and_stretches_events(data_dir, binary):
    from pipeline.train.bptt import augment
    from pipeline.train.present import Presentation

    spec = InputSpec(bin_us=1000, duration_us=300_000, tail_steps=2, encoding="spikes" if binary else "counts")
    labelled = open_labelled(data_dir / "nmnist_small" / "train", data_dir / "nmnist_small" / "train_labels.txt")
    shape = (2, 34, 34)
    for path in labelled.paths[:4]:
        p = present_file(path, spec, shape, 2312)
        if not binary:   # counts up to 3 so that merged events add
            p = Presentation(p.indptr, p.index, (p.index % 3 + 1).astype(np.int32))
        for aug in ({"jitter_px": 2, "channel_shift": 0, "drop": 0.2, "time_scale": 0.2},
                    {"jitter_px": 0, "channel_shift": 0, "drop": 0.0, "time_scale": 0.6},
                    {"jitter_px": 5, "channel_shift": 0, "drop": 0.5, "time_scale": 0.0},
                    {"jitter_px": 1, "channel_shift": 3, "drop": 0.1, "time_scale": 0.1}):
            ours = augment(p, np.random.default_rng(7), shape, aug, binary)
            ref = reference_augment(p, np.random.default_rng(7), shape, aug, binary)
            assert ours.n_steps == p.n_steps and ours.index.size > 0
            for a, b in zip(ours, ref):
                np.testing.assert_array_equal(a, b)
