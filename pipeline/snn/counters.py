"""Per-step operation counters of a runtime (read by pipeline.snn.mapping for energy and chip time).

The kernels write into one int64 array of shape (2, n_populations, len(FIELDS)): row 0 holds the last
step's counts (zeroed at the start of each step), row 1 the totals since build/reset. Counts are per
target population (synaptic ops count at the population the synapses feed, as on Loihi where the
synapses live on the target's core).
"""
from __future__ import annotations

import numpy as np

#: Counter columns. synaptic_ops: synapses of spiking sources processed; active_updates: neurons whose
#: state or input was nonzero; inactive_updates: neurons with zero u, v, input and bias (a no-op);
#: spikes: spikes emitted; learning_updates: synapses a learning rule updated.
FIELDS = ("synaptic_ops", "active_updates", "inactive_updates", "spikes", "learning_updates")
SYNAPTIC_OPS, ACTIVE_UPDATES, INACTIVE_UPDATES, SPIKES, LEARNING_UPDATES = range(len(FIELDS))
LAST, TOTAL = 0, 1


class Counters:
    """Named read access to the counter array; ``population_names`` label its rows."""

    def __init__(self, population_names: list[str]):
        self.population_names = list(population_names)
        self.array = np.zeros((2, len(population_names), len(FIELDS)), dtype=np.int64)
        self.steps = 0

    def last(self) -> dict[str, int]:
        """Counts of the last step, summed over populations."""
        return dict(zip(FIELDS, (int(x) for x in self.array[LAST].sum(axis=0))))

    def total(self) -> dict[str, int]:
        """Counts since build or reset, summed over populations, plus ``steps``."""
        totals = dict(zip(FIELDS, (int(x) for x in self.array[TOTAL].sum(axis=0))))
        totals["steps"] = self.steps
        return totals

    def by_population(self, which: int = TOTAL) -> dict[str, dict[str, int]]:
        """{population: {field: count}} for LAST or TOTAL."""
        return {name: dict(zip(FIELDS, (int(x) for x in row))) for name, row in zip(self.population_names, self.array[which])}

    def add_learning_updates(self, population_index: int, count: int) -> None:
        self.array[LAST, population_index, LEARNING_UPDATES] += count
        self.array[TOTAL, population_index, LEARNING_UPDATES] += count

    def reset(self) -> None:
        self.array[:] = 0
        self.steps = 0

    def __getattr__(self, name: str) -> int:
        """``counters.synaptic_ops`` etc.: the last step's count of that field."""
        if name in FIELDS:
            return int(self.array[LAST, :, FIELDS.index(name)].sum())
        raise AttributeError(name)
