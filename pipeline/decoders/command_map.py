"""Spoken commands: a classifier's output spikes -> one decision per word -> a mapped motor command.

The network is a classifier whose output neuron i stands for class i (a trained model's count readout, e.g.
the ten FSDD digits), or whose output neurons vote for classes by a ``votes`` table (a "vote" readout: an
ensemble of classifiers, pipeline.snn.ensemble, has one output neuron per member and class). Words are cut at silences (the silence / evidence-reset rule), with ``boundary``:

* ``"input"`` (the default; needs :meth:`CommandMap.attach_runtime`, which the launch graph calls): a
  step is sound when at least ``min_inputs`` network inputs spiked in it (the cochlea's LIF channels are
  silent in silence). A word starts at the first sound step after a silence and ends when there has
  been no sound for ``gap_us`` µs.
* ``"output"``: the same on the classifier's own output spikes (a word starts with the first output spike
  after a silence and ends when no output has spiked for ``gap_us``); no runtime needed, but a network
  keeps firing for a while after its input stops, so decisions come later.

While a word lasts, ``counts[j]`` counts the spikes of output j and ``evidence[i]`` is class i's share:
``counts[i]``, or ``counts @ votes`` with a votes table. When the word ends, the decision is the class with
the most evidence (ties: the lowest index); a word with fewer than ``min_spikes`` output spikes in all
decides nothing. The counts are then reset to 0. The decision's command
(``commands[class]``, e.g. wheel speeds [left, right] rad/s) is held until the next decision; a class
without an entry leaves the command as it was. Before the first decision the command is ``initial``
(default: all zeros, i.e. stopped).

A decision comes ``gap_us`` after the word's last sound, so ``gap_us`` must be longer than the pauses
inside a word (stop closures) and short enough for the decision latency wanted. ``decisions`` lists every
decision as (t_us, class index).
"""
from __future__ import annotations

import numpy as np

from pipeline.core.checks import check_int, check_number
from pipeline.core.schema import toml_value
from pipeline.decoders.window import check_spikes, check_votes

NO_CLASS = -1
BOUNDARIES = ("input", "output")


