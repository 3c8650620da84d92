"""A whole recording -> the network's input, step by step, as a model's :class:`InputSpec` says.

Training and evaluation present each labelled recording through :func:`present_file`; the real-time
loop bins the same way (StepBinner / SpikeStepBinner with the spec's ``bin_us``), so a model sees the
same input offline and live.

Steps: for DVS recordings, bins start at the first event and only full bins count (as tonic's
``ToFrame(time_window=bin_us)``, which the NIR paper's CNN was trained with); with ``duration_us`` the
presentation is exactly ``duration_us // bin_us`` steps (later events dropped, missing steps empty).
For WAV files, step 0 starts at the first sample and the last partial step is kept. Then
``tail_steps`` empty steps follow. With the "frame" encoding the events of the ``duration_us`` window are
counted once (one step of ``duration_us`` as above) and that frame is every one of ``duration_us // bin_us``
steps. Input index of a DVS event: ``(c * H + y // scale) * W + x // scale``
with (C, H, W) the network's ``input_shape`` and c = polarity ("split") or 0 ("merge"); of a cochlea
spike: its channel.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import njit

from devices.audio import Cochlea, CochleaConfig, check_audible, rms_gain, voice_level
from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.snn.model import InputSpec
from recordings.base import RecordingError
from recordings.detect import open_recording
from recordings.wav import WavReader

#: A recording with more events than this is not presented whole (bounds memory per sample).
MAX_EVENTS = 50_000_000


class Presentation(NamedTuple):
    """Active inputs per step, CSR: step k's inputs are ``index[indptr[k]:indptr[k+1]]`` (ascending), each
    with ``count`` events in that step (all 1 with the "spikes" encoding).

    indptr: (n_steps + 1,) int64. index: (nnz,) int32. count: (nnz,) int32.
    """

    indptr: np.ndarray
    index: np.ndarray
    count: np.ndarray

    @property
    def n_steps(self) -> int:
        return len(self.indptr) - 1

    def dense(self, n_inputs: int) -> np.ndarray:
        """(n_steps, n_inputs) int32 counts."""
        out = np.zeros((self.n_steps, n_inputs), np.int32)
        rows = np.repeat(np.arange(self.n_steps), np.diff(self.indptr))
        out[rows, self.index] = self.count
        return out


@njit(cache=True)
def _csr(step, inputs, n_steps, n_inputs, binary):
    """Sorted (step, input) pairs -> CSR with counts; pairs with step outside 0..n_steps-1 are dropped."""
    order = np.argsort(step * n_inputs + inputs, kind="mergesort")
    indptr = np.zeros(n_steps + 1, np.int64)
    index = np.empty(len(step), np.int32)
    count = np.empty(len(step), np.int32)
    nnz = 0
    last = -1
    for j in order:
        s = step[j]
        if s < 0 or s >= n_steps:
            continue
        key = s * n_inputs + inputs[j]
        if key == last:
            if not binary:
                count[nnz - 1] += 1
            continue
        last = key
        index[nnz] = inputs[j]
        count[nnz] = 1
        indptr[s + 1] += 1
        nnz += 1
    for s in range(n_steps):
        indptr[s + 1] += indptr[s]
    return indptr, index[:nnz], count[:nnz]


def _steps(spec: InputSpec, span_us: int, keep_partial: bool) -> int:
    if spec.duration_us:
        return spec.duration_us // spec.bin_us
    return -(-span_us // spec.bin_us) if keep_partial else span_us // spec.bin_us


def _with_tail(p: Presentation, tail: int) -> Presentation:
    if not tail:
        return p
    return Presentation(np.concatenate([p.indptr, np.full(tail, p.indptr[-1])]), p.index, p.count)


def present_dvs(events: np.ndarray, spec: InputSpec, input_shape: tuple[int, int, int]) -> Presentation:
    """DVS events (DVS_EVENT_DTYPE, time-ordered) -> Presentation on the (C, H, W) ``input_shape`` grid."""
    c, h, w = input_shape
    if spec.polarity == "split" and c != 2 or spec.polarity == "merge" and c != 1:
        raise ValueError(f"input spec: polarity {spec.polarity!r} needs {2 if spec.polarity == 'split' else 1} "
                         f"input channel(s), the network's input_shape is {tuple(input_shape)}")
    binary = spec.encoding == "spikes"
    if len(events) == 0:
        empty = np.zeros(0, np.int32)
        return _with_tail(Presentation(np.zeros(_steps(spec, 0, False) + 1, np.int64), empty, empty), spec.tail_steps)
    t = events["timestamp"].astype(np.int64)
    x = events["x"].astype(np.int64) // spec.scale
    y = events["y"].astype(np.int64) // spec.scale
    if x.max() >= w or y.max() >= h or x.min() < 0 or y.min() < 0:
        raise ValueError(f"events reach x={int(x.max())}, y={int(y.max())} (after /{spec.scale}) outside the "
                         f"network's {w}x{h} input")
    channel = events["polarity"].astype(np.int64) if spec.polarity == "split" else np.zeros(len(t), np.int64)
    n_steps = _steps(spec, int(t[-1] - t[0]), False)
    step = (t - t[0]) // spec.bin_us
    inputs = (channel * h + y) * w + x
    return _with_tail(Presentation(*_csr(step, inputs, n_steps, c * h * w, binary)), spec.tail_steps)


def cochlea_config(spec: InputSpec) -> CochleaConfig:
    """The cochlea a "cochlea" input spec was trained on: its channels, LIF threshold and AGC, the rest the
    cochlea's defaults (what a launch file's audio source must match)."""
    return CochleaConfig(n_channels=spec.channels, threshold=spec.cochlea_threshold, agc_ms=spec.cochlea_agc_ms,
                         agc_strength=spec.cochlea_agc_strength)


def cochlea_spikes(path: str | Path, spec: InputSpec, gain_db: float = 0.0,
                   agc_level: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """A WAV file through the project's cochlea (``spec.channels`` channels, LIF threshold
    ``spec.cochlea_threshold``, AGC as the spec says, starting at ``agc_level`` (None: 0), clip normalised to
    the cochlea's target RMS, then ``gain_db`` dB louder) -> (AER spikes, duration µs)."""
    reader = WavReader(path, strict=True)
    samples = np.concatenate(list(reader.blocks()) or [np.zeros(0)])
    check_audible(samples, path)
    config = cochlea_config(spec)
    gain = rms_gain(samples, config.target_rms) * 10.0 ** (gain_db / 20.0)
    cochlea = Cochlea(float(reader.sample_rate), config, input_gain=gain, agc_level=agc_level)
    return cochlea.process(samples), int(round(len(samples) * 1e6 / reader.sample_rate))


