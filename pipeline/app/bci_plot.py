"""PNG of decoded vs true kinematics, one panel per axis, drawn with OpenCV."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TRUE_BGR = (60, 60, 60)
DECODED_BGR = (40, 110, 230)


def _panel(img, top, height, left, width, true, dec, label, r2):
    lo = min(true.min(), dec.min())
    hi = max(true.max(), dec.max())
    span = hi - lo if hi > lo else 1.0
    cv2.rectangle(img, (left, top), (left + width, top + height), (180, 180, 180), 1)
    if lo < 0 < hi:
        y0 = int(top + height - (0 - lo) / span * height)
        cv2.line(img, (left, y0), (left + width, y0), (215, 215, 215), 1)
    xs = left + np.arange(len(true)) * width / max(len(true) - 1, 1)
    for series, colour in ((true, TRUE_BGR), (dec, DECODED_BGR)):
        ys = top + height - (series - lo) / span * height
        pts = np.stack([xs, ys], axis=1).round().astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
    cv2.putText(img, f"{label}   R^2 = {r2:.3f}   [{lo:.3g}, {hi:.3g}]", (left + 6, top + 18),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)


def plot_decoded(path: str | Path, true: np.ndarray, decoded: np.ndarray, r2: np.ndarray, axes: tuple[str, ...],
                 bin_us: int, title: str) -> Path:
    """Write a PNG with one panel per kinematic axis: true (grey) and decoded (orange) over bins.

    true, decoded: (T, d); r2: (d,); axes: names (d,); bin_us: bin width (µs) for the time axis label."""
    path = Path(path)
    d = true.shape[1]
    width, panel_h, margin = 1200, 220, 40
    img = np.full((margin + d * (panel_h + margin), width, 3), 255, np.uint8)
    cv2.putText(img, title, (margin, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    for i in range(d):
        top = margin + i * (panel_h + margin)
        _panel(img, top, panel_h, margin, width - 2 * margin, true[:, i], decoded[:, i], axes[i], float(r2[i]))
    seconds = len(true) * bin_us / 1e6
    legend = f"grey: true   orange: decoded   {len(true)} bins" + (f" = {seconds:.1f} s" if bin_us else "")
    cv2.putText(img, legend, (margin, img.shape[0] - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: could not write PNG")
    return path
