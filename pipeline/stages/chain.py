"""Compose stages: a Chain is itself a stage, and ``build_chain`` makes one from launch-file specs."""
from __future__ import annotations

import inspect
from typing import Iterable, Mapping

import numpy as np

from pipeline.core.checks import check_resolution
from pipeline.stages._common import Stage


class Chain(Stage):
    """Apply stages in order; each stage's input resolution must equal the previous one's output."""

    name = "chain"

    def __init__(self, stages: Iterable[Stage]):
        self.stages = tuple(stages)
        if not self.stages:
            raise ValueError("chain: needs at least one stage")
        for before, after in zip(self.stages, self.stages[1:]):
            if before.output_resolution != (after.width, after.height):
                raise ValueError(
                    f"chain: {after.name} expects {after.width}x{after.height} input but {before.name} emits "
                    f"{before.output_resolution[0]}x{before.output_resolution[1]}")
        super().__init__(self.stages[0].width, self.stages[0].height)

    @property
    def output_resolution(self) -> tuple[int, int]:
        return self.stages[-1].output_resolution

    def reset(self) -> None:
        for stage in self.stages:
            stage.reset()

    def __call__(self, events: np.ndarray) -> np.ndarray:
        for stage in self.stages:
            events = stage(events)
        return events


def build_stage(registry: Mapping[str, type], kind: str, width: int, height: int, params: Mapping, where: str):
    """One stage of type ``kind`` for a width x height input; errors start with ``where`` (e.g. "stages[2]")."""
    if kind not in registry:
        raise ValueError(f"{where}: unknown stage type {kind!r} (expected one of {', '.join(sorted(registry))})")
    cls = registry[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "width", "height"}
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ValueError(f"{where} ({kind}): unknown parameter(s) {', '.join(unknown)} "
                         f"(expected some of {', '.join(sorted(accepted))})")
    try:
        return cls(width=width, height=height, **params)
    except TypeError as error:
        raise ValueError(f"{where} ({kind}): {error}") from None
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def build_chain(registry: Mapping[str, type], specs: Iterable[Mapping], width: int, height: int) -> Chain:
    """A Chain from specs like ``[{"type": "noise_filter", "duration_us": 2000}, ...]`` for a sensor of
    width x height px; each stage gets the resolution the previous stage emits."""
    width, height = check_resolution("chain", width, height)
    stages = []
    for position, spec in enumerate(specs):
        where = f"stages[{position}]"
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise ValueError(f"{where}: expected a table with a 'type' key, got {spec!r}")
        params = {key: value for key, value in spec.items() if key != "type"}
        stage = build_stage(registry, spec["type"], width, height, params, where)
        width, height = stage.output_resolution
        stages.append(stage)
    return Chain(stages)
