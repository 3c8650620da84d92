"""The training-curve PNG (pipeline.train.curves): legends outside the plotted data, and an ensemble's members
drawn as separate curve pieces. The plot area is found in the decoded image itself (its black frame), and
curves and legends by their saturated colours (background, frame, text and member separators are grey)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.train.curves import PLOT_HEIGHT, WIDTH, curves_png


def _decode(history: list[dict]) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(curves_png(history), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[1] == 2 * WIDTH
    return image


def _frame(panel: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the panel's plot frame: its black sides and top line (the histories here
    keep the top line clear of curves; the frame is PLOT_HEIGHT px high)."""
    black = panel.max(axis=2) < 60
    cols = np.flatnonzero(black.sum(axis=0) > 0.5 * panel.shape[0])
    assert len(cols) >= 2
    rows = np.flatnonzero(black[:, cols[0]:cols[-1] + 1].mean(axis=1) > 0.5)
    assert len(rows)
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[0]) + PLOT_HEIGHT


def _coloured(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(np.int64)
    return pixels.max(axis=-1) - pixels.min(axis=-1) > 60


@pytest.mark.parametrize("keys", [("accuracy", "test_accuracy"),
                                  tuple(f"held_out_set_{k}_accuracy" for k in range(5))])
def test_the_legend_is_outside_the_plot_area(keys):
    # every curve lies on the bottom edge (constant loss, accuracy 0), so the upper half of each plot
    # area holds nothing a legend could cover; the legend must be above the frame, not inside it
    history = [{"epoch": e, "loss": 1.0, **{k: 0.0 for k in keys}} for e in range(1, 11)]
    image = _decode(history)
    for panel, names in ((image[:, :WIDTH], ["loss"]), (image[:, WIDTH:], keys)):
        left, top, right, bottom = _frame(panel)
        upper = panel[top + 2:(top + bottom) // 2, left + 2:right - 1]
        assert not _coloured(upper).any(), "something coloured (a legend) inside the plot area"
        assert _coloured(panel[:top]).sum() > 40 * len(names), "no legend above the plot area"
        assert _coloured(panel[bottom - 3:bottom + 4, left:right + 1]).any(axis=0).mean() > 0.9, "no curves"


def test_an_ensembles_members_are_separate_curve_pieces():
    ramp = (0.2, 0.5, 0.9)
    history = [{"epoch": 3 * m + i + 1, "member": m, "loss": 2.0 - a, "accuracy": a}
               for m in range(2) for i, a in enumerate(ramp)]
    panel = _decode(history)[:, WIDTH:]
    left, top, right, bottom = _frame(panel)
    # epochs 1..6 span the frame; member 0 ends at epoch 3, member 1 starts at epoch 4: halfway between
    # them (epoch 3.5) a joined curve would cross from 0.9 down to 0.2
    middle = left + (right - left) // 2
    gap = panel[top + 2:bottom - 1, middle - 4:middle + 5]
    assert not _coloured(gap).any(), "the members' curves are joined"
    assert (gap == 200).all(axis=2).any(), "no separator between the members"
    for epoch in (3, 4):                    # both pieces are drawn up to the gap
        x = left + round((epoch - 1) / 5 * (right - left))
        assert _coloured(panel[top:bottom + 1, x - 2:x + 3]).any()


def test_empty_and_single_epoch_histories_draw():
    assert _decode([]).shape[0] > 0
    single = _decode([{"epoch": 1, "loss": 0.5, "accuracy": 0.5}])[:, WIDTH:]
    left, top, right, bottom = _frame(single)
    assert _coloured(single[top + 2:bottom - 1, left + 2:right - 1]).any()   # a lone point shows as a dot