def speaker_levels(paths, speakers, spec: InputSpec) -> dict[str, np.ndarray]:
    """Each speaker's AGC start level for a spec with ``cochlea_agc_start = "speaker"``:
    :func:`devices.audio.voice_level` of their clips among ``paths`` (``speakers``: the speaker of each);
    {speaker: (channels,)}. ValueError naming a file that cannot be measured."""
    groups: dict[str, list] = {}
    for path, speaker in zip(paths, speakers):
        groups.setdefault(speaker, []).append(path)
    try:
        return {speaker: voice_level(group, cochlea_config(spec)) for speaker, group in groups.items()}
    except RecordingError as error:
        raise ValueError(str(error)) from error


def present_spikes(spikes: np.ndarray, duration_us: int, spec: InputSpec, n_inputs: int) -> Presentation:
    """AER spikes (SPIKE_DTYPE, time from 0 = the start of the clip) -> Presentation, input = channel."""
    n_steps = _steps(spec, duration_us, True)
    step = spikes["timestamp"].astype(np.int64) // spec.bin_us
    inputs = spikes["channel"].astype(np.int64)
    if len(inputs) and inputs.max() >= n_inputs:
        raise ValueError(f"spike channel {int(inputs.max())} outside the network's {n_inputs} inputs")
    return _with_tail(Presentation(*_csr(step, inputs, n_steps, n_inputs, spec.encoding == "spikes")), spec.tail_steps)


def read_events(path: str | Path) -> np.ndarray:
    """Every event of a recording (strict: damage is an error), at most MAX_EVENTS."""
    chunks, total = [], 0
    with open_recording(path, strict=True) as reader:
        for chunk in reader.chunks():
            total += len(chunk)
            if total > MAX_EVENTS:
                raise ValueError(f"{path}: more than {MAX_EVENTS} events; too long to present as one sample")
            chunks.append(chunk)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=DVS_EVENT_DTYPE)


def repeat_frame(frame: Presentation, n_steps: int, tail_steps: int) -> Presentation:
    """A one-step Presentation (the window's counts) repeated in each of ``n_steps`` steps, then ``tail_steps``
    empty steps (encoding "frame")."""
    lo, hi = int(frame.indptr[0]), int(frame.indptr[1])
    nnz = hi - lo
    indptr = np.concatenate([np.arange(n_steps + 1, dtype=np.int64) * nnz,
                             np.full(tail_steps, n_steps * nnz, np.int64)])
    return Presentation(indptr, np.tile(frame.index[lo:hi], n_steps), np.tile(frame.count[lo:hi], n_steps))


