"""``spikeloop audio``: a WAV file (or the microphone) through the cochlea -> AER spikes.

  spikeloop audio FILE.wav [--method lif|delta] [--channels 64] [--png raster.png] [--out spikes.npy] [--json]
  spikeloop audio --mic [--duration 5] ...      (needs the optional sounddevice package)
"""
from __future__ import annotations

import json

import numpy as np

from pipeline.app.errors import check_output_path, fail, write_atomically
from pipeline.app.sources import SourceSpecError, open_source, parse_source_spec, with_defaults
from pipeline.core.events import empty_spikes

#: Audio per packet (ms) when streaming a file or the microphone through the cochlea here.
PACKET_MS = 10.0


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("audio", help=summary,
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", nargs="?", help="WAV file (integer PCM)")
    parser.add_argument("--mic", action="store_true", help="use the default microphone instead of a file")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds to capture with --mic (default 5)")
    parser.add_argument("--method", choices=("lif", "delta"), default="lif", help="spike encoder (default lif)")
    parser.add_argument("--channels", type=int, default=64, help="filterbank channels (default 64)")
    parser.add_argument("--f-lo", type=float, default=100.0, help="lowest centre frequency, Hz (default 100)")
    parser.add_argument("--f-hi", type=float, default=3600.0, help="highest centre frequency, Hz (default 3600)")
    parser.add_argument("--png", "--plot", dest="png", metavar="PNG",
                        help="write a spike raster (time x channel) to this PNG")
    parser.add_argument("--out", help="write the spikes (timestamp µs, channel) to this .npy file")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)


def run(args) -> int:
    if bool(args.wav) == bool(args.mic):
        return fail("audio", "give a WAV file or --mic (one of them)")
    for flag, path in (("--png", args.png), ("--out", args.out)):
        problem = path and check_output_path(path, flag)
        if problem:
            return fail("audio", problem)
    table = with_defaults({**parse_source_spec("mic" if args.mic else args.wav), "type": "audio",
                           "n_channels": args.channels, "f_lo_hz": args.f_lo, "f_hi_hz": args.f_hi,
                           "method": args.method})
    try:
        source = open_source(table, fast=True, chunk_us=round(PACKET_MS * 1000))
    except SourceSpecError as error:
        return fail("audio", str(error))
    parts, t_end = [], 0
    try:
        for packet in source.packets():
            parts.append(packet.events)
            t_end = packet.t_end_us
            if args.mic and t_end >= args.duration * 1e6:
                break
    except KeyboardInterrupt:
        pass
    finally:
        source.close()
    spikes = np.concatenate(parts) if parts else empty_spikes()
    seconds = t_end / 1e6
    summary = {
        "source": source.info.name, "sample_rate_hz": source.sample_rate_hz, "seconds": seconds,
        "channels": source.info.channels, "spikes": int(len(spikes)),
        "spikes_per_s": len(spikes) / seconds if seconds else 0.0,
        "active_channels": int(len(np.unique(spikes["channel"]))),
    }
    if args.out:
        write_atomically(args.out, lambda handle: np.save(handle, spikes))
    if args.png:
        write_raster(args.png, spikes, source.info.channels, t_end)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{summary['source']}: {seconds:.2f} s of audio -> {summary['spikes']:,} spikes "
              f"({summary['spikes_per_s']:.0f}/s) on {summary['active_channels']} of {summary['channels']} channels")
    return 0


def write_raster(path: str, spikes: np.ndarray, channels: int, t_end_us: int, width: int = 800) -> None:
    """Spike raster PNG: time left to right, channel 0 (lowest frequency) at the bottom."""
    import cv2  # a third-party import paid only when a raster is drawn

    row_px = max(2, 400 // max(channels, 1))
    height = channels * row_px
    image = np.full((height + 30, width, 3), 255, np.uint8)
    if len(spikes) and t_end_us > 0:
        cols = np.minimum((spikes["timestamp"] * (width - 1) // t_end_us).astype(np.int64), width - 1)
        rows = height - 1 - spikes["channel"].astype(np.int64) * row_px
        for dy in range(row_px - 1):
            image[np.clip(rows - dy, 0, height - 1), cols] = (40, 40, 40)
    cv2.putText(image, f"0 .. {t_end_us / 1e6:.2f} s   channels 0 (low) .. {channels - 1} (high)",
                (5, height + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{path}: could not encode the raster as PNG")
    write_atomically(path, lambda handle: handle.write(png.tobytes()))
