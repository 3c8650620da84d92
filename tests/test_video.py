"""pipeline.app.video: H.264 (PyAV) and mp4v (OpenCV) MP4s, decoded by the other library."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.app.video import VideoWriter


def frames(n: int, width: int = 320, height: int = 240) -> list[np.ndarray]:
    """Flat colour frames whose blue channel counts up (a decoder must give them back in order)."""
    return [np.full((height, width, 3), (20 + 10 * i, 128, 60), np.uint8) for i in range(n)]


@pytest.mark.parametrize("codec", ["h264", "mp4v"])
def test_written_frames_decode_in_order(tmp_path, codec):
    path = tmp_path / "v.mp4"
    writer = VideoWriter(path, (320, 240), 30.0, codec=codec)
    for frame in frames(20):
        writer.write(frame)
    assert not path.exists()  # only the finished file gets the name
    writer.close()
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    if codec == "h264":
        capture = cv2.VideoCapture(str(path))  # the other library decodes it
        decoded = []
        while True:
            ok, image = capture.read()
            if not ok:
                break
            decoded.append(image)
    else:
        import av

        with av.open(str(path)) as container:
            decoded = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(decoded) == 20
    blues = [int(np.median(image[..., 0])) for image in decoded]
    assert all(abs(b - (20 + 10 * i)) <= 6 for i, b in enumerate(blues)), blues
    if codec == "h264":
        import av

        with av.open(str(path)) as container:
            assert container.streams.video[0].codec_context.name == "h264"


def test_view_renders_the_accumulated_events_headless(tmp_path):
    """spikeloop view --mp4/--png: 10 frames of 100 ms over 1 s (from the first event after --start); the last frame's coloured pixels are exactly
    the pixels of the events in its last 20 ms, ON green and OFF red by the latest event (computed here from
    the recording with numpy)."""
    import subprocess
    import sys
    from pathlib import Path

    from recordings.detect import open_recording

    root = Path(__file__).resolve().parent.parent
    sample = root / "recordings" / "samples" / "moving_bars.aedat4"
    mp4, png = tmp_path / "v.mp4", tmp_path / "v.png"
    run = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "view", str(sample), "--mp4", str(mp4), "--png",
                          str(png), "--fps", "10", "--accumulate-ms", "20", "--duration", "1", "--start", "0.5"],
                         capture_output=True, text=True, cwd=root, timeout=300,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "10 frames of 100 ms" in run.stderr
    with open_recording(sample) as reader:
        events = np.concatenate(list(reader.chunks()))
    start = events["timestamp"][events["timestamp"] >= events["timestamp"][0] + 500_000][0]  # frames start here
    t_end = int(start) + 1_000_000
    last = events[(events["timestamp"] >= t_end - 20_000) & (events["timestamp"] < t_end)]
    expected = np.zeros((128, 128), np.int8)  # 0 none, 1 ON, -1 OFF; the latest event wins
    expected[last["y"], last["x"]] = np.where(last["polarity"] > 0, 1, -1)
    image = cv2.imread(str(png))[::2, ::2]  # drawn at 2x
    got = np.where(image[..., 1] > 200, 1, np.where(image[..., 2] > 200, -1, 0))
    assert len(last) > 50 and np.array_equal(got, expected)
    capture = cv2.VideoCapture(str(mp4))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
