"""Winner-take-all over windowed spike counts -> a discrete action, with hysteresis.

Each action is a group of outputs; its score is the mean spike count per output of the group over the last
``window_us`` µs. The best-scoring action (lowest index on ties) wins, but the current action is only
replaced when the challenger beats it by more than ``margin`` spikes, which stops flicker between two
near-equal actions; a current action whose own score fell below ``min_spikes`` is replaced at once.
When no action reaches ``min_spikes`` the decision is -1 ("no action").
"""
from __future__ import annotations

import numpy as np

from pipeline.core.checks import check_number
from pipeline.core.schema import toml_value
from pipeline.decoders.window import SpikeWindow, check_indices

NO_ACTION = -1


class WinnerTakeAll:
    """Discrete action index (0 .. n_actions-1, or -1 = none) from output spikes.

    n_outputs: network outputs
    window_us: spike-count window (µs)
    groups: output indices of each action, one list per action (left out: one output per action)
    names: action names for logs, one per action (left out: the action indices)
    margin: hysteresis: a challenger replaces the current action when its score is higher by more than this
        (spikes per output, >= 0)
    min_spikes: score an action needs to be chosen at all (spikes per output, > 0)
    """

    name = "wta"

    def __init__(self, n_outputs: int, window_us: int = 50_000, groups: list[list[int]] | None = None,
                 names: list[str] | None = None,
                 margin: float = 2.0, min_spikes: float = 1.0):
        self.window = SpikeWindow(self.name, n_outputs, window_us)
        n = self.window.n_outputs
        if groups is None:
            groups = [[i] for i in range(n)]
        if not isinstance(groups, (list, tuple)) or not groups:
            raise ValueError(f"{self.name}: parameter 'groups' must be a non-empty list of index lists, got {toml_value(groups)}")
        self.groups = [check_indices(self.name, f"groups[{i}]", group, n) for i, group in enumerate(groups)]
        self._members = np.concatenate(self.groups)
        self._group_of = np.repeat(np.arange(len(self.groups)), [len(g) for g in self.groups])
        self._sizes = np.array([len(g) for g in self.groups], dtype=np.float64)
        if names is None:
            names = [str(i) for i in range(len(self.groups))]
        if not isinstance(names, (list, tuple)) or len(names) != len(self.groups) \
                or not all(isinstance(name, str) for name in names):
            raise ValueError(f"{self.name}: parameter 'names' must be {len(self.groups)} strings, got {toml_value(names)}")
        self.names = list(names)
        self.margin = check_number(self.name, "margin", margin, 0.0)
        self.min_spikes = check_number(self.name, "min_spikes", min_spikes, 0.0, low_open=True)
        self.scores = np.zeros(len(self.groups), dtype=np.float64)
        self.action = NO_ACTION

    @property
    def action_name(self) -> str:
        """Name of the current action, or "none"."""
        return "none" if self.action == NO_ACTION else self.names[self.action]

    def reset(self) -> None:
        self.window.reset()
        self.scores.fill(0.0)
        self.action = NO_ACTION

    def update(self, spikes, t_us: int) -> int:
        """Add one step's spikes (uint8 (n_outputs,)) at ``t_us`` µs; returns the action index (-1 = none)."""
        counts = self.window.update(spikes, t_us)
        self.scores.fill(0.0)
        np.add.at(self.scores, self._group_of, counts[self._members])
        self.scores /= self._sizes
        best = int(np.argmax(self.scores))
        if self.scores[best] < self.min_spikes:
            self.action = NO_ACTION
        elif (self.action == NO_ACTION or self.scores[self.action] < self.min_spikes
              or self.scores[best] > self.scores[self.action] + self.margin):
            self.action = best
        return self.action
