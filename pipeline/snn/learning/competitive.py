"""Competitive learning: a rule that learns only from the winner of each volley of post spikes.

In a network stepped in discrete bins, neurons with similar weights cross threshold in the same step
before lateral inhibition (one hop later) can separate them; if they all learn from that input they
grow more alike, and competition collapses. Kheradpisheh et al. (2018, "STDP-based spiking deep
convolutional neural networks") resolve such ties by letting only the neuron with the highest
potential among the first spikers learn; here the winner of a step is the spiking neuron with the
largest feed-forward drive this step (sum of its weights from the active inputs; ties: the lower
index). Every other post spike of that step is hidden from the learning engine, which otherwise runs
the rule unchanged (:class:`pipeline.snn.learning.engine.LearningEngine`, bit-exact with Lava for the
spikes it is shown). The network's dynamics are untouched: all neurons still spike and inhibit.

Use it as a projection's ``learning`` (the runtime calls :meth:`WinnerTakeAll.attach`); it is a training
device and is not saved with a network (store the learned weights in a plain Dense projection).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from pipeline.snn.learning.engine import LearningEngine
from pipeline.snn.learning.rule import LearningRule


@njit(cache=True)
def winner_mask(pre_spikes, post_spikes, weights, out):
    """out (n_post,) uint8 := one-hot of the spiking post neuron with the largest sum of weights[pre, post]
    over spiking pre neurons (ties: lowest index); all zeros when no post neuron spiked. pre_spikes
    (n_pre,) and post_spikes (n_post,) uint8, weights (n_pre, n_post). Returns the winner or -1."""
    best = -1
    best_drive = np.int64(-1)
    n_pre = pre_spikes.shape[0]
    for i in range(post_spikes.shape[0]):
        out[i] = 0
        if post_spikes[i] == 0:
            continue
        drive = np.int64(0)
        for j in range(n_pre):
            if pre_spikes[j]:
                drive += weights[j, i]
        if drive > best_drive:
            best_drive = drive
            best = i
    if best >= 0:
        out[best] = 1
    return best


@dataclass(frozen=True)
class WinnerTakeAll:
    """``rule`` learned from one post spike per step: the winner of the step's volley (see the module)."""

    rule: LearningRule

    @property
    def sign_mode(self) -> str:
        """The rule's weight range (the runtime prepares the initial weights for it)."""
        return self.rule.sign_mode

    def attach(self, weights: np.ndarray, pre_spikes: np.ndarray, post_spikes: np.ndarray, backend: str,
               weight_scale: float | None = None) -> WinnerLearner:
        if backend != "loihi":
            raise ValueError(f"winner-take-all learning runs on the loihi backend only, not {backend!r}")
        engine = LearningEngine(self.rule, weights, self.rule.sign_mode)
        engine.warmup()
        return WinnerLearner(engine, pre_spikes, post_spikes)


class WinnerLearner:
    """The runtime-side learner of :class:`WinnerTakeAll`: ``step(t)`` after every runtime step."""

    def __init__(self, engine: LearningEngine, pre_spikes: np.ndarray, post_spikes: np.ndarray) -> None:
        if pre_spikes.shape != (engine.n_pre,) or post_spikes.shape != (engine.n_post,):
            raise ValueError(f"spike views {pre_spikes.shape}/{post_spikes.shape} do not match weights "
                             f"({engine.n_pre}, {engine.n_post})")
        self.engine = engine
        self.pre_spikes = pre_spikes
        self.post_spikes = post_spikes
        self._winner = np.zeros(engine.n_post, np.uint8)
        #: (n_post,) int64: steps in which each post neuron won and learned (survives reset).
        self.wins = np.zeros(engine.n_post, np.int64)

    def step(self, t: int) -> int:
        if t != self.engine.time_step:
            raise RuntimeError(f"learner is at step {self.engine.time_step} but the runtime is at step {t}; "
                               "reset both together")
        winner = winner_mask(self.pre_spikes, self.post_spikes, self.engine.weights, self._winner)
        if winner >= 0:
            self.wins[winner] += 1
        return self.engine.step_masks(self.pre_spikes, self._winner)

    def reset(self) -> None:
        self.engine.reset()
