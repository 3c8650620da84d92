"""WAV (RIFF PCM) reader for the audio cochlea: mono float32 samples in [-1, 1], streamed in bounded blocks.

Supports what the standard library's ``wave`` module decodes: integer PCM with 8-bit (unsigned),
16-, 24- and 32-bit (signed little-endian) samples, any channel count (averaged to mono). Float and
compressed WAVs are rejected with a clear error. A file shorter than its header promises yields the
samples present, then warns (RecordingDamageWarning naming the byte offset) or, with ``strict=True``,
raises RecordingError.
"""
from __future__ import annotations

import warnings
import wave
from pathlib import Path
from typing import Iterator

import numpy as np

from recordings.base import RecordingDamageWarning, RecordingError, not_a_file

#: Default block length in sample frames (0.5 s at 8 kHz).
DEFAULT_BLOCK_FRAMES = 4096


def _to_float(raw: bytes, sample_width: int, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> mono float32 (n_frames,) in [-1, 1]."""
    if sample_width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif sample_width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif sample_width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        data = value.astype(np.float32) / float(1 << 23)
    else:
        data = (np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return data


class WavReader:
    """A WAV file opened for streaming.

    sample_rate (Hz), channels, sample_width (bytes), n_frames (as the header says), duration_s.
    ``blocks()`` yields mono float32 arrays of at most ``block_frames`` samples; ``read()`` returns all.
    """

    def __init__(self, path: str | Path, *, block_frames: int = DEFAULT_BLOCK_FRAMES, strict: bool = False):
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        self.path = Path(path)
        self.block_frames = int(block_frames)
        self.strict = strict
        if not self.path.is_file():
            raise RecordingError(self.path, not_a_file(self.path))
        with open(self.path, "rb") as f:
            head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise RecordingError(self.path, "not a WAV file (expected 'RIFF....WAVE')", 0)
        try:
            with wave.open(str(self.path), "rb") as w:
                self.sample_rate = w.getframerate()
                self.channels = w.getnchannels()
                self.sample_width = w.getsampwidth()
                self.n_frames = w.getnframes()
        except (wave.Error, EOFError) as exc:
            raise RecordingError(self.path, f"unsupported or damaged WAV header ({type(exc).__name__}: {exc}); "
                                 "expected integer PCM, 8/16/24/32-bit") from None
        if self.sample_width not in (1, 2, 3, 4) or self.channels < 1 or self.sample_rate <= 0:
            raise RecordingError(self.path, f"unsupported WAV layout: {self.channels} channels, "
                                 f"{8 * self.sample_width}-bit, {self.sample_rate} Hz")

    @property
    def duration_s(self) -> float:
        """Length in seconds according to the header."""
        return self.n_frames / self.sample_rate

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield mono float32 blocks, shape (<= block_frames,), values in [-1, 1]."""
        frame_bytes = self.sample_width * self.channels
        with wave.open(str(self.path), "rb") as w:
            done = 0
            while done < self.n_frames:
                want = min(self.block_frames, self.n_frames - done)
                raw = w.readframes(want)
                whole = len(raw) // frame_bytes
                if whole:
                    yield _to_float(raw[: whole * frame_bytes], self.sample_width, self.channels)
                done += whole
                if whole < want:
                    self._damage(done, frame_bytes)
                    return

    def _damage(self, frames_read: int, frame_bytes: int) -> None:
        offset = self._data_offset() + frames_read * frame_bytes
        error = RecordingError(self.path, f"file ends after {frames_read} of {self.n_frames} sample frames "
                               "the header promises", offset)
        if self.strict:
            raise error
        warnings.warn(f"{error}; samples before the damage were kept", RecordingDamageWarning, stacklevel=3)

    def _data_offset(self) -> int:
        """Byte offset of the first sample (start of the 'data' chunk payload)."""
        with open(self.path, "rb") as f:
            f.seek(12)
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return f.tell()
                size = int.from_bytes(head[4:], "little")
                if head[:4] == b"data":
                    return f.tell()
                f.seek(size + (size & 1), 1)

    def read(self) -> np.ndarray:
        """All samples as one mono float32 array (n,)."""
        parts = list(self.blocks())
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def read_wav(path: str | Path, *, strict: bool = False) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1], sample rate in Hz) of a whole WAV file."""
    reader = WavReader(path, strict=strict)
    return reader.read(), reader.sample_rate


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write mono samples (n,) in [-1, 1] (clipped) as 16-bit PCM at ``sample_rate`` Hz, atomically (a temp
    file in the same folder renamed over ``path``)."""
    import os
    import tempfile

    path = Path(path)
    pcm = np.round(np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0) * 32767).astype("<i2")
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as raw, wave.open(raw, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(int(sample_rate))
            out.writeframes(pcm.tobytes())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would make a shipped sample unreadable to others
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def word_sequence(paths, gap_s: float, lead_s: float = 0.0, rms: float | None = None
                  ) -> tuple[np.ndarray, int, list[tuple[float, float]]]:
    """WAV clips of one sample rate joined with ``gap_s`` of silence after each (``lead_s`` before the
    first) -> (samples float32 (n,), sample rate Hz, [(start_s, end_s) of each clip]). ``rms``: scale each
    clip to this RMS first (one talker at one level), else keep the recorded levels."""
    parts, spans, rate, at = [], [], None, 0
    for path in paths:
        samples, clip_rate = read_wav(path, strict=True)
        if rms is not None and len(samples) and np.any(samples):
            samples = (samples * (rms / np.sqrt(np.mean(np.square(samples, dtype=np.float64))))).astype(np.float32)
        if rate is None:
            rate = clip_rate
            parts.append(np.zeros(int(round(lead_s * rate)), np.float32))
            at = len(parts[0])
        elif clip_rate != rate:
            raise RecordingError(f"{path}: sample rate {clip_rate} Hz, the sequence's is {rate} Hz")
        gap = np.zeros(int(round(gap_s * rate)), np.float32)
        spans.append((at / rate, (at + len(samples)) / rate))
        parts += [samples, gap]
        at += len(samples) + len(gap)
    if rate is None:
        raise RecordingError("word_sequence: no clips given")
    return np.concatenate(parts), rate, spans
