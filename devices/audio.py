"""Audio cochlea front end: samples -> gammatone filterbank (ERB scale) -> hair cell -> AER spikes.

Pipeline per block of samples (state carries across blocks, so a microphone stream and a whole WAV file
give the same spikes):

1. RMS normalisation by a fixed gain (set from the whole clip for files, from ``input_gain`` for live audio).
2. Gammatone filterbank: ``n_channels`` centre frequencies uniform on the ERB-rate scale
   ``E(f) = 21.4 log10(1 + 0.00437 f)`` between ``f_lo_hz`` and ``f_hi_hz`` (Glasberg & Moore 1990); each
   channel is scipy's 4th-order gammatone IIR design (Slaney 1993; unity gain at the centre frequency) run as
   four cascaded biquads in a numba kernel. Channel 0 is the lowest centre frequency.
3. Inner hair cell: half-wave rectification.
4. Spike generation, one of
   * ``"lif"``: per channel ``v <- v exp(-dt/tau) + gain h dt``; spike and reset when ``v >= threshold``,
     then ``refractory_ms`` of silence. Channel index = filterbank channel. With ``agc_ms > 0`` (default
     off) the drive is first multiplied by a causal spectral-tilt gain (an AGC, the spike-domain analog of
     cepstral mean normalisation): each channel's level ``l_c`` tracks its rectified output with time
     constant ``agc_ms`` (``l_c <- l_c + (1 - exp(-dt/agc_ms)) (h_c - l_c)``, from 0 at reset) and
     ``h_c`` is scaled by ``((m + eps) / (l_c + AGC_FLOOR m + eps)) ** agc_strength``, ``m`` the mean level
     over the channels (before this sample's update), ``eps`` = 1e-9: a speaker's steady spectral colour
     is divided out, the overall level is left to the RMS normalisation, and a channel at most
     ``1 / AGC_FLOOR`` below the mean is raised by at most ``AGC_FLOOR ** -agc_strength``.
   * ``"delta"``: send-on-delta on the log envelope (DVS-like ON/OFF): channel = c for an increase by
     ``delta``, ``c + n_channels`` for a decrease.

Output: SPIKE_DTYPE arrays (timestamp µs, channel), time-ordered.
"""
from __future__ import annotations

import functools
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numba import njit

from pipeline.core.clock import wait_until
from pipeline.core.events import SPIKE_DTYPE
from pipeline.core.packet import Packet, StreamInfo
from pipeline.core.schema import toml_value
from recordings.wav import WavReader

SPIKE_METHODS = ("lif", "delta")
#: The AGC's level floor as a fraction of the mean level over channels: a near-silent channel's gain is at most
#: AGC_FLOOR ** -agc_strength (10x with strength 1), so noise in a quiet band is not raised without bound.
AGC_FLOOR = 0.1


def erb_space(f_lo_hz: float, f_hi_hz: float, n: int) -> np.ndarray:
    """``n`` centre frequencies (Hz, ascending) uniform on the ERB-rate scale between the two limits."""
    e_lo, e_hi = (21.4 * np.log10(1 + 0.00437 * f) for f in (f_lo_hz, f_hi_hz))
    return (10 ** (np.linspace(e_lo, e_hi, n) / 21.4) - 1) / 0.00437


def warped_channels(f_lo_hz: float, f_hi_hz: float, n: int, factor: float) -> np.ndarray:
    """Where each of the ``n`` ERB-spaced channels' centre frequency times ``factor`` lies on the channel
    axis: (n,) fractional channel positions (channel 0 = ``f_lo_hz``; below 0 or above n - 1: off the bank).
    A vocal-tract-length change scales formant frequencies by about such a factor."""
    e_lo, e_hi = (21.4 * np.log10(1 + 0.00437 * f) for f in (f_lo_hz, f_hi_hz))
    warped = 21.4 * np.log10(1 + 0.00437 * erb_space(f_lo_hz, f_hi_hz, n) * factor)
    return (warped - e_lo) / (e_hi - e_lo) * (n - 1)