def present_file(path: str | Path, spec: InputSpec, input_shape: tuple[int, int, int] | None, n_inputs: int,
                 gain_db: float = 0.0, agc_level: np.ndarray | None = None) -> Presentation:
    """One recording (any event format, or a WAV for the cochlea, ``gain_db`` dB above its normalised level,
    the cochlea's AGC starting at ``agc_level``) -> Presentation; ValueError names the file."""
    path = Path(path)
    if spec.encoding == "frame":
        window = replace(spec, encoding="counts", bin_us=spec.duration_us, tail_steps=0)
        return repeat_frame(present_file(path, window, input_shape, n_inputs, gain_db, agc_level),
                            spec.duration_us // spec.bin_us, spec.tail_steps)
    if (path.suffix.lower() == ".wav") != (spec.sensor == "cochlea"):
        raise ValueError(f"{path}: a WAV file needs a model whose input_spec.sensor is 'cochlea'; this model's is "
                         f"'dvs' (DVS event recordings)" if spec.sensor != "cochlea" else
                         f"{path}: the model's input_spec.sensor is 'cochlea' (WAV files through the cochlea), "
                         f"not DVS events")
    try:
        if spec.sensor == "cochlea":
            spikes, duration_us = cochlea_spikes(path, spec, gain_db, agc_level)
            return present_spikes(spikes, duration_us, spec, n_inputs)
        if input_shape is None:
            raise ValueError("the network has no input_shape; DVS input needs a (C, H, W) grid")
        return present_dvs(read_events(path), spec, input_shape)
    except RecordingError as error:
        raise ValueError(str(error)) from error
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise ValueError(f"{path}: {error}") from error


@njit(cache=True, error_model="numpy")
def transform(indptr, index, count, shape, keep, dx, dy, scale, binary):
    """A presentation's events shifted by (dx, dy) pixels on the (C, H, W) ``shape`` grid and their steps
    stretched to floor(step * scale) (scale > 0), keeping event k only if keep[k] and it stays on the grid and
    inside the n_steps = len(indptr) - 1 steps; events that meet on one (step, input) merge (counts add; 1
    when binary). Returns the new (indptr int64, index int32, count int32), inputs ascending in each step."""
    c, h, w = shape
    n_steps = indptr.shape[0] - 1
    n_in = c * h * w
    out_indptr = np.zeros(n_steps + 1, np.int64)
    out_index = np.empty(index.shape[0], np.int32)
    out_count = np.empty(index.shape[0], np.int32)
    seen_at = np.full(n_in, -1, np.int64)     # the output step an input last appeared in
    total = np.zeros(n_in, np.int64)
    nnz = 0
    group_start = 0
    current = -1
    for t in range(n_steps):
        step = np.int64(np.floor(t * scale))
        if step >= n_steps:
            break
        if step != current:
            if current >= 0:
                nnz = _close_step(out_index, out_count, group_start, nnz, total, binary)
                out_indptr[current + 1] = nnz
            current = step
            group_start = nnz
        for k in range(indptr[t], indptr[t + 1]):
            if not keep[k]:
                continue
            i = np.int64(index[k])
            x = i % w + dx
            y = (i // w) % h + dy
            if x < 0 or x >= w or y < 0 or y >= h:
                continue
            j = ((i // (w * h)) * h + y) * w + x
            if seen_at[j] != step:
                seen_at[j] = step
                total[j] = 0
                out_index[nnz] = j
                nnz += 1
            total[j] += count[k]
    if current >= 0:
        nnz = _close_step(out_index, out_count, group_start, nnz, total, binary)
        out_indptr[current + 1] = nnz
    for s in range(n_steps):          # steps without events end where the previous one did
        out_indptr[s + 1] = max(out_indptr[s + 1], out_indptr[s])
    return out_indptr, out_index[:nnz], out_count[:nnz]


@njit(cache=True)
def _close_step(out_index, out_count, start, end, total, binary):
    """Sort one output step's inputs (insertion sort: the steps are short and nearly sorted) and set counts."""
    for k in range(start + 1, end):
        x = out_index[k]
        m = k - 1
        while m >= start and out_index[m] > x:
            out_index[m + 1] = out_index[m]
            m -= 1
        out_index[m + 1] = x
    for k in range(start, end):
        out_count[k] = 1 if binary else total[out_index[k]]
    return end
