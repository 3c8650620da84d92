"""Generate ``voice_commands.wav``, the default source of ``launch/voice_drive.toml``: five FSDD test
recordings of speaker jackson (index 0 of the digits one, three, four, two, zero: FSDD's official split
keeps indices 0-4 out of training), each at RMS 0.05, 0.3 s of silence before the first and 0.5 s after
each. 8 kHz 16-bit mono, ~4.5 s. The Free Spoken Digit Dataset (Jakobovski et al.) is CC BY-SA 4.0.

    python recordings/samples/voice_commands.py [OUT.wav]     # reads $SPIKELOOP_DATA/audio/fsdd
"""
from __future__ import annotations

import sys
from pathlib import Path

from recordings.datasets import shared_data_dir
from recordings.wav import word_sequence, write_wav

DIGITS = (1, 3, 4, 2, 0)
SPEAKER, INDEX = "jackson", 0
GAP_S, LEAD_S, RMS = 0.5, 0.3, 0.05


def main(out: str | Path = Path(__file__).with_name("voice_commands.wav")) -> None:
    folder = shared_data_dir() / "audio" / "fsdd"
    samples, rate, _ = word_sequence([folder / f"{d}_{SPEAKER}_{INDEX}.wav" for d in DIGITS], GAP_S, LEAD_S, RMS)
    write_wav(out, samples, rate)


if __name__ == "__main__":
    main(*sys.argv[1:])
