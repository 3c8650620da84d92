"""The loss/accuracy curves of a training run as a PNG (OpenCV drawing; no plotting library needed).

Two panels side by side over epochs: the training loss, and the accuracies (every history key ending in
``accuracy``, 0..1, e.g. ``accuracy`` on the training set and ``test_accuracy``), each panel with its
axis range written at the corners. Each panel's legend is a row above its plot area, so it never covers a
point. An ensemble's history (records tagged ``member``: the seed offset a network was trained from) is
drawn as one curve piece per member, not joined across members, with a grey line between members and the
seed offset ("seed +k") under each piece. Points are marked with dots only while they are far enough apart
to be told from one another.
"""
from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import cv2
import numpy as np

WIDTH = 480                                    #: panel width (px)
PLOT_LEFT, PLOT_RIGHT = 40, WIDTH - 10         #: plot area columns (px)
PLOT_HEIGHT = 250                              #: plot area height (px)
TITLE_HEIGHT, LEGEND_ROW = 26, 18              #: header rows (px): the title, then each legend row
COLOURS = [(200, 80, 30), (40, 160, 40), (30, 30, 200), (160, 40, 160), (0, 140, 230), (130, 130, 0)]  # BGR
SEPARATOR = (200, 200, 200)                    #: BGR of the line between ensemble members
DOT_SPACING = 8                                #: least distance between points (px) for them to get dots
FONT = cv2.FONT_HERSHEY_SIMPLEX


class Layout(NamedTuple):
    """Where a panel draws (px): the plot area's left, top, right and bottom edges, and the panel height."""

    left: int
    top: int
    right: int
    bottom: int
    height: int


def _layout(legend_rows: int, members: bool) -> Layout:
    """The panel layout for a legend of ``legend_rows`` rows above the plot area, and a row of member labels
    under the epoch labels when ``members``."""
    top = TITLE_HEIGHT + LEGEND_ROW * legend_rows + 6
    bottom = top + PLOT_HEIGHT
    return Layout(PLOT_LEFT, top, PLOT_RIGHT, bottom, bottom + (40 if members else 26))


def _legend_entries(names: list[str]) -> list[list[tuple[int, str, int]]]:
    """Legend rows of (series index, name, left edge in px) that fit the panel width; an entry is a 16 px
    colour swatch, 6 px, the name, 14 px."""
    rows: list[list[tuple[int, str, int]]] = [[]]
    x = PLOT_LEFT
    for k, name in enumerate(names):
        width = 22 + cv2.getTextSize(name, FONT, 0.45, 1)[0][0] + 14
        if rows[-1] and x + width > PLOT_RIGHT:
            rows.append([])
            x = PLOT_LEFT
        rows[-1].append((k, name, x))
        x += width
    return rows


def _pieces(members: np.ndarray) -> list[slice]:
    """Consecutive runs of records of one member (the whole history when untagged)."""
    starts = [0] + [i for i in range(1, len(members)) if members[i] != members[i - 1]]
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [len(members)])]