class CommandMap:
    """Per-word class decisions from output spikes, mapped to held commands.

    n_outputs: network outputs (one per class, or as many as the rows of ``votes``)
    commands: class index (as a TOML key, e.g. "3") -> command values (e.g. [left, right] wheel speeds,
        rad/s), all of one length
    gap_us: silence that ends a word (µs)
    min_spikes: output spikes a word needs to be decided
    initial: the command before the first decision (command units; left out: zeros, i.e. stopped)
    names: class names for logs and the live view, one per class (left out: the class indices)
    boundary: what a word's silence is: "input" (no network input spiking) or "output" (no output spiking)
    min_inputs: input boundary: network inputs spiking in a step that make it sound
    votes: (n_outputs, n_classes) table >= 0 of output -> class votes, one row per output (left out: output
        i is class i; launch passes a model's "vote" readout)
    """

    name = "command_map"

    def __init__(self, n_outputs: int, commands: dict, gap_us: int = 80_000, min_spikes: int = 3,
                 initial: list[float] | None = None, names: list[str] | None = None, boundary: str = "input",
                 min_inputs: int = 1, votes: list[list[float]] | None = None):
        self.n_outputs = check_int(self.name, "n_outputs", n_outputs, 1, 10**6)
        self.votes = None if votes is None else check_votes(self.name, votes, self.n_outputs)
        self.n_classes = self.n_outputs if self.votes is None else self.votes.shape[1]
        if not isinstance(commands, dict) or not commands:
            raise ValueError(f"{self.name}: parameter 'commands' must be a non-empty table of class index -> "
                             f"command values, got {toml_value(commands)}")
        table: dict[int, np.ndarray] = {}
        length = None
        for key, values in commands.items():
            text = str(key)
            if not text.isdigit() or int(text) >= self.n_classes:
                raise ValueError(f"{self.name}: parameter 'commands' key {key!r} must be a class index "
                                 f"0..{self.n_classes - 1}")
            if not isinstance(values, (list, tuple)) or not values or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
                raise ValueError(f"{self.name}: parameter 'commands[{text}]' must be a list of finite numbers, "
                                 f"got {toml_value(values)}")
            if length is not None and len(values) != length:
                raise ValueError(f"{self.name}: parameter 'commands[{text}]' has {len(values)} values, the others "
                                 f"{length}")
            length = len(values)
            table[int(text)] = np.array(values, dtype=np.float64)
        self.commands = table
        self.gap_us = check_int(self.name, "gap_us", gap_us, 1, 10**9)
        self.min_spikes = check_int(self.name, "min_spikes", min_spikes, 1, 10**9)
        if initial is None:
            initial = [0.0] * length
        if not isinstance(initial, (list, tuple)) or len(initial) != length:
            raise ValueError(f"{self.name}: parameter 'initial' must be {length} numbers, got {toml_value(initial)}")
        self.initial = np.array([check_number(self.name, "initial", v) for v in initial], dtype=np.float64)
        if names is None:
            names = [str(i) for i in range(self.n_classes)]
        if not isinstance(names, (list, tuple)) or len(names) != self.n_classes \
                or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{self.name}: parameter 'names' must be {self.n_classes} strings (one per class), "
                             f"got {toml_value(names)}")
        self.names = list(names)
        if boundary not in BOUNDARIES:
            raise ValueError(f"{self.name}: parameter 'boundary' must be one of {', '.join(map(toml_value, BOUNDARIES))}, got {toml_value(boundary)}")
        self.boundary = boundary
        self.min_inputs = check_int(self.name, "min_inputs", min_inputs, 1, 10**9)
        self._runtime = None
        self.counts = np.zeros(self.n_outputs, dtype=np.int64)
        self.command = self.initial.copy()
        self.reset()

    def attach_runtime(self, runtime) -> None:
        """The network runtime whose ``input_spikes`` (inputs active in the step just run) tell sound from
        silence with the "input" boundary."""
        self._runtime = runtime

    def reset(self) -> None:
        """No word in progress, no decisions, the initial command."""
        self.counts.fill(0)
        self.command[:] = self.initial
        self.last_sound_us: int | None = None
        self.decided = NO_CLASS
        self.decisions: list[tuple[int, int]] = []

    @property
    def evidence(self) -> np.ndarray:
        """Each class's evidence in the word so far: (n_classes,) spike counts (float64 with votes)."""
        return self.counts.copy() if self.votes is None else self.counts @ self.votes

    @property
    def in_word(self) -> bool:
        """Whether a word is in progress (sound since the last decision)."""
        return self.last_sound_us is not None

    def update(self, spikes, t_us: int) -> np.ndarray:
        """One step's output spikes (uint8 (n_outputs,)) at ``t_us`` µs -> the held command (float64 (m,),
        a copy)."""
        spikes = check_spikes(self.name, spikes, self.n_outputs)
        t_us = int(t_us)
        if self.boundary == "output":
            sound = bool(spikes.any())
        elif self._runtime is None:
            raise ValueError(f"{self.name}: boundary 'input' needs the network runtime (attach_runtime)")
        else:
            sound = self._runtime.input_spikes >= self.min_inputs
        if sound:
            self.last_sound_us = t_us
        if self.last_sound_us is not None:
            self.counts += spikes
            if t_us - self.last_sound_us >= self.gap_us:
                self._decide(t_us)
        return self.command.copy()

    def summary(self) -> dict:
        """The decisions so far, for a run's log: ``words`` (how many), ``heard`` (their class names, in order)
        and ``at_ms`` (when each was decided, ms of sensor time)."""
        return {"words": len(self.decisions), "heard": [self.names[c] for _, c in self.decisions],
                "at_ms": [t_us / 1000 for t_us, _ in self.decisions]}

    def _decide(self, t_us: int) -> None:
        if self.counts.sum() >= self.min_spikes:
            self.decided = int(np.argmax(self.evidence))
            self.decisions.append((t_us, self.decided))
            if self.decided in self.commands:
                self.command[:] = self.commands[self.decided]
        self.counts.fill(0)
        self.last_sound_us = None