@dataclass(frozen=True)
class CochleaConfig:
    """Parameters of the cochlea. Frequencies in Hz, times in ms.

    The LIF defaults (tau 2 ms, threshold 1.5e-4, refractory 1 ms) with clips normalised to RMS 0.3
    (``target_rms``, as lauscher's RmsNormalizer) follow the reference front end in
    shared/reference/cochlea_bci.md: about 1.1 k spikes/s (median) on spoken digits.
    """

    n_channels: int = 64
    f_lo_hz: float = 100.0
    f_hi_hz: float = 3600.0
    method: str = "lif"
    tau_ms: float = 2.0
    threshold: float = 1.5e-4
    refractory_ms: float = 1.0
    delta: float = 0.5
    envelope_tau_ms: float = 5.0
    target_rms: float = 0.3
    agc_ms: float = 0.0
    agc_strength: float = 1.0

    def validate(self, sample_rate_hz: float) -> None:
        """Raise ValueError naming the parameter that is impossible at this sample rate."""
        if self.n_channels < 1:
            raise ValueError(f"cochlea n_channels: expected >= 1, got {self.n_channels}")
        if self.method not in SPIKE_METHODS:
            raise ValueError(f"cochlea method: expected one of {', '.join(map(toml_value, SPIKE_METHODS))}, got {toml_value(self.method)}")
        if not 0 < self.f_lo_hz < self.f_hi_hz:
            raise ValueError(f"cochlea f_lo_hz/f_hi_hz: expected 0 < f_lo < f_hi, got {self.f_lo_hz}, {self.f_hi_hz}")
        if self.f_hi_hz >= sample_rate_hz / 2:
            raise ValueError(
                f"cochlea f_hi_hz: expected below the Nyquist frequency {sample_rate_hz / 2:g} Hz of "
                f"{sample_rate_hz:g} Hz audio, got {self.f_hi_hz:g} (audio at {sample_rate_hz:g} Hz is refused: "
                f"resample it to >= {2 * self.f_hi_hz:g} Hz)"
            )
        for name in ("tau_ms", "threshold", "delta", "envelope_tau_ms", "target_rms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"cochlea {name}: expected > 0, got {getattr(self, name)}")
        if self.refractory_ms < 0:
            raise ValueError(f"cochlea refractory_ms: expected >= 0, got {self.refractory_ms}")
        if not 0 <= self.agc_ms < float("inf"):
            raise ValueError(f"cochlea agc_ms: expected >= 0 (0: no AGC), got {self.agc_ms}")
        if not 0 <= self.agc_strength <= 2:
            raise ValueError(f"cochlea agc_strength: expected 0..2, got {self.agc_strength}")
        if self.agc_ms > 0 and self.method != "lif":
            raise ValueError(f"cochlea agc_ms: the AGC drives the lif method only, got method {toml_value(self.method)}")


@functools.lru_cache(maxsize=16)
def gammatone_sos(f_lo_hz: float, f_hi_hz: float, n_channels: int, sample_rate_hz: float) -> np.ndarray:
    """Biquad coefficients of the ERB-spaced bank: (n_channels, 4, 6) as scipy's sos rows (b0 b1 b2 a0 a1 a2).
    Cached (designing 64 channels takes ~0.5 s); the returned array is read-only."""
    from scipy.signal import gammatone, tf2sos  # scipy.signal takes ~1 s to import: only when a cochlea is built

    sos = np.stack([tf2sos(*gammatone(fc, "iir", fs=sample_rate_hz))
                    for fc in erb_space(f_lo_hz, f_hi_hz, n_channels)])
    sos.flags.writeable = False
    return sos


@njit(cache=True)
def _filterbank(x, sos, state, out):
    """Run every channel's biquad cascade over the block ``x`` (n,) into ``out`` (n, C); transposed
    direct form II, ``state`` (C, S, 2) carries across blocks."""
    n_channels, n_sections = sos.shape[0], sos.shape[1]
    for i in range(x.shape[0]):
        for c in range(n_channels):
            y = x[i]
            for s in range(n_sections):
                b0 = sos[c, s, 0]
                b1 = sos[c, s, 1]
                b2 = sos[c, s, 2]
                a1 = sos[c, s, 4]
                a2 = sos[c, s, 5]
                z0 = state[c, s, 0]
                z1 = state[c, s, 1]
                out_s = b0 * y + z0
                state[c, s, 0] = b1 * y - a1 * out_s + z1
                state[c, s, 1] = b2 * y - a2 * out_s
                y = out_s
            out[i, c] = y


@njit(cache=True)
def _lif_spikes(bm, t0_us, dt_us, decay, gain_dt, threshold, refractory_samples, v, refractory, out_t, out_c):
    """Half-wave rectify ``bm`` (n, C) and integrate per channel; write spikes to out_t/out_c, return count.
    ``v`` and ``refractory`` (C,) carry across blocks."""
    n, n_channels = bm.shape
    count = 0
    for i in range(n):
        t = t0_us + (i * dt_us)
        for c in range(n_channels):
            if refractory[c] > 0:
                refractory[c] -= 1
                v[c] = 0.0
                continue
            h = bm[i, c]
            if h < 0.0:
                h = 0.0
            v[c] = v[c] * decay + gain_dt * h
            if v[c] >= threshold:
                v[c] = 0.0
                refractory[c] = refractory_samples
                out_t[count] = np.int64(t)
                out_c[count] = c
                count += 1
    return count


@njit(cache=True)
def _lif_agc_spikes(bm, t0_us, dt_us, decay, gain_dt, threshold, refractory_samples, agc_alpha, strength, floor,
                    level, v, refractory, out_t, out_c):
    """As :func:`_lif_spikes`, the rectified drive first scaled by the AGC gain (module docstring); ``level``
    (C,) carries across blocks with ``v`` and ``refractory``."""
    n, n_channels = bm.shape
    count = 0
    for i in range(n):
        t = t0_us + (i * dt_us)
        mean = 0.0
        for c in range(n_channels):
            mean += level[c]
        mean /= n_channels
        for c in range(n_channels):
            h = bm[i, c]
            if h < 0.0:
                h = 0.0
            gain = ((mean + 1e-9) / (level[c] + floor * mean + 1e-9)) ** strength
            level[c] += agc_alpha * (h - level[c])
            if refractory[c] > 0:
                refractory[c] -= 1
                v[c] = 0.0
                continue
            v[c] = v[c] * decay + gain_dt * gain * h
            if v[c] >= threshold:
                v[c] = 0.0
                refractory[c] = refractory_samples
                out_t[count] = np.int64(t)
                out_c[count] = c
                count += 1
    return count


@njit(cache=True)
def _delta_spikes(bm, t0_us, dt_us, env_alpha, delta, envelope, reference, out_t, out_c):
    """Send-on-delta on the log of a low-passed rectified envelope; ON = c, OFF = c + C. Return count."""
    n, n_channels = bm.shape
    count = 0
    for i in range(n):
        t = t0_us + (i * dt_us)
        for c in range(n_channels):
            h = bm[i, c]
            if h < 0.0:
                h = 0.0
            envelope[c] += env_alpha * (h - envelope[c])
            level = np.log(envelope[c] + 1e-6)
            while level - reference[c] >= delta and count < out_t.shape[0]:
                reference[c] += delta
                out_t[count] = np.int64(t)
                out_c[count] = c
                count += 1
            while reference[c] - level >= delta and count < out_t.shape[0]:
                reference[c] -= delta
                out_t[count] = np.int64(t)
                out_c[count] = c + n_channels
                count += 1
    return count


@dataclass
class Cochlea:
    """Streaming cochlea: ``process(block)`` turns float samples into AER spikes, keeping filter state.

    sample_rate_hz: input sample rate (Hz). input_gain: factor applied to samples before filtering
    (use :func:`rms_gain` for a whole clip). ``t0_us``: sensor time of the first sample. ``agc_level``: the
    AGC's level at the start and after :meth:`reset`, (n_channels,) in the rectified drive's units (None: 0,
    the AGC starts neutral; :func:`voice_level` gives a speaker's, so a slow AGC starts adapted to them).
    """

    sample_rate_hz: float
    config: CochleaConfig = field(default_factory=CochleaConfig)
    input_gain: float = 1.0
    t0_us: int = 0
    agc_level: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.config.validate(self.sample_rate_hz)
        cfg = self.config
        if self.agc_level is not None:
            level = np.asarray(self.agc_level, dtype=np.float64)
            if level.shape != (cfg.n_channels,) or not np.all(np.isfinite(level)) or np.any(level < 0):
                raise ValueError(f"cochlea agc_level: expected {cfg.n_channels} finite levels >= 0, got shape "
                                 f"{level.shape}")
            self.agc_level = level
        self.centre_hz = erb_space(cfg.f_lo_hz, cfg.f_hi_hz, cfg.n_channels)
        self._sos = gammatone_sos(cfg.f_lo_hz, cfg.f_hi_hz, cfg.n_channels, float(self.sample_rate_hz))
        self._dt_s = 1.0 / self.sample_rate_hz
        self._dt_us = 1e6 / self.sample_rate_hz
        self.reset()

    @property
    def sos(self) -> np.ndarray:
        """The filterbank's biquad coefficients, (n_channels, 4, 6) read-only."""
        return self._sos

    @property
    def n_outputs(self) -> int:
        """Number of AER channels: n_channels (lif) or 2 n_channels (delta: ON then OFF)."""
        return self.config.n_channels * (2 if self.config.method == "delta" else 1)

    def reset(self) -> None:
        """Clear filter and neuron state; the next sample is at ``t0_us`` again."""
        c = self.config.n_channels
        self._state = np.zeros((c, self._sos.shape[1], 2))
        self._v = np.zeros(c)
        self._level = np.zeros(c) if self.agc_level is None else self.agc_level.copy()
        self._refractory = np.zeros(c, dtype=np.int64)
        self._envelope = np.zeros(c)
        self._reference = np.full(c, np.log(1e-6))
        self._samples_done = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Samples (n,) float in [-1, 1] -> spikes (SPIKE_DTYPE, time-ordered) for this block."""
        x = np.ascontiguousarray(samples, dtype=np.float64) * self.input_gain
        bm = np.empty((len(x), self.config.n_channels))
        _filterbank(x, self._sos, self._state, bm)
        t0 = self.t0_us + self._samples_done * self._dt_us
        capacity = len(x) * self.n_outputs
        out_t = np.empty(capacity, dtype=np.int64)
        out_c = np.empty(capacity, dtype=np.int32)
        cfg = self.config
        if cfg.method == "lif" and cfg.agc_ms > 0:
            n = _lif_agc_spikes(
                bm, t0, self._dt_us, np.exp(-self._dt_s / (cfg.tau_ms * 1e-3)), self._dt_s, cfg.threshold,
                int(round(cfg.refractory_ms * 1e-3 * self.sample_rate_hz)),
                1.0 - np.exp(-self._dt_s / (cfg.agc_ms * 1e-3)), cfg.agc_strength, AGC_FLOOR, self._level, self._v,
                self._refractory, out_t, out_c,
            )
        elif cfg.method == "lif":
            n = _lif_spikes(
                bm, t0, self._dt_us, np.exp(-self._dt_s / (cfg.tau_ms * 1e-3)), self._dt_s, cfg.threshold,
                int(round(cfg.refractory_ms * 1e-3 * self.sample_rate_hz)), self._v, self._refractory, out_t, out_c,
            )
        else:
            alpha = 1.0 - np.exp(-self._dt_s / (cfg.envelope_tau_ms * 1e-3))
            n = _delta_spikes(bm, t0, self._dt_us, alpha, cfg.delta, self._envelope, self._reference, out_t, out_c)
        self._samples_done += len(x)
        out = np.empty(n, dtype=SPIKE_DTYPE)
        out["timestamp"] = out_t[:n]
        out["channel"] = out_c[:n]
        return out


def channel_drive(blocks, sample_rate_hz: float, config: CochleaConfig, input_gain: float = 1.0) -> np.ndarray:
    """The mean half-wave-rectified filterbank output of each channel over a clip given as consecutive sample
    blocks (an iterable of (n_i,) arrays; filter state carries across them): (n_channels,), the unit of the
    AGC's level (``input_gain`` as :class:`Cochlea`'s). Averaged over a speaker's clips it is the level a
    slow AGC settles to while that speaker talks (:func:`voice_level`)."""
    config.validate(sample_rate_hz)
    sos = gammatone_sos(config.f_lo_hz, config.f_hi_hz, config.n_channels, float(sample_rate_hz))
    state = np.zeros((config.n_channels, sos.shape[1], 2))
    total, count = np.zeros(config.n_channels), 0
    for block in blocks:
        x = np.ascontiguousarray(block, dtype=np.float64) * input_gain
        out = np.empty((len(x), config.n_channels))
        _filterbank(x, sos, state, out)
        total += np.maximum(out, 0.0).sum(axis=0)
        count += len(x)
    return total / max(count, 1)


def voice_files(path) -> list[Path]:
    """The recordings of a voice named by one path (an enrolment, e.g. ``[source] agc_enrol``): the file
    itself, or the ``.wav`` files of a folder, sorted; [] when there is none."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    return [path] if path.is_file() else []


