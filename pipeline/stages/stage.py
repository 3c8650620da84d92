"""What a stage is: a frozen config, the kernel parameters and state it makes for an input resolution, and
the runtime object that ties them to a numba kernel.

A config (``@dataclass(frozen=True)`` subclass of :class:`StageConfig`, changed with
``dataclasses.replace``) holds the parameters a launch file sets and checks them in ``__post_init__``;
every rejection reads ``"<stage>: parameter '<key>' ..."`` so launch can name file, section and key. Its
fields are declared with :func:`param` (one line of help and a unit each), which is what :func:`describe`
and the launch schema read. ``config.build(width, height)`` binds it to an input resolution: a
:class:`Stage` holding the kernel's parameter NamedTuple (checked against the resolution), the streaming
state NamedTuple of arrays, and the output resolution.

Each stage module has one pure kernel ``kernel(words, state, params, out) -> int``: it reads the (n, 2)
int64 event words, updates the arrays in ``state`` in place, writes the kept events to ``out`` and
returns how many, or -(i+1) when event i lies outside the input resolution. Numba types a plain tuple
in C but a NamedTuple in Python (about 1.5 µs per argument per call, 10 % of a 10 k-event packet), so
the runtime calls the module's ``entry``: the same kernel behind plain-tuple arguments.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np

from pipeline.core.checks import check_resolution
from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.core.schema import annotation_expectation
from pipeline.stages._common import event_words, new_word_buffer, raise_out_of_range, words_to_events


def param(default: Any = dataclasses.MISSING, *, help: str, unit: str = "") -> Any:
    """A config field with one line of ``help`` and its ``unit`` ("µs", "px", "Hz", "" for none);
    without ``default`` the field is required."""
    return dataclasses.field(default=default, metadata={"help": help, "unit": unit})


class ParamInfo(NamedTuple):
    """One config field as ``spikeloop list`` shows it: what a launch file gives, in the schema's words
    (``an integer``, ``a list of 2 integers``: :func:`pipeline.core.schema.annotation_expectation` of the
    field's annotation), default (None when required), unit and help."""

    name: str
    expectation: str
    required: bool
    default: Any
    unit: str
    help: str


class StageInfo(NamedTuple):
    """A stage as launch files name it: ``type`` name, config class, one-line summary, parameters."""

    name: str
    config: type
    summary: str
    params: tuple[ParamInfo, ...]


class StageConfig:
    """Base of the frozen stage configs. Subclasses set ``name`` (the launch-file type), ``entry`` (the
    kernel behind plain tuples, as a staticmethod) and override the three binding methods."""

    name: ClassVar[str] = "stage"
    entry: ClassVar[Callable[..., int]]

    def kernel_params(self, width: int, height: int) -> tuple:
        """The kernel's parameter NamedTuple for a width x height (px) input; a ValueError in the
        ``"<stage>: parameter '<key>' ..."`` form when the config does not fit that resolution."""
        raise NotImplementedError

    def initial_state(self, params: tuple) -> tuple:
        """A fresh state NamedTuple of arrays for ``params`` (stateless stages: an empty NamedTuple)."""
        raise NotImplementedError

    def output_resolution(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) in px of the events emitted for a width x height input."""
        return width, height

    def build(self, width: int, height: int) -> Stage:
        """This config bound to a width x height (px) input, ready to run."""
        return Stage(self, width, height)

    @classmethod
    def describe(cls) -> StageInfo:
        """Name, summary and every parameter (expectation, default, unit, help) read from the dataclass fields."""
        params = []
        for field in dataclasses.fields(cls):
            required = field.default is dataclasses.MISSING
            params.append(ParamInfo(field.name, annotation_expectation(str(field.type)), required,
                                    None if required else field.default, field.metadata["unit"],
                                    field.metadata["help"]))
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        return StageInfo(cls.name, cls, summary, tuple(params))


class Stage:
    """A config bound to an input resolution: ``stage(events) -> events`` with state kept across calls.

    events: DVS_EVENT_DTYPE, shape (n,), time-ordered; the result is a new array of the kept (and, for
    roi/pooling, re-addressed) events. ``params`` and ``output_resolution`` are fixed at construction;
    ``state`` persists across calls until :meth:`reset`.
    """

    def __init__(self, config: StageConfig, width: int, height: int):
        self.config = config
        self.width, self.height = check_resolution(config.name, width, height)
        self.params = config.kernel_params(self.width, self.height)
        self.output_resolution = config.output_resolution(self.width, self.height)
        self._entry = config.entry
        self._param_args = tuple(self.params)
        self.reset()

    @property
    def state(self) -> tuple:
        """The streaming state NamedTuple (its arrays change in place as events pass)."""
        return self._state

    def reset(self) -> None:
        """Fresh state, as just after construction."""
        self._state = self.config.initial_state(self.params)
        self._state_args = tuple(self._state)

    def warmup(self) -> None:
        """Compile (or load from the numba cache) the kernel on an empty packet; the state does not change."""
        self(np.zeros(0, DVS_EVENT_DTYPE))

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return words_to_events(*self.apply_words(event_words(events)))

    def apply_words(self, words: np.ndarray) -> tuple[np.ndarray, int]:
        """The stage on events viewed as words (int64 (n, 2), see pipeline.stages._common): returns the
        output word buffer and how many rows of it are kept (a Chain passes words from stage to stage
        without viewing them as events in between)."""
        out = new_word_buffer(len(words))
        count = self._entry(words, self._state_args, self._param_args, out)
        if count < 0:
            raise_out_of_range(self.config.name, words_to_events(words, len(words)), count, self.width, self.height)
        return out, count

    def __repr__(self) -> str:
        return f"Stage({self.config!r}, {self.width}x{self.height} -> {self.output_resolution[0]}x" \
               f"{self.output_resolution[1]})"
