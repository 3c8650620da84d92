"""Event preprocessing stages: filters, pooling, time binning into SNN input indices.

Every stage is a class whose instance is callable ``stage(events) -> events`` (DVS_EVENT_DTYPE arrays,
state kept across calls, numba kernels inside), built from plain keyword parameters plus the input
``width``/``height``, so launch files can name them through ``STAGES``. ``StepBinner`` turns the final
events into per-step active input indices for the network.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from pipeline.stages._common import Stage
from pipeline.stages.binning import StepBatch, StepBinner
from pipeline.stages.chain import Chain
from pipeline.stages.chain import build_chain as _build_chain
from pipeline.stages.hotpixel import HotPixelMask
from pipeline.stages.noise import BackgroundActivityFilter
from pipeline.stages.polarity import PolaritySelect
from pipeline.stages.pooling import SpatialPooling
from pipeline.stages.refractory import RefractoryFilter
from pipeline.stages.roi import RoiCrop

#: Stage type name (as written in launch files) -> class.
STAGES: dict[str, type[Stage]] = {
    "noise_filter": BackgroundActivityFilter,
    "refractory": RefractoryFilter,
    "roi": RoiCrop,
    "polarity": PolaritySelect,
    "hot_pixels": HotPixelMask,
    "pooling": SpatialPooling,
}


def build_chain(specs: Iterable[Mapping], width: int, height: int) -> Chain:
    """A Chain of ``STAGES`` from specs like ``[{"type": "roi", "x": 0, ...}]`` for a width x height sensor."""
    return _build_chain(STAGES, specs, width, height)


__all__ = [
    "STAGES", "Stage", "Chain", "build_chain", "StepBatch", "StepBinner", "BackgroundActivityFilter",
    "RefractoryFilter", "RoiCrop", "PolaritySelect", "HotPixelMask", "SpatialPooling",
]