def voice_level(paths, config: CochleaConfig, strict: bool = True) -> np.ndarray:
    """One voice's AGC level: the mean over its WAV files (each normalised to ``config.target_rms`` over all its
    samples, as a WAV replay and the trainer normalise a clip) of :func:`channel_drive`; (n_channels,). Labels
    are not needed: unlabelled speech of the voice is enough. Streamed in bounded blocks. ValueError naming a
    file that is empty or silent (RecordingError for a damaged one), or when ``paths`` is empty."""
    levels = []
    for path in paths:
        rms = whole_rms(path, strict)
        if rms == 0:
            raise ValueError(f"{path}: empty or silent WAV (no level to adapt to)")
        reader = WavReader(path, block_frames=1 << 16, strict=strict)
        levels.append(channel_drive(reader.blocks(), float(reader.sample_rate), config, config.target_rms / rms))
    if not levels:
        raise ValueError("no WAV files to measure a voice's level from")
    return np.mean(levels, axis=0)


def whole_rms(path, strict: bool = False) -> float:
    """RMS of every sample of a WAV (0.0 when empty), streamed in bounded blocks."""
    square_sum, count = 0.0, 0
    for block in WavReader(path, block_frames=1 << 16, strict=strict).blocks():
        square_sum += float(np.dot(block.astype(np.float64), block))
        count += len(block)
    return (square_sum / count) ** 0.5 if count else 0.0