def _panel(title: str, epochs: np.ndarray, members: np.ndarray, series: dict[str, np.ndarray],
           low: float | None, high: float | None, box: Layout, legend: list[list[tuple[int, str, int]]]) -> np.ndarray:
    image = np.full((box.height, WIDTH, 3), 255, np.uint8)
    values = np.concatenate([v[np.isfinite(v)] for v in series.values()] + [np.zeros(0)])
    if values.size == 0:                       # e.g. a method without a loss (STDP reports NaN)
        values = np.zeros(1)
    lo = float(values.min()) if low is None else low
    hi = float(values.max()) if high is None else high
    if hi <= lo:
        hi = lo + 1.0
    x0, x1, y0, y1 = box.left, box.right, box.bottom, box.top
    span = max(float(epochs.max() - epochs.min()), 1.0) if epochs.size else 1.0

    def point(e, v):
        return (int(x0 + (e - epochs.min()) / span * (x1 - x0)), int(y0 - (v - lo) / (hi - lo) * (y0 - y1)))

    pieces = _pieces(members)
    tagged = not np.all(members == -1)
    for before, after in pairwise(pieces):
        x = (point(epochs[before.stop - 1], lo)[0] + point(epochs[after.start], lo)[0]) // 2
        cv2.line(image, (x, y1), (x, y0), SEPARATOR, 1)
    cv2.rectangle(image, (x0, y1), (x1, y0), (0, 0, 0), 1)
    dots = (x1 - x0) / max(len(np.unique(epochs)) - 1, 1) >= DOT_SPACING
    for k, v in enumerate(series.values()):
        colour = COLOURS[k % len(COLOURS)]
        for piece in pieces:
            pts = [point(e, value) for e, value in zip(epochs[piece], v[piece]) if np.isfinite(value)]
            for a, b in pairwise(pts):
                cv2.line(image, a, b, colour, 2, cv2.LINE_AA)
            if dots or len(pts) == 1:              # a lone point shows only as a dot
                for p in pts:
                    cv2.circle(image, p, 3, colour, -1, cv2.LINE_AA)
    cv2.putText(image, title, (x0, 20), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for row, entries in enumerate(legend):
        y = TITLE_HEIGHT + LEGEND_ROW * row + 9
        for k, name, x in entries:
            colour = COLOURS[k % len(COLOURS)]
            cv2.line(image, (x, y), (x + 16, y), colour, 2, cv2.LINE_AA)
            cv2.putText(image, name, (x + 22, y + 5), FONT, 0.45, colour, 1, cv2.LINE_AA)
    cv2.putText(image, f"{hi:.3g}", (2, y1 + 10), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"{lo:.3g}", (2, y0), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    if epochs.size:
        cv2.putText(image, f"epoch {int(epochs.min())}", (x0, y0 + 18), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, f"{int(epochs.max())}", (x1 - 20, y0 + 18), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    if tagged:
        spans = [(point(epochs[p.start], lo)[0], point(epochs[p.stop - 1], lo)[0], int(members[p.start]))
                 for p in pieces]
        long_form = all(cv2.getTextSize(f"seed +{k}", FONT, 0.36, 1)[0][0] <= right - left + 8
                        for left, right, k in spans)
        for left, right, k in spans:               # "+k" under every piece when one is too narrow for "seed +k"
            text = f"seed +{k}" if long_form else f"+{k}"
            width = cv2.getTextSize(text, FONT, 0.36, 1)[0][0]
            cv2.putText(image, text, ((left + right - width) // 2, y0 + 34), FONT, 0.36, (90, 90, 90), 1, cv2.LINE_AA)
    return image


def curves_png(history: list[dict]) -> bytes:
    """PNG bytes of the loss (left) and accuracy (right) curves of ``history`` (one dict per epoch with
    ``epoch``, ``loss``, keys ending in ``accuracy`` and, in an ensemble's history, ``member``)."""
    epochs = np.array([h.get("epoch", i) for i, h in enumerate(history)], dtype=np.float64)
    members = np.array([h.get("member", -1) for h in history], dtype=np.int64)

    def column(key):
        return np.array([float(h.get(key, np.nan)) for h in history], dtype=np.float64)

    accuracy_keys = sorted({k for h in history for k in h if k.endswith("accuracy")})
    legends = _legend_entries(["loss"]), _legend_entries(accuracy_keys)
    box = _layout(max(len(rows) for rows in legends), bool(np.any(members != -1)))
    left = _panel("loss", epochs, members, {"loss": column("loss")}, None, None, box, legends[0])
    right = _panel("accuracy", epochs, members, {k: column(k) for k in accuracy_keys}, 0.0, 1.0, box, legends[1])
    ok, encoded = cv2.imencode(".png", np.hstack([left, right]))
    if not ok:
        raise ValueError("could not encode the curves as PNG")
    return encoded.tobytes()
