"""WAV reader: real FSDD speech, synthesized PCM layouts with known values, damage and non-WAV input."""
from __future__ import annotations

import struct
import warnings
import wave

import numpy as np
import pytest

from recordings.base import RecordingDamageWarning, RecordingError
from recordings.wav import WavReader, read_wav


def write_pcm(path, frames: np.ndarray, width: int, rate: int = 16000) -> None:
    """frames: (n, channels) integer samples already in the file's representation."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 3:
            raw = frames.astype("<i4").reshape(-1).view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        else:
            raw = frames.astype({1: "u1", 2: "<i2", 4: "<i4"}[width]).tobytes()
        w.writeframes(raw)


def test_fsdd_files(data_dir):
    files = sorted((data_dir / "audio" / "fsdd").glob("*_george_*.wav"))[:20]
    assert files
    for path in files:
        reader = WavReader(path, block_frames=512)
        assert (reader.sample_rate, reader.channels, reader.sample_width) == (8000, 1, 2)
        blocks = list(reader.blocks())
        assert all(len(b) <= 512 for b in blocks)
        samples = np.concatenate(blocks)
        assert samples.dtype == np.float32 and len(samples) == reader.n_frames
        assert -1.0 <= samples.min() and samples.max() < 1.0
        raw = np.frombuffer(path.read_bytes()[-2 * reader.n_frames:], dtype="<i2")
        np.testing.assert_array_equal(samples, raw.astype(np.float32) / 32768)
        assert 0.1 < reader.duration_s < 2.5


@pytest.mark.parametrize("width,full_scale,offset", [(1, 128, 128), (2, 32768, 0), (3, 2**23, 0),
                                                     (4, 2**31, 0)])
def test_pcm_layouts_and_stereo_mix(tmp_path, width, full_scale, offset):
    left = np.array([-full_scale, -full_scale // 2, 0, full_scale // 2, full_scale - 1], dtype=np.int64)
    right = np.zeros_like(left)
    path = tmp_path / "x.wav"
    write_pcm(path, np.stack([left + offset, right + offset], axis=1), width)
    samples, rate = read_wav(path)
    assert rate == 16000
    expected = (left / full_scale / 2).astype(np.float32)
    np.testing.assert_allclose(samples, expected, atol=1e-6)


def test_truncated_wav_warns_or_raises(data_dir, tmp_path):
    data = (data_dir / "audio" / "fsdd" / "0_george_0.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:1000])
    with pytest.warns(RecordingDamageWarning, match=r"cut\.wav at byte 1000"):
        samples, _ = read_wav(cut)
    assert len(samples) == (1000 - 44) // 2
    with pytest.raises(RecordingError, match="at byte 1000"):
        read_wav(cut, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_wav(data_dir / "audio" / "fsdd" / "0_george_0.wav")[0]) == 2384


def test_not_a_wav(tmp_path, data_dir):
    with pytest.raises(RecordingError, match="not a WAV"):
        WavReader(data_dir / "events" / "nmnist_tonic.bin")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(RecordingError, match="not a WAV"):
        WavReader(empty)
    with pytest.raises(RecordingError, match="no such file"):
        WavReader(tmp_path / "missing.wav")
    header_cut = tmp_path / "h.wav"
    header_cut.write_bytes((data_dir / "audio" / "fsdd" / "0_george_0.wav").read_bytes()[:20])
    with pytest.raises(RecordingError, match="damaged WAV header"):
        WavReader(header_cut)


def test_float_wav_is_rejected_clearly(tmp_path):
    data = np.zeros(8, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "float.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(RecordingError, match="integer PCM"):
        WavReader(path)
