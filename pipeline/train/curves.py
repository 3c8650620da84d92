"""The loss/accuracy curves of a training run as a PNG (OpenCV drawing; no plotting library needed).

Two panels side by side over epochs: the training loss, and the accuracies (every history key ending in
``accuracy``, 0..1, e.g. ``accuracy`` on the training set and ``test_accuracy``), each panel with its
axis range written at the corners.
"""
from __future__ import annotations

import cv2
import numpy as np

WIDTH, HEIGHT, MARGIN = 480, 320, 40
COLOURS = [(200, 80, 30), (40, 160, 40), (30, 30, 200), (160, 40, 160)]  # BGR


def _panel(title: str, epochs: np.ndarray, series: dict[str, np.ndarray], low: float | None, high: float | None):
    image = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    values = np.concatenate([v[np.isfinite(v)] for v in series.values()] or [np.zeros(1)])
    lo = float(values.min()) if low is None else low
    hi = float(values.max()) if high is None else high
    if hi <= lo:
        hi = lo + 1.0
    x0, x1, y0, y1 = MARGIN, WIDTH - 10, HEIGHT - MARGIN, 30
    cv2.rectangle(image, (x0, y1), (x1, y0), (0, 0, 0), 1)
    span = max(float(epochs.max() - epochs.min()), 1.0) if epochs.size else 1.0

    def point(e, v):
        return (int(x0 + (e - epochs.min()) / span * (x1 - x0)), int(y0 - (v - lo) / (hi - lo) * (y0 - y1)))

    for k, (name, v) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        pts = [point(e, value) for e, value in zip(epochs, v) if np.isfinite(value)]
        for a, b in zip(pts, pts[1:]):
            cv2.line(image, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(image, p, 3, colour, -1, cv2.LINE_AA)
        cv2.putText(image, name, (x0 + 8, y1 + 18 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(image, title, (x0, 20), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"{hi:.3g}", (2, y1 + 10), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"{lo:.3g}", (2, y0), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    if epochs.size:
        cv2.putText(image, f"epoch {int(epochs.min())}", (x0, y0 + 18), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, f"{int(epochs.max())}", (x1 - 20, y0 + 18), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return image


def curves_png(history: list[dict]) -> bytes:
    """PNG bytes of the loss (left) and accuracy (right) curves of ``history`` (one dict per epoch with
    ``epoch``, ``loss`` and keys ending in ``accuracy``)."""
    epochs = np.array([h.get("epoch", i) for i, h in enumerate(history)], dtype=np.float64)

    def column(key):
        return np.array([float(h.get(key, np.nan)) for h in history], dtype=np.float64)

    accuracy_keys = sorted({k for h in history for k in h if k.endswith("accuracy")})
    left = _panel("loss", epochs, {"loss": column("loss")}, None, None)
    right = _panel("accuracy", epochs, {k: column(k) for k in accuracy_keys}, 0.0, 1.0)
    ok, encoded = cv2.imencode(".png", np.hstack([left, right]))
    if not ok:
        raise ValueError("could not encode the curves as PNG")
    return encoded.tobytes()
