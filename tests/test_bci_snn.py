"""The spiking BCI decoder (recurrent LIF population + readout filter, trained by surrogate gradients with the
loihi forward in the loop) on real chewie bins: the runtime reproduces the trainer's forward, float and
loihi backends agree, the readout is the documented filter of spikes and membranes, save/load, errors."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from pipeline.decoders.bci.evaluate import cross_validate, r2_score
from pipeline.decoders.bci.features import BCIInputError
from pipeline.decoders.bci.model_io import load_decoder, save_decoder
from pipeline.decoders.bci.snn import SNNDecoder
from pipeline.train.bci import RSNNConfig, fit_decoder, run, train
from recordings.dad import load_dad

SMALL = RSNNConfig(neurons=32, epochs=3, taps=3, ridge=100.0)


@pytest.fixture(scope="module")
def chewie(data_dir):
    path = data_dir / "bci" / "chewie_demo.mat"
    return load_dad(path, "tr"), load_dad(path, "te")


@pytest.fixture(scope="module")
def fitted(chewie):
    tr, _ = chewie
    dec = SNNDecoder(trainer=functools.partial(fit_decoder, config=SMALL), bin_us=tr.bin_us)
    dec.fit(tr.counts, tr.kinematics)
    dec.warmup()
    return dec


def test_runtime_equals_training_forward(chewie, fitted):
    """The deployed loihi runtime (step by step) gives the same spikes and membranes as the trainer's QAT
    forward: the readout applied to the trainer's features equals the decoder's output."""
    tr, te = chewie
    t = fitted.trained
    stack_out = _trainer_predict(tr, te.counts[:200])
    np.testing.assert_allclose(fitted.predict(te.counts[:200]), stack_out, atol=1e-9)
    assert t.mant_in.dtype == np.int16 and np.all(t.mant_in % 2 == 0)


def _trainer_predict(tr, counts):
    y_mean, y_std = tr.kinematics.mean(0), tr.kinematics.std(0)
    stack, R, bias, _ = train(tr.counts, (tr.kinematics - y_mean) / y_std, [(0, len(tr))], SMALL,
                              tr.bin_us / 1000)
    _, _, F = run(stack, counts[None])
    return (F[0] @ R + bias) * y_std + y_mean


def test_float_twin_agrees_and_decodes(chewie, fitted):
    _, te = chewie
    counts, kin = te.counts[:600], te.kinematics[:600]
    loihi = r2_score(kin, fitted.predict(counts))
    floaty = r2_score(kin, fitted.with_backend("float").predict(counts))
    assert np.all(loihi > 0.3), loihi            # a 3-epoch, 32-neuron model still decodes
    np.testing.assert_allclose(floaty, loihi, atol=0.03)


def test_readout_is_a_filter_of_spikes_and_membranes(chewie, fitted):
    _, te = chewie
    dec = fitted.with_backend("loihi")
    t = dec.trained
    n = t.w_rec.shape[0]
    dec.reset()
    spikes, vs, outs = [], [], []
    for row in te.counts[:30]:
        outs.append(dec.step(row).copy())
        spikes.append(dec._ring[dec._pos].copy())          # the spikes of this bin (newest slot)
        vs.append(dec.runtime.v("output") / (t.vth << 6))
    S, V = np.array(spikes), np.array(vs)
    for i in range(t.taps, 30):
        feats = np.concatenate([S[i - k] for k in range(t.taps)] + [V[i]])
        np.testing.assert_allclose(outs[i], feats @ t.readout + t.bias, atol=1e-9)
    assert S.sum() > 0 and t.readout.shape == ((t.taps + 1) * n, 2)


def test_save_load_round_trip_and_eval_contract(chewie, fitted, tmp_path):
    tr, te = chewie
    path = save_decoder(fitted, tmp_path / "snn.npz")
    loaded = load_decoder(path)
    np.testing.assert_array_equal(loaded.predict(te.counts[:100]), fitted.predict(te.counts[:100]))
    result = cross_validate(tr, lambda: SNNDecoder(trainer=functools.partial(fit_decoder, config=SMALL),
                                                    bin_us=tr.bin_us), 3, "snn")
    assert len(result.folds) == 3 and np.all(np.isfinite(result.r2))


def test_errors(fitted):
    with pytest.raises(BCIInputError, match="finite"):
        fitted.step(np.full(fitted.n_units, np.nan))
    with pytest.raises(BCIInputError, match="units mismatch"):
        fitted.step(np.zeros(3))
    with pytest.raises(ValueError, match="trainer"):
        SNNDecoder().fit(np.ones((10, 3)), np.ones((10, 2)))


def test_ensemble_is_the_mean_of_its_members(chewie):
    """ensemble=2 runs as one block-diagonal population: its output equals the mean of the two members'
    own trainer forwards (seeds 0 and 1, each with its readout), bin for bin."""
    tr, te = chewie
    pair = dataclasses.replace(SMALL, ensemble=2)
    dec = SNNDecoder(trainer=functools.partial(fit_decoder, config=pair), bin_us=tr.bin_us).fit(tr.counts,
                                                                                               tr.kinematics)
    assert dec.trained.w_rec.shape == (64, 64) and not dec.trained.w_rec[:32, 32:].any()
    y_mean, y_std = tr.kinematics.mean(0), tr.kinematics.std(0)
    members = []
    for seed in (0, 1):
        stack, R, bias, _ = train(tr.counts, (tr.kinematics - y_mean) / y_std, [(0, len(tr))],
                                  dataclasses.replace(SMALL, seed=seed), tr.bin_us / 1000)
        _, _, F = run(stack, te.counts[None, :150])
        members.append((F[0] @ R + bias) * y_std + y_mean)
    np.testing.assert_allclose(dec.predict(te.counts[:150]), np.mean(members, axis=0), atol=1e-9)


def test_validation_split_is_the_end_of_the_last_segment():
    from pipeline.train.bci import split_validation
    config = RSNNConfig(validation=0.2, chunk=60, burn_in=10)
    learn, check = split_validation([(0, 400), (400, 1000)], config)
    assert learn == [(0, 400), (400, 800)] and check == (740, 800, 1000)
    # too little left to learn from in the last segment: no split
    assert split_validation([(0, 900), (900, 1000)], config) == ([(0, 900), (900, 1000)], None)
    assert split_validation([(0, 1000)], RSNNConfig(validation=0.0))[1] is None
