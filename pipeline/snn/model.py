"""What a classifier needs besides its network: how a recording becomes input, how outputs become a class.

A trained or imported model is a normal network file; these two descriptions travel inside it
(:attr:`pipeline.snn.network.Network.input_spec` and :attr:`~pipeline.snn.network.Network.readout`),
so ``spikeloop evaluate`` and a classify launch file present recordings exactly as the trainer did.

* :class:`InputSpec` — the sensor ("dvs": events on the network's ``input_shape`` grid (C, H, W);
  "cochlea": a WAV through the project's cochlea, one input per channel), the step length, and whether a
  step carries binary spikes or graded event counts (tonic's ToFrame, as the NIR paper's CNN expects).
* :class:`Readout` — how output activity becomes a class: spike counts, maximum membrane voltage, first
  spike, or a neuron -> class assignment (unsupervised STDP layers), with the class names.

Both are values (frozen); ``to_arrays``/``from_arrays`` map them to the network file's ``input_*`` and
``readout_*`` keys (no pickle).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pipeline.core.checks import MAX_VOTE
from pipeline.core.schema import toml_value

SENSORS = ("dvs", "cochlea")
#: Where a cochlea model's AGC level starts for each clip (InputSpec.cochlea_agc_start).
AGC_STARTS = ("zero", "speaker")
ENCODINGS = ("spikes", "counts", "frame")
POLARITIES = ("split", "merge")
READOUTS = ("count", "max_membrane", "first_spike", "assignment", "vote")
#: Longest presentation a file may ask for: one hour of 1 ms steps bounds what a model file can make us allocate.
MAX_STEPS = 3_600_000


def _positive_int(owner: str, name: str, value, high: int) -> int:
    if isinstance(value, bool) or int(value) != value or not 0 < int(value) <= high:
        raise ValueError(f"{owner}: parameter {name!r} must be an integer in 1..{high}, got {toml_value(value)}")
    return int(value)


def _choice(owner: str, name: str, value, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{owner}: parameter {name!r} must be one of {', '.join(map(toml_value, choices))}, got {toml_value(value)}")
    return str(value)


@dataclass(frozen=True)
class InputSpec:
    """How a recording is presented to the network, step by step.

    ``sensor``: "dvs" (events binned onto the network's ``input_shape`` (C, H, W); with ``polarity``
    "split" channel = polarity (C = 2), "merge" one channel) or "cochlea" (a WAV file through
    :mod:`devices.cochlea` with ``channels`` channels; input i = channel i). ``bin_us``: step length in µs
    (the network's dt). ``encoding``: "spikes" (an input is active in a step when it saw >= 1 event),
    "counts" (graded input = events in the step, tonic ToFrame) or "frame" (graded input = the events of
    the whole ``duration_us`` window counted once, presented unchanged in every one of its
    ``duration_us // bin_us`` steps: a constant input current, Rueckauer et al. 2017's analog input; the
    first step can start only once the window has been seen). ``duration_us``: present this much of a
    recording (0 = all of it). ``tail_steps``: steps without input after the recording, so the last
    spikes reach the output (one hop per projection). ``scale``: input (x, y) divided by this integer
    factor (event pooling, e.g. 34x34 -> 17x17 with 2). ``cochlea_threshold``: "cochlea" only, the
    cochlea's LIF spike threshold (:class:`devices.audio.CochleaConfig` ``threshold``; its default 1.5e-4;
    lower = more spikes per second of speech). ``cochlea_agc_ms``, ``cochlea_agc_strength``: "cochlea" only,
    the cochlea's causal per-channel gain normalisation (CochleaConfig ``agc_ms``, ``agc_strength``; 0 ms:
    off, the default, as every model trained before it). ``cochlea_agc_start``: where the AGC's level starts
    for each clip, "zero" (the default) or "speaker" (the speaker's level, :func:`devices.audio.voice_level`
    of that speaker's clips in the set, so a slow AGC has settled to the voice before the word; speaker
    adaptation from unlabelled audio).
    """

    sensor: str = "dvs"
    bin_us: int = 1000
    encoding: str = "spikes"
    polarity: str = "split"
    duration_us: int = 0
    tail_steps: int = 0
    scale: int = 1
    channels: int = 64
    cochlea_threshold: float = 1.5e-4
    cochlea_agc_ms: float = 0.0
    cochlea_agc_strength: float = 1.0
    cochlea_agc_start: str = "zero"

    def __post_init__(self) -> None:
        owner = "input spec"
        _choice(owner, "sensor", self.sensor, SENSORS)
        _choice(owner, "encoding", self.encoding, ENCODINGS)
        _choice(owner, "polarity", self.polarity, POLARITIES)
        _choice(owner, "cochlea_agc_start", self.cochlea_agc_start, AGC_STARTS)
        _positive_int(owner, "bin_us", self.bin_us, 10_000_000)
        _positive_int(owner, "scale", self.scale, 1024)
        _positive_int(owner, "channels", self.channels, 4096)
        if isinstance(self.duration_us, bool) or int(self.duration_us) != self.duration_us or self.duration_us < 0:
            raise ValueError(f"{owner}: parameter 'duration_us' must be an integer >= 0 µs, got {toml_value(self.duration_us)}")
        if self.encoding == "frame" and self.duration_us < self.bin_us:
            raise ValueError(f"{owner}: encoding 'frame' needs 'duration_us' >= 'bin_us' (the counted window), "
                             f"got {self.duration_us} µs")
        if self.duration_us // self.bin_us > MAX_STEPS:
            raise ValueError(f"{owner}: 'duration_us' / 'bin_us' is {self.duration_us // self.bin_us} steps, "
                             f"at most {MAX_STEPS}")
        if isinstance(self.cochlea_threshold, bool) or not 0 < float(self.cochlea_threshold) < float("inf"):
            raise ValueError(f"{owner}: parameter 'cochlea_threshold' must be a number > 0, "
                             f"got {toml_value(self.cochlea_threshold)}")
        object.__setattr__(self, "cochlea_threshold", float(self.cochlea_threshold))
        for name, high in (("cochlea_agc_ms", float("inf")), ("cochlea_agc_strength", 2.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not 0 <= float(value) <= high or float(value) == float("inf"):
                raise ValueError(f"{owner}: parameter {name!r} must be a number in 0..{high:g}, got {toml_value(value)}")
            object.__setattr__(self, name, float(value))
        if self.cochlea_agc_start != "zero" and not self.cochlea_agc_ms > 0:
            raise ValueError(f"{owner}: parameter 'cochlea_agc_start' {self.cochlea_agc_start!r} needs an AGC "
                             f"('cochlea_agc_ms' > 0)")
        if isinstance(self.tail_steps, bool) or int(self.tail_steps) != self.tail_steps \
                or not 0 <= self.tail_steps <= MAX_STEPS:
            raise ValueError(f"{owner}: parameter 'tail_steps' must be an integer in 0..{MAX_STEPS}, "
                             f"got {toml_value(self.tail_steps)}")

    @property
    def graded(self) -> bool:
        """True when a step's input spikes carry event counts as payloads ("counts", "frame")."""
        return self.encoding != "spikes"

    @property
    def start_us(self) -> int:
        """When step 0 can start, from the recording's first event (µs): 0, or the whole window for "frame"."""
        return self.duration_us if self.encoding == "frame" else 0

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {f"input_{f.name}": np.array(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> InputSpec | None:
        """The spec stored under ``input_*`` keys, or None when the file holds none."""
        if "input_sensor" not in arrays:
            return None
        values = {}
        for f in fields(cls):
            key = f"input_{f.name}"
            if key in arrays:
                value = arrays[key]
                if value.ndim != 0:
                    raise ValueError(f"key {key!r} must be a scalar, got shape {value.shape}")
                values[f.name] = str(value) if value.dtype.kind == "U" else \
                    float(value) if value.dtype.kind == "f" else int(value)
        return cls(**values)


@dataclass(frozen=True, eq=False)
class Readout:
    """How the output population's activity over a presentation becomes a class.

    ``kind``: "count" (most spikes wins; ties by the higher membrane maximum, then the lower index),
    "max_membrane" (highest membrane voltage reached), "first_spike" (earliest spike; time-to-first-spike
    coding) or "assignment" (each output neuron votes for ``assignment[i]``; the class with the highest
    mean count over its neurons wins, Diehl & Cook 2015) or "vote" (each output neuron's count is shared
    among the classes by ``votes[i]``; the class with the largest sum wins: a probabilistic assignment).
    ``classes``: class names in class-index order. ``assignment``: (n_outputs,) int class index per output
    neuron (-1 = no vote), "assignment" only. ``votes``: (n_outputs, n_classes) float in [0, MAX_VOTE], "vote"
    only.
    """

    kind: str = "count"
    classes: tuple[str, ...] = ()
    assignment: np.ndarray | None = None
    votes: np.ndarray | None = None

    def __post_init__(self) -> None:
        owner = "readout"
        _choice(owner, "kind", self.kind, READOUTS)
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if not self.classes:
            raise ValueError(f"{owner}: parameter 'classes' must name at least one class")
        if len(set(self.classes)) != len(self.classes):
            twice = next(c for i, c in enumerate(self.classes) if c in self.classes[:i])
            raise ValueError(f"{owner}: parameter 'classes' names class {twice!r} twice (labels are matched by name)")
        if (self.kind == "assignment") != (self.assignment is not None):
            raise ValueError(f"{owner}: parameter 'assignment' is required with kind 'assignment' and only then")
        if self.assignment is not None:
            assignment = np.array(self.assignment, dtype=np.int64)
            if assignment.ndim != 1 or assignment.size == 0 or assignment.min() < -1 \
                    or assignment.max() >= len(self.classes):
                raise ValueError(f"{owner}: parameter 'assignment' must be a 1-D array of class indices "
                                 f"-1..{len(self.classes) - 1}")
            assignment.setflags(write=False)
            object.__setattr__(self, "assignment", assignment)
        if (self.kind == "vote") != (self.votes is not None):
            raise ValueError(f"{owner}: parameter 'votes' is required with kind 'vote' and only then")
        if self.votes is not None:
            votes = np.array(self.votes, dtype=np.float64)
            if votes.ndim != 2 or votes.shape[0] == 0 or votes.shape[1] != len(self.classes) \
                    or not np.all(np.isfinite(votes)) or votes.min() < 0:
                raise ValueError(f"{owner}: parameter 'votes' must be a finite (n_outputs, {len(self.classes)}) "
                                 f"array >= 0, got shape {votes.shape}")
            if votes.max() > MAX_VOTE:
                raise ValueError(f"{owner}: parameter 'votes' must be at most {MAX_VOTE:g}, got {votes.max():g}")
            votes.setflags(write=False)
            object.__setattr__(self, "votes", votes)

    def check_outputs(self, n_outputs: int) -> None:
        """ValueError unless this readout fits an output population of ``n_outputs`` neurons."""
        if self.kind == "assignment":
            if self.assignment.size != n_outputs:
                raise ValueError(f"readout: 'assignment' has {self.assignment.size} entries, "
                                 f"the output population {n_outputs} neurons")
        elif self.kind == "vote":
            if self.votes.shape[0] != n_outputs:
                raise ValueError(f"readout: 'votes' has {self.votes.shape[0]} rows, "
                                 f"the output population {n_outputs} neurons")
        elif len(self.classes) != n_outputs:
            raise ValueError(f"readout: {len(self.classes)} classes but the output population has {n_outputs} "
                             f"neurons (kind {self.kind!r} reads one neuron per class)")

    def vote_table(self) -> np.ndarray | None:
        """This readout as a float64 (n_outputs, n_classes) vote table (class evidence = spike counts @ table)
        when it is one: "vote": its votes; "assignment": 1 / (neurons assigned to the class) for each assigned
        neuron, so a class's evidence is its mean count; None for the others (one output per class, or a
        membrane or timing rule)."""
        if self.kind == "vote":
            return self.votes
        if self.kind != "assignment":
            return None
        table = np.zeros((self.assignment.size, len(self.classes)))
        voters = np.flatnonzero(self.assignment >= 0)
        table[voters, self.assignment[voters]] = 1.0
        return table / np.maximum(table.sum(axis=0), 1.0)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"readout_kind": np.array(self.kind), "readout_classes": np.array(self.classes, dtype=str)}
        if self.assignment is not None:
            arrays["readout_assignment"] = np.asarray(self.assignment, dtype=np.int64)
        if self.votes is not None:
            arrays["readout_votes"] = np.asarray(self.votes, dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Readout | None:
        """The readout stored under ``readout_*`` keys, or None when the file holds none."""
        if "readout_kind" not in arrays:
            return None
        classes = arrays.get("readout_classes", np.array([], dtype=str))
        if classes.ndim != 1:
            raise ValueError(f"key 'readout_classes' must be 1-D, got shape {classes.shape}")
        for key, kinds in (("readout_assignment", "iu"), ("readout_votes", "biuf")):
            if key in arrays and arrays[key].size and arrays[key].dtype.kind not in kinds:
                raise ValueError(f"key {key!r} must hold {'integers' if kinds == 'iu' else 'numbers'}, got dtype "
                                 f"{arrays[key].dtype}")
        return cls(kind=str(arrays["readout_kind"]), classes=tuple(str(c) for c in classes),
                   assignment=arrays.get("readout_assignment"), votes=arrays.get("readout_votes"))