def active_rms(path, sample_rate_hz: float, strict: bool = False) -> float:
    """RMS of a WAV's active 10 ms blocks: those whose mean square is within ACTIVE_DB of the loudest block's
    (0.0 when silent or empty). Memory: one float per block."""
    frames = max(1, int(round(sample_rate_hz / 100)))
    powers = [float(np.mean(np.square(b, dtype=np.float64)))
              for b in WavReader(path, block_frames=frames, strict=strict).blocks() if len(b)]
    if not powers or max(powers) == 0:
        return 0.0
    powers = np.array(powers)
    active = powers[powers >= powers.max() * 10 ** (-ACTIVE_DB / 10)]
    return float(np.sqrt(active.mean()))


def check_audible(samples: np.ndarray, path) -> None:
    """ValueError naming ``path`` when a WAV has no samples or only zeros (nothing for the cochlea to hear)."""
    if len(samples) == 0:
        raise ValueError(f"{path}: empty WAV (no samples)")
    if not np.any(samples):
        raise ValueError(f"{path}: silent WAV (all {len(samples)} samples are 0)")


def rms_gain(samples: np.ndarray, target_rms: float) -> float:
    """Gain that brings a clip to ``target_rms``; 1.0 for a silent clip."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return target_rms / rms if rms > 0 else 1.0


def cochlea_info(cochlea: Cochlea, name: str) -> StreamInfo:
    """The stream info of a cochlea source: AER spikes on ``n_outputs`` channels laid out as a (planes, 1,
    n_channels) grid, frequency along ``width`` (channel 0 lowest) and one plane (lif) or two (delta: ON, OFF),
    the layout of a DVS sensor's (polarity, y, x) inputs."""
    return StreamInfo(kind="spikes", width=cochlea.config.n_channels, height=1, channels=cochlea.n_outputs, name=name)


