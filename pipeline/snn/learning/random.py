"""The random numbers of Lava's bit-approximate learning model, drawn in the same order.

Lava's ``LearningConnectionModelBitApproximate`` (lava-nc 0.10, ``magma/core/model/py/connection.py``
and ``magma/core/learning/random.py``) uses five independent ``np.random.default_rng`` streams:

* x traces: trace decay ``default_rng(seed).random(1)[0]`` and impulse addition
  ``default_rng(seed + 1).integers(0, 128, size=1)[0]``;
* y traces: the same with ``seed + 2`` and ``seed + 3``;
* synaptic variables: ``default_rng(2).random(1)[0]`` (a fixed seed, not the rule's).

Each trace stream draws once when the model is built and once per ``advance()``; the model advances
both trace streams twice per time step (after the pre-synaptic and after the post-synaptic spikes
are recorded). So at the end of step t (1-based) the current trace draws have index 2t, and while the
post-synaptic spikes of step t are processed they have index 2t - 1. The synaptic-variable stream
advances once at the start of every learning epoch: epoch k (1-based) uses draw k.

One draw serves a whole epoch: every neuron's trace decay in every step of the epoch compares its
fractional part against the same uniform number.

Draws are fetched in blocks: for PCG64, ``random(n)`` and ``integers(0, 128, size=n)`` return the
same values as n calls with ``size=1`` (tests/test_snn_learning.py checks this against the per-call
sequence, so a numpy change that broke it would fail there).
"""
from __future__ import annotations

import numpy as np

TRACE_RANDOM_INT_HIGH = 128  # impulse-addition draws are integers in [0, 2**7)
CONN_VAR_SEED = 2
DRAWS_PER_STEP = 2


class BlockDraws:
    """Draw ``index`` of one default_rng stream (indices only grow), fetched ``block`` at a time."""

    def __init__(self, seed: int, integer: bool, block: int = 1024) -> None:
        self._seed = int(seed)
        self._integer = integer
        self._block = int(block)
        self._rng = np.random.default_rng(self._seed)
        self._start = 0
        self._values = self._first = self._draw()
        self._first.setflags(write=False)
        self._after_first = self._rng.bit_generator.state

    def reset(self) -> None:
        """Back to draw 0: the first block is kept and the generator's state after it restored (a reset per
        presentation costs no drawing)."""
        self._rng.bit_generator.state = self._after_first
        self._start = 0
        self._values = self._first

    def _draw(self) -> np.ndarray:
        if self._integer:
            return self._rng.integers(0, TRACE_RANDOM_INT_HIGH, size=self._block)
        return self._rng.random(self._block)

    def at(self, index: int):
        """The stream's draw number ``index`` (0 = the draw made when Lava's model is built)."""
        if index < self._start:
            raise ValueError(f"draw {index} was already discarded (stream is at {self._start}); "
                             "draw indices must not go back (reset() to start over)")
        while index >= self._start + self._block:
            self._start += self._block
            self._values = self._draw()
        return self._values[index - self._start]


class LavaLearningRandom:
    """All random numbers one learning projection consumes, addressed by step / epoch number."""

    def __init__(self, rng_seed: int) -> None:
        seed = int(rng_seed)
        self.x_decay = BlockDraws(seed, integer=False)
        self.x_impulse = BlockDraws(seed + 1, integer=True)
        self.y_decay = BlockDraws(seed + 2, integer=False)
        self.y_impulse = BlockDraws(seed + 3, integer=True)
        self.conn = BlockDraws(CONN_VAR_SEED, integer=False)

    def reset(self) -> None:
        for stream in (self.x_decay, self.x_impulse, self.y_decay, self.y_impulse, self.conn):
            stream.reset()

    @staticmethod
    def end_of_step_index(time_step: int) -> int:
        """Trace draw index current at the end of 1-based step ``time_step``."""
        return DRAWS_PER_STEP * time_step

    @staticmethod
    def post_spike_index(time_step: int) -> int:
        """Trace draw index current while the post-synaptic spikes of ``time_step`` are recorded."""
        return DRAWS_PER_STEP * time_step - 1
