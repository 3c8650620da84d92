"""The one composite of stages: a Chain built from stage configs for a sensor, used by launch files, the
loop, tests and benches alike."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline.core.checks import check_resolution
from pipeline.stages._common import event_words, words_to_events
from pipeline.stages.stage import Stage, StageConfig


class ChainError(ValueError):
    """A config of a Chain does not fit the resolution it receives; ``position`` is its index in the chain
    and ``error`` the stage's own ``"<stage>: parameter '<key>' ..."`` ValueError."""

    def __init__(self, position: int, error: ValueError):
        super().__init__(f"stages[{position}]: {error}")
        self.position = position
        self.error = error


class Chain:
    """DVS events through stages in order: ``chain(events) -> events``.

    configs: stage configs (:class:`pipeline.stages.StageConfig`), applied in order; each is bound to the
        resolution the previous one emits, starting from the width x height sensor (px). No configs make
        the identity.
    ``stages`` are the bound :class:`pipeline.stages.Stage` objects (their ``state`` persists across calls),
    ``output_resolution`` the (width, height) in px of what the chain emits. Raises ChainError when a config
    does not fit its input (e.g. a crop larger than the sensor).
    """

    def __init__(self, configs: Iterable[StageConfig], width: int, height: int):
        self.configs = tuple(configs)
        self.width, self.height = check_resolution("chain", width, height)
        stages = []
        for position, config in enumerate(self.configs):
            if not isinstance(config, StageConfig):
                raise TypeError(f"chain: stages[{position}] must be a stage config (pipeline.stages.STAGES), "
                                f"got {config!r}")
            try:
                stage = Stage(config, width, height)
            except ValueError as error:
                raise ChainError(position, error) from None
            width, height = stage.output_resolution
            stages.append(stage)
        self.stages = tuple(stages)
        self.output_resolution = (width, height)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        """events: DVS_EVENT_DTYPE, shape (n,), time-ordered, inside the sensor; returns the events every
        stage kept, in the output resolution."""
        if not self.stages:
            return events
        words = event_words(events)
        for stage in self.stages:
            out, count = stage.apply_words(words)
            words = out[:count]
        return words_to_events(words, len(words))

    def warmup(self) -> None:
        """Compile (or load from the numba cache) every stage's kernel on an empty packet, before any
        real-time clock starts; no state changes."""
        for stage in self.stages:
            stage.warmup()

    def reset(self) -> None:
        """Every stage's state as just after construction."""
        for stage in self.stages:
            stage.reset()

    def __len__(self) -> int:
        return len(self.stages)

    def __repr__(self) -> str:
        inner = ", ".join(repr(config) for config in self.configs)
        return f"Chain([{inner}], {self.width}, {self.height})"