#: How a WAV's level is measured for normalisation: the RMS of every sample, or the active level (the RMS of
#: the 10 ms blocks within ACTIVE_DB of the loudest block: pauses between words do not count).
LEVELS = ("rms", "active")
ACTIVE_DB = 40.0


class WavCochleaSource:
    """A WAV file through the cochlea, as a spike source (implements pipeline.core.packet.Source).

    The clip is normalised to ``config.target_rms`` (one streaming pass to measure it, then the real pass;
    ``level``: "rms" of every sample, or "active": of the 10 ms blocks within 40 dB of the loudest, so a
    recording of words with pauses between them gets each word at about the level it has alone),
    and streamed in packets of ``packet_ms`` of audio: paced in real time (``speed`` x), or ``fast``.
    ``loop``: play the clip again at the end, the cochlea's state and sensor time running on (never ends).
    ``agc_level``: the AGC's start level (:class:`Cochlea`; e.g. :func:`voice_level` of the speaker).
    Sensor time starts at ``t_start_us`` = 0 (the first sample); a packet's ``t_end_us`` is the time of the
    sample after its last one, so it has delivered every spike before ``t_end_us``.
    """

    t_start_us = 0

    def __init__(self, path, config: CochleaConfig = CochleaConfig(), *, packet_ms: float = 10.0,
                 speed: float = 1.0, fast: bool = False, loop: bool = False, strict: bool = False,
                 level: str = "rms", agc_level: np.ndarray | None = None):
        if packet_ms <= 0 or speed <= 0:
            raise ValueError(f"packet_ms and speed must be > 0, got {packet_ms}, {speed}")
        if level not in LEVELS:
            raise ValueError(f"cochlea level: expected one of {', '.join(map(toml_value, LEVELS))}, got {toml_value(level)}")
        self._path, self._strict = path, strict
        probe = WavReader(path, strict=strict)
        self.sample_rate_hz = float(probe.sample_rate)
        self.block_frames = max(1, int(round(packet_ms * 1e-3 * self.sample_rate_hz)))
        rms = active_rms(path, self.sample_rate_hz, strict) if level == "active" else whole_rms(path, strict)
        if rms == 0:
            empty = next(iter(WavReader(path, block_frames=1, strict=strict).blocks()), None) is None
            raise ValueError('empty WAV (no samples)' if empty else 'silent WAV (every sample is 0)')
        self.cochlea = Cochlea(self.sample_rate_hz, config, input_gain=config.target_rms / rms if rms > 0 else 1.0,
                               agc_level=agc_level)
        self.speed, self.fast, self.loop = float(speed), bool(fast), bool(loop)
        self.info = cochlea_info(self.cochlea, str(path))
        self._closed = False

    def packets(self):
        """Yield Packets of SPIKE_DTYPE events, one per ``packet_ms`` of audio, until the clip ends (or
        ``close()``, when looping)."""
        self.cochlea.reset()
        samples_done = 0
        started = time.perf_counter_ns()
        while True:
            for block in WavReader(self._path, block_frames=self.block_frames, strict=self._strict).blocks():
                if self._closed:
                    return
                spikes = self.cochlea.process(block)
                samples_done += len(block)
                t_end_us = self.cochlea.t0_us + int(samples_done * 1e6 / self.sample_rate_hz)
                if not self.fast:
                    wait_until(started + int((t_end_us - self.cochlea.t0_us) * 1000 / self.speed))
                yield Packet(events=spikes, t_end_us=t_end_us)
            if not self.loop or samples_done == 0:
                return

    def close(self) -> None:
        """End a looping replay at its next packet (the WAV itself is reopened per pass)."""
        self._closed = True


