"""The output losses of method "bptt" (pipeline.train.bptt.loss_and_grad) on hand-made output traces: the
max-membrane cross-entropy's gradient against finite differences of its own value, and why its logits need
their own scale (the readout's membrane maximum lies in [0, 1) thresholds)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.train import bptt as B
from pipeline.train.lif_stack import Trace

N_OUT, STEPS = 10, 6


def _trace(vnorm: np.ndarray, spikes: np.ndarray | None = None) -> Trace:
    batch = vnorm.shape[0]
    spikes = np.zeros(vnorm.shape, np.uint8) if spikes is None else spikes
    empty = np.zeros(0, np.int32)
    return Trace(vnorm.astype(np.float32), spikes, np.zeros((batch, STEPS + 1), np.int64), empty, empty)


def _loss(kind: str, scale: float) -> dict:
    return {"kind": kind, "logit_scale": 0.5, "membrane_scale": scale, "rate_true": 0.1, "rate_false": 0.0}


def _confident(labels) -> np.ndarray:
    """The best a readout that cannot exceed one threshold gives: the labelled output at 0.95, others at 0."""
    v = np.zeros((len(labels), STEPS, N_OUT))
    v[np.arange(len(labels)), 3, labels] = 0.95
    return v


def test_max_membrane_logits_need_a_scale_of_their_own():
    labels = np.array([2, 7])
    trace = _trace(_confident(labels))
    stalled, _, _, _ = B.loss_and_grad(trace, labels, _loss("max_membrane_ce", 0.5), STEPS)
    # logits 0.5 * v differ by < 0.5: the loss cannot fall below -log(e^0.5 / (e^0.5 + 9)) ~ 1.72
    assert stalled > 1.7
    value, predicted, _, _ = B.loss_and_grad(trace, labels, _loss("max_membrane_ce", B.MEMBRANE_SCALE), STEPS)
    assert value < 0.05 and list(predicted) == [2, 7]
    assert B.SECTIONS["loss"]["membrane_scale"].default == B.MEMBRANE_SCALE


def test_max_membrane_gradient_matches_finite_differences_and_skips_spike_steps():
    rng = np.random.default_rng(0)
    labels = np.array([1, 4, 9])
    v = rng.uniform(-0.5, 0.95, (3, STEPS, N_OUT))
    spikes = np.zeros(v.shape, np.uint8)
    spikes[0, 2, 1] = 1
    v[0, 2, 1] = 1.4          # a spike step: the runtime probes v after reset, the readout never sees 1.4
    loss = _loss("max_membrane_ce", B.MEMBRANE_SCALE)
    value, _, grad_s, grad_v = B.loss_and_grad(_trace(v, spikes), labels, loss, STEPS)
    assert not grad_s.any()
    assert grad_v[0, 2, 1] == 0
    eps = 1e-3
    numeric = np.zeros_like(v)
    for idx in np.ndindex(v.shape):
        up, down = v.copy(), v.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (B.loss_and_grad(_trace(up, spikes), labels, loss, STEPS)[0]
                        - B.loss_and_grad(_trace(down, spikes), labels, loss, STEPS)[0]) / (2 * eps)
    assert np.abs(grad_v - numeric).max() < 1e-3 * np.abs(numeric).max()
    assert np.count_nonzero(grad_v) == 3 * N_OUT          # one step per (sample, output): the maximum
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(grad_v * 0.5, numeric, atol=1e-3 * np.abs(numeric).max())
