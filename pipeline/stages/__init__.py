"""Event preprocessing stages: filters, pooling, time binning into SNN input indices.

A stage is described by a frozen config (``BackgroundActivityFilter(duration_us=2000)``, changed with
``dataclasses.replace``), and runs as part of one :class:`Chain` built from configs for a sensor::

    chain = Chain([RefractoryFilter(1000), SpatialPooling(target=(16, 12))], width=346, height=260)
    chain.warmup()              # compile every kernel before the clock starts
    events = chain(events)      # DVS_EVENT_DTYPE (n,) -> the kept events, 16 x 12 px

Launch files name configs by ``STAGES`` key; :func:`describe` lists every stage's parameters with type,
default, unit and help. ``StepBinner`` turns the final events into per-step active input indices for
the network.
"""
from __future__ import annotations

from pipeline.stages.binning import StepBatch, StepBinner
from pipeline.stages.chain import Chain, ChainError
from pipeline.stages.hotpixel import HotPixelMask, masked_pixels
from pipeline.stages.noise import BackgroundActivityFilter
from pipeline.stages.polarity import PolaritySelect
from pipeline.stages.pooling import SpatialPooling
from pipeline.stages.refractory import RefractoryFilter
from pipeline.stages.roi import RoiCrop
from pipeline.stages.stage import ParamInfo, Stage, StageConfig, StageInfo

#: Stage type name (as written in launch files) -> config class.
STAGES: dict[str, type[StageConfig]] = {
    config.name: config
    for config in (BackgroundActivityFilter, RefractoryFilter, RoiCrop, PolaritySelect, HotPixelMask, SpatialPooling)
}


def describe() -> dict[str, StageInfo]:
    """Every stage by launch-file type name: config class, one-line summary, and each parameter's type,
    default (None when required), unit and help."""
    return {name: config.describe() for name, config in STAGES.items()}


__all__ = [
    "STAGES", "BackgroundActivityFilter", "Chain", "ChainError", "HotPixelMask", "ParamInfo", "PolaritySelect",
    "RefractoryFilter", "RoiCrop", "SpatialPooling", "Stage", "StageConfig", "StageInfo", "StepBatch", "StepBinner",
    "describe", "masked_pixels",
]
