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

SMALL = RSNNConfig(neurons=32, epochs=3, taps=3, ridge=100.0, readout_select=0.0, ensemble=1)


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
        newest = dec._ring[dec._pos, :dec._ring_counts[dec._pos]]       # this bin's spiking neurons
        spikes.append(np.isin(np.arange(n), newest).astype(float))
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


def test_cli_members_sets_the_networks_averaged():
    from pipeline.app.commands.bci import snn_trainer

    assert snn_trainer(None).keywords["config"].ensemble == RSNNConfig.ensemble == 2     # the default
    config = snn_trainer(64, seed=3, members=1).keywords["config"]
    assert (config.neurons, config.ensemble, config.seed) == (64, 1, 3)


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


def test_readout_penalises_membranes_by_v_scale_per_axis():
    """fit_readout's per-axis (ridge, v_scale) equals the closed-form ridge with a diagonal penalty that is
    1 on the spike columns and 1 / v_scale^2 on the membrane columns (solved here directly)."""
    from pipeline.train.bci import fit_readout
    rng = np.random.default_rng(1)
    F = np.hstack([(rng.random((300, 12)) < 0.3).astype(float), rng.normal(0, 0.5, (300, 4))])
    y = F @ rng.normal(size=(16, 2)) + rng.normal(0, 0.3, (300, 2))
    R, bias = fit_readout(F, y, (5.0, 40.0), (0.3, 1.0), 12)
    Fc, yc = F - F.mean(0), y - y.mean(0)
    for axis, (ridge, v) in enumerate(((5.0, 0.3), (40.0, 1.0))):
        penalty = np.r_[np.ones(12), np.full(4, 1 / v ** 2)]
        expect = np.linalg.solve(Fc.T @ Fc + ridge * np.diag(penalty), Fc.T @ yc[:, axis])
        np.testing.assert_allclose(R[:, axis], expect, atol=1e-9)
        np.testing.assert_allclose(bias[axis], y[:, axis].mean() - F.mean(0) @ expect, atol=1e-9)


def test_readout_selection_scores_held_out_end_of_training(chewie):
    """select_readout trains on the bins before the last 20 % of the training data and picks, per axis, the
    grid point with the least squared error there: its error grid equals fits scored directly, and the
    deployed decoder uses the chosen values (runtime output == trainer forward with them)."""
    from pipeline.train.bci import READOUT_RIDGES, V_SCALES, fit_readout, segment_features, select_readout
    tr, te = chewie
    counts, kin = tr.counts[:600], tr.kinematics[:600]
    z = (kin - kin.mean(0)) / kin.std(0)
    config = dataclasses.replace(SMALL, readout_select=0.2)
    ridge, v_scale, errors = select_readout(counts, z, [(0, 600)], config, 50.0)
    assert errors.shape == (len(V_SCALES), len(READOUT_RIDGES), 2)
    for a in range(2):
        i, j = np.unravel_index(np.argmin(errors[:, :, a]), errors.shape[:2])
        assert (ridge[a], v_scale[a]) == (READOUT_RIDGES[j], V_SCALES[i])
    stack = train(counts, z, [(0, 480)], dataclasses.replace(config, readout_select=0.0), 50.0)[0]
    F, Y = segment_features(stack, counts, z, [(0, 480)], config.burn_in)
    Fv = run(stack, counts[None, 420:600])[2][0, 60:]
    for i, j in ((0, 0), (3, 2)):
        R, b = fit_readout(F, Y, READOUT_RIDGES[j], V_SCALES[i], config.taps * config.neurons)
        np.testing.assert_allclose(errors[i, j], ((Fv @ R + b - z[480:]) ** 2).mean(0), rtol=1e-6)
    dec = SNNDecoder(trainer=functools.partial(fit_decoder, config=config), bin_us=tr.bin_us).fit(counts, kin)
    chosen = dataclasses.replace(config, readout_select=0.0, ridge=tuple(ridge), v_scale=tuple(v_scale))
    stack, R, bias, _ = train(counts, z, [(0, 600)], chosen, 50.0)
    expect = (run(stack, te.counts[None, :150])[2][0] @ R + bias) * kin.std(0) + kin.mean(0)
    np.testing.assert_allclose(dec.predict(te.counts[:150]), expect, atol=1e-9)


