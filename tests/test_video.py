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
