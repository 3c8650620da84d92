"""Spoken commands: a classifier's output spikes -> one decision per word -> a mapped motor command.

The network is a classifier whose output neuron i stands for class i (a trained model's readout, e.g. the
ten FSDD digits). Words are cut from the output spikes themselves (the silence / evidence-reset rule):

* a word starts with the first output spike after a silence; from then on ``evidence[i]`` counts the
  spikes of output i;
* the word ends when no output has spiked for ``gap_us`` µs (the classifier falls silent when the
  speech does: its input is the cochlea, whose LIF channels are silent in silence). At that step the
  decision is the output with the most evidence (ties: the lowest index); a word with fewer than
  ``min_spikes`` output spikes in all is noise and decides nothing. The evidence is then reset to 0.
* the decision's command (``commands[class]``, e.g. wheel speeds [left, right] rad/s) becomes the
  command held until the next decision; a class without an entry leaves the command as it was. Before the
  first decision the command is ``initial`` (default: all zeros, i.e. stopped).

A decision comes ``gap_us`` after the last output spike of the word, so ``gap_us`` must be longer than
the pauses inside a word (stop closures) and short enough for the decision latency wanted.
``decisions`` lists every decision as (t_us, class index).
"""
from __future__ import annotations

import numpy as np

from pipeline.core.checks import check_int, check_number
from pipeline.decoders.window import check_spikes

NO_CLASS = -1


class CommandMap:
    """Per-word class decisions from output spikes, mapped to held commands.

    n_outputs: network outputs (one per class). commands: {class index (int or its decimal string, as a TOML
    key): command values (list of numbers, e.g. [left, right] rad/s)}; every command has the same length.
    gap_us: output silence that ends a word (µs). min_spikes: output spikes a word needs to be decided.
    initial: the command before the first decision (default zeros). names: optional class names (for logs
    and the live view), one per output.
    """

    name = "command_map"

    def __init__(self, n_outputs: int, commands: dict, gap_us: int = 60_000, min_spikes: int = 3,
                 initial=None, names=None):
        self.n_outputs = check_int(self.name, "n_outputs", n_outputs, 1, 10**6)
        if not isinstance(commands, dict) or not commands:
            raise ValueError(f"{self.name}: parameter 'commands' must be a non-empty table of class index -> "
                             f"command values, got {commands!r}")
        table: dict[int, np.ndarray] = {}
        length = None
        for key, values in commands.items():
            text = str(key)
            if not text.isdigit() or int(text) >= self.n_outputs:
                raise ValueError(f"{self.name}: parameter 'commands' key {key!r} must be a class index "
                                 f"0..{self.n_outputs - 1}")
            if not isinstance(values, (list, tuple)) or not values or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values):
                raise ValueError(f"{self.name}: parameter 'commands[{text}]' must be a list of finite numbers, "
                                 f"got {values!r}")
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
            raise ValueError(f"{self.name}: parameter 'initial' must be {length} numbers, got {initial!r}")
        self.initial = np.array([check_number(self.name, "initial", v) for v in initial], dtype=np.float64)
        if names is None:
            names = [str(i) for i in range(self.n_outputs)]
        if not isinstance(names, (list, tuple)) or len(names) != self.n_outputs \
                or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{self.name}: parameter 'names' must be {self.n_outputs} strings, got {names!r}")
        self.names = list(names)
        self.evidence = np.zeros(self.n_outputs, dtype=np.int64)
        self.command = self.initial.copy()
        self.reset()

    def reset(self) -> None:
        """No word in progress, no decisions, the initial command."""
        self.evidence.fill(0)
        self.command[:] = self.initial
        self.last_spike_us: int | None = None
        self.decided = NO_CLASS
        self.decisions: list[tuple[int, int]] = []

    @property
    def in_word(self) -> bool:
        """Whether a word is in progress (output spikes since the last decision)."""
        return self.last_spike_us is not None

    def update(self, spikes, t_us: int) -> np.ndarray:
        """One step's output spikes (uint8 (n_outputs,)) at ``t_us`` µs -> the held command (float64 (m,),
        a copy)."""
        spikes = check_spikes(self.name, spikes, self.n_outputs)
        t_us = int(t_us)
        if spikes.any():
            self.evidence += spikes
            self.last_spike_us = t_us
        elif self.last_spike_us is not None and t_us - self.last_spike_us >= self.gap_us:
            self._decide(t_us)
        return self.command.copy()

    def _decide(self, t_us: int) -> None:
        if self.evidence.sum() >= self.min_spikes:
            self.decided = int(np.argmax(self.evidence))
            self.decisions.append((t_us, self.decided))
            if self.decided in self.commands:
                self.command[:] = self.commands[self.decided]
        self.evidence.fill(0)
        self.last_spike_us = None