def _synthetic(n, n_units, taps, gain, seed=0):
    """A hand-made TrainedSNN (no training): input gain ``gain`` (0: silent), random recurrence and readout."""
    from pipeline.decoders.bci.snn import TrainedSNN
    rng = np.random.default_rng(seed)
    mant_in = np.full((n, n_units), gain, np.int16)
    mant_rec = rng.integers(-3, 4, size=(n, n)).astype(np.int16)
    return TrainedSNN(w_in=mant_in / 4.0, w_rec=mant_rec / 4.0, mant_in=mant_in, mant_rec=mant_rec, weight_exp=0,
                      du=4095, dv=400, vth=4, tau_syn_ms=0.1, tau_mem_ms=100.0, dt_ms=10.0, taps=taps,
                      readout=rng.normal(size=((taps + 1) * n, 2)), bias=np.array([0.5, -2.0]))


def _reference_outputs(trained, backend, counts):
    """(y (T, d), spikes (T, n)): y_t = b + sum_k R_k s_{t-k} + R_v v_t from a separate runtime's spikes and
    membranes, with numpy."""
    from pipeline.decoders.bci.snn import _network
    from pipeline.snn import build
    runtime = build(_network(trained, backend), backend)
    n, taps = trained.w_rec.shape[0], trained.taps
    scale = 1.0 / (trained.vth << 6) if backend == "loihi" else 1.0
    history, outs, raster = [np.zeros(n)] * taps, [], []
    for row in counts:
        active = np.flatnonzero(np.rint(row) >= 1).astype(np.int32)
        spikes = runtime.step(active, np.minimum(np.rint(row[active]), 255).astype(np.int64)).astype(float)
        history = [spikes] + history[:-1]
        raster.append(spikes)
        features = np.concatenate(history + [runtime.v("output") * scale])
        outs.append(features @ trained.readout + trained.bias)
    return np.array(outs), np.array(raster)


@pytest.mark.parametrize("taps, gain", [(1, 50), (3, 50), (2, 0), (4, 2)])
def test_readout_equals_features_times_readout(taps, gain, tmp_path):
    """The readout ring (indices of each bin's spikes) against numpy features @ readout + bias: one tap, every
    neuron spiking every bin (gain 50), no spike at all (gain 0), a mix; after reset, on the float twin and
    after a save/load round trip."""
    n, n_units = 7, 5
    trained = _synthetic(n, n_units, taps, gain)
    counts = np.random.default_rng(1).integers(1, 4, size=(25, n_units)).astype(float)
    dec = SNNDecoder("loihi", bin_us=10_000)
    dec._configure(trained, n_units)
    expected, raster = _reference_outputs(trained, "loihi", counts)
    if gain == 50:
        assert raster[1:].all()                        # every neuron, every bin after the first (inputs lag one)
    elif gain == 0:
        assert not raster.any()
    else:
        assert 0 < raster.mean() < 1
    got = dec.predict(counts)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    dec.reset()
    for row in counts[:7]:
        dec.step(row)
    np.testing.assert_allclose(dec.predict(counts), expected, rtol=0, atol=1e-9)   # predict resets: no stale taps
    floaty = dec.with_backend("float")
    np.testing.assert_allclose(floaty.predict(counts), _reference_outputs(trained, "float", counts)[0], rtol=0, atol=1e-9)
    loaded = load_decoder(save_decoder(dec, tmp_path / "snn.npz"))
    np.testing.assert_array_equal(loaded.predict(counts), got)


@pytest.mark.parametrize("key, value", [("taps", 0), ("taps", -1), ("vth", 0)])
def test_a_model_without_readout_taps_or_threshold_is_refused_at_load(key, value, tmp_path):
    dec = SNNDecoder("loihi", bin_us=10_000)
    dec._configure(_synthetic(7, 5, 2, 2), 5)
    arrays = dict(np.load(save_decoder(dec, tmp_path / "snn.npz")))
    arrays[key] = np.int64(value)
    if key == "taps":
        arrays["readout"] = arrays["readout"][:(value + 1) * 7]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BCIInputError, match=f"bad.npz: model array '{key}': expected at least 1, got {value}"):
        load_decoder(tmp_path / "bad.npz")