class MicrophoneCochleaSource:
    """The default microphone through the cochlea (needs the optional ``sounddevice`` package).

    sample_rate_hz: capture rate; packet_ms: audio per packet; input_gain: fixed gain applied to the
    samples (live audio has no whole-clip RMS; 3.0 suits a normal speaking level at RMS ~0.1); agc_level: the
    AGC's start level (:class:`Cochlea`; e.g. :func:`voice_level` of the speaker's enrolment recordings).
    Sensor time is audio time since the stream started (``t_start_us`` = 0).
    """

    t_start_us = 0

    def __init__(self, config: CochleaConfig = CochleaConfig(), *, sample_rate_hz: float = 16000.0,
                 packet_ms: float = 10.0, input_gain: float = 3.0, device=None, agc_level: np.ndarray | None = None):
        try:
            import sounddevice
        except (ImportError, OSError) as error:
            raise RuntimeError(
                "microphone input needs the optional 'sounddevice' package and the PortAudio library: "
                "pip install 'spikeloop[audio]' (and on Debian/Ubuntu: apt-get install libportaudio2)"
                f" [{error}]"
            ) from None
        self._sounddevice = sounddevice
        try:  # a missing device, or one that cannot capture at this rate, is refused here, before the loop
            sounddevice.check_input_settings(device=device, channels=1, dtype="float32", samplerate=sample_rate_hz)
        except Exception as error:  # sounddevice.PortAudioError or ValueError (no such device)
            raise ValueError(f"microphone {device if device is not None else '(default)'} cannot capture 1 channel "
                             f"at {sample_rate_hz:g} Hz: {error} (list the devices: python3 -m sounddevice; choose "
                             f"one with [source] device or --set source.device)") from None
        self._blocks: queue.Queue = queue.Queue(maxsize=200)
        self.cochlea = Cochlea(sample_rate_hz, config, input_gain=input_gain, agc_level=agc_level)
        self.cochlea.process(np.zeros(16))
        self.cochlea.reset()
        self.block_frames = max(1, int(round(packet_ms * 1e-3 * sample_rate_hz)))
        self.sample_rate_hz = sample_rate_hz
        self.dropped_blocks = 0
        self._device = device
        self._stream = None
        self.info = cochlea_info(self.cochlea, "microphone")

    def _callback(self, indata, frames, time_info, status) -> None:
        if self._blocks.full():
            self.dropped_blocks += 1
            return
        self._blocks.put(indata[:, 0].copy())

    def packets(self):
        """Yield spike packets until ``close()``; sensor time is audio time since the stream started."""
        try:
            self._stream = self._sounddevice.InputStream(samplerate=self.sample_rate_hz, channels=1, dtype="float32",
                                                         blocksize=self.block_frames, callback=self._callback,
                                                         device=self._device)
            self._stream.start()
        except Exception as error:  # sounddevice.PortAudioError: busy, unplugged since the check
            self._stream = None
            raise OSError(f"microphone: cannot start capturing ({error}); is another program using it? "
                          f"(list the devices: python3 -m sounddevice)") from None
        samples_done = 0
        while self._stream is not None:
            try:
                block = self._blocks.get(timeout=0.1)
            except queue.Empty:  # check for close() now and then
                continue
            spikes = self.cochlea.process(block)
            samples_done += len(block)
            yield Packet(events=spikes, t_end_us=int(samples_done * 1e6 / self.sample_rate_hz))

    def close(self) -> None:
        """Stop the audio stream."""
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
