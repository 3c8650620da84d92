"""The SNN decoder: a fitted current-bin Wiener filter as spiking populations on the loihi backend,
checked against its float twin and against the linear decoder it implements, on real chewie bins."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.decoders.bci.evaluate import r2_score
from pipeline.decoders.bci.model_io import load_decoder, save_decoder
from pipeline.decoders.bci.snn import SNNDecoder, schedule
from pipeline.decoders.bci.wiener import WienerDecoder
from recordings.dad import load_dad


@pytest.fixture(scope="module")
def fitted(data_dir):
    path = data_dir / "bci" / "chewie_demo.mat"
    tr, te = load_dad(path, "tr"), load_dad(path, "te")
    snn = SNNDecoder(steps=50, neurons=4).fit(tr.counts, tr.kinematics)
    snn.warmup()
    return tr, te.counts[:300], te.kinematics[:300], snn


def test_snn_matches_float_twin_and_linear_decoder(fitted):
    tr, counts, kin, snn = fitted
    loihi = snn.predict(counts)
    twin = snn.float_twin()
    twin.warmup()
    floating = twin.predict(counts)
    linear = WienerDecoder().fit(tr.counts, tr.kinematics).predict(counts)
    r2_loihi, r2_float, r2_linear = r2_score(kin, loihi), r2_score(kin, floating), r2_score(kin, linear)
    assert np.all(np.abs(r2_loihi - r2_float) <= 0.05)
    assert np.all(np.abs(r2_loihi - r2_linear) <= 0.05)
    assert np.all(r2_loihi > 0.3)
    # the spikes really carry the value: correlation with the linear decoder's output
    for i in range(2):
        assert np.corrcoef(loihi[:, i], linear[:, i])[0, 1] > 0.95
    assert snn.runtime.counters.steps == 50 * len(counts)


def test_snn_output_is_a_readout_of_spike_counts(fitted):
    """Every decoded value is the fitted readout applied to whole numbers of pos/neg spikes."""
    _, counts, _, snn = fitted
    pos_neg = snn._run_counts(counts[:20])
    np.testing.assert_array_equal(pos_neg, np.round(pos_neg))
    assert pos_neg.max() > 10
    r = snn.readout
    expected = r[:, 0] * pos_neg[..., 0] + r[:, 1] * pos_neg[..., 1] + r[:, 2]
    np.testing.assert_allclose(snn.predict(counts[:20]), expected, rtol=1e-12)


def test_schedule_spreads_counts():
    units = np.zeros(3 * 10, dtype=np.int32)
    ptr = np.zeros(11, dtype=np.int64)
    dropped = schedule(np.array([2.0, 0.0, 12.0]), 10, units, ptr)
    assert dropped == 2
    per_step = [sorted(units[ptr[s]:ptr[s + 1]].tolist()) for s in range(10)]
    assert sum(len(p) for p in per_step) == 12
    assert all(p.count(2) == 1 for p in per_step)
    assert [s for s, p in enumerate(per_step) if 0 in p] == [2, 7]


def test_snn_save_load_round_trip(fitted, tmp_path):
    _, counts, _, snn = fitted
    back = load_decoder(save_decoder(snn, tmp_path / "snn.npz"))
    assert isinstance(back, SNNDecoder) and back.backend == "loihi"
    np.testing.assert_array_equal(back.predict(counts[:40]), snn.predict(counts[:40]))
