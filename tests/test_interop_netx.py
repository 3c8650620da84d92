"""lava-dl netx import against Lava's own outputs (../shared/interop/lava-dl, README sections 7-10)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.app.cli import main
from pipeline.interop.netx import lava_dense_weights, netx_weight_bits, read_netx
from pipeline.interop.trace import simulate, with_input_bias
from pipeline.snn.network import Network
from recordings.datasets import shared_dir

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def lava_dl():
    path = shared_dir() / "interop" / "lava-dl"
    if not path.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"shared data not found at {path}")
        pytest.skip(f"shared data not found at {path} (set SPIKELOOP_DATA)")
    return path


def oxford_input(lava_dl) -> np.ndarray:
    """slayer's events-to-tensor: bin round(t * 1e-3 * 1e3) (numpy half-to-even), 200 x 2000."""
    events = np.load(lava_dl / "oxford" / "input.npy")
    dense = np.zeros((200, 2000))
    dense[events[:, 0].astype(int), np.round(events[:, 2] * 1e-3 * 1e3).astype(int)] = 1
    return dense


def test_oxford_matches_the_real_lava_run(lava_dl):
    network = read_netx(lava_dl / "oxford" / "network.net").network
    spikes_in = oxford_input(lava_dl)
    gts = np.load(lava_dl / "oxford" / "layer0_gts.npz")
    np.testing.assert_array_equal(spikes_in, gts["in"])
    trace = simulate(network, 2000, spikes_in)
    lava = np.load(lava_dl / "oxford" / "lava_cpu_fixed_output.npz")
    np.testing.assert_array_equal(trace["layer0_s"], lava["layer0_spikes"])
    np.testing.assert_array_equal(trace["layer1_s"], lava["layer1_spikes"])
    assert trace["layer1_s"].sum() == 9565
    np.testing.assert_array_equal(trace["layer0_s"], gts["out"])  # lava-dl's own test_dense gts
    np.testing.assert_array_equal(trace["layer0_u"], 64 * gts["current"])


def test_mnist_synthetic_run_every_state(lava_dl):
    network = read_netx(lava_dl / "mnist" / "trained_mnist_network.net").network
    lava = np.load(lava_dl / "mnist" / "lava_cpu_fixed_synthetic_run.npz")
    trace = simulate(network, 40, lava["input_spikes"])
    for layer in range(3):
        for q in "suv":
            np.testing.assert_array_equal(trace[f"layer{layer}_{q}"], lava[f"layer{layer}_{q}"], err_msg=f"layer{layer}_{q}")
    assert [int(lava[f"layer{i}_s"].sum()) for i in range(3)] == [915, 784, 113]


def test_tinynet_gts_through_the_cli(lava_dl, tmp_path, capsys):
    net, trace_file, bias = tmp_path / "tiny.npz", tmp_path / "trace.npz", tmp_path / "bias.npy"
    assert main(["import", str(lava_dl / "tinynet" / "tiny.net"), "--out", str(net), "--backend-check"]) == 0
    out = capsys.readouterr().out
    assert "conv" in out and "never applied" in out and "layer2" in out
    gts = lava_dl / "tinynet" / "gts"
    np.save(bias, np.load(gts / "input_bias.npy"))
    assert main(["simulate", str(net), "--input-bias", str(bias), "--steps", "17", "--reset-interval", "17",
                 "--out", str(trace_file)]) == 0
    trace = np.load(trace_file)

    def lava(name):  # slayer (N, C, H, W, T) -> Lava (X, Y, C, T)
        return np.load(gts / f"{name}.npy")[0].transpose(2, 1, 0, 3)

    # gt column j: input = Lava step j (our step j - 1); layer 1 = our step j; layer 2 = our step j + 1.
    np.testing.assert_array_equal(trace["layer0_s"][..., 0:15], lava("input")[..., 1:16])
    np.testing.assert_array_equal(trace["layer1_s"][..., 1:16], lava("layer1")[..., 1:16])
    np.testing.assert_array_equal(trace["layer1_u"][..., 1:16], 64 * lava("current")[..., 1:16])
    np.testing.assert_array_equal(trace["layer2_s"][..., 2:17], lava("output")[..., 1:16])
    assert trace["layer2_s"].shape == (1, 1, 36, 17) and lava("output").sum() == 92


def test_imported_network_round_trips_through_save(lava_dl, tmp_path):
    network = read_netx(lava_dl / "tinynet" / "tiny.net").network
    network.save(tmp_path / "n.npz")
    loaded = Network.load(tmp_path / "n.npz")
    assert loaded.layout == "xyc" and loaded.projections[0].prepare_weights is False
    np.testing.assert_array_equal(loaded.projections[1].kernel, network.projections[1].kernel)


def test_netx_weight_optimisation_is_lossless_where_lava_says_so():
    rng = np.random.default_rng(5)
    for low, high in ((-178, 193), (-6, 7), (0, 40), (-90, 0)):
        w = rng.integers(low, high, (20, 30))
        shifted, bits, exp = netx_weight_bits(w)
        prepared = lava_dense_weights(shifted, bits)
        np.testing.assert_array_equal(np.floor(prepared.astype(float) * 2.0 ** exp), w)
    assert netx_weight_bits(np.array([[-6, 6]]))[2] == -5  # README 7.2: weights in +-6 give weight_exp -5


def _write(path, layers):
    with h5py.File(path, "w") as f:
        for i, layer in enumerate(layers):
            for key, value in layer.items():
                f[f"layer/{i}/{key}"] = value


def _dense(n_in, n_out, **changes):
    layer = {"type": np.array([b"dense"]), "shape": np.array([n_out]), "inFeatures": n_in, "outFeatures": n_out,
             "weight": np.ones((n_out, n_in), np.float32), "neuron/type": b"CUBA", "neuron/iDecay": 4096,
             "neuron/vDecay": 100, "neuron/vThMant": 10}
    layer.update(changes)
    return layer


@pytest.mark.parametrize("layers, expected", [
    ([_dense(4, 3), _dense(5, 2)], "/layer/1/inFeatures: expected 3"),
    ([_dense(4, 3, type=np.array([b"pool"]))], "/layer/0/type: expected input, dense, conv or flatten, got 'pool'"),
    ([{k: v for k, v in _dense(4, 3).items() if k != "neuron/vThMant"}], "/layer/0/neuron/vThMant: missing"),
    ([_dense(4, 3, weight=np.ones((3, 5), np.float32))], "/layer/0/weight: expected 12 values"),
    ([_dense(4, 3, bias=np.full(3, 5000.0, np.float32))], "/layer/0/bias: bias mantissas must fit 13 bits"),
    ([_dense(4, 3, shape=np.array([2**30]))], "/layer/0/shape: declares 1073741824 neurons"),
])
def test_bad_files_give_one_line_naming_the_hdf5_path(tmp_path, capsys, layers, expected):
    path = tmp_path / "bad.net"
    _write(path, layers)
    assert main(["import", str(path), "--out", str(tmp_path / "n.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and expected in err, err


def test_truncated_file_is_one_line(lava_dl, tmp_path, capsys):
    data = (lava_dl / "oxford" / "network.net").read_bytes()
    path = tmp_path / "cut.net"
    path.write_bytes(data[: len(data) // 2])
    assert main(["import", str(path), "--out", str(tmp_path / "n.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(path) in err and "Traceback" not in err


def test_input_bias_shape_is_checked(lava_dl):
    network = read_netx(lava_dl / "tinynet" / "tiny.net").network
    with pytest.raises(ValueError, match="768 neurons"):
        with_input_bias(network, np.zeros((4, 4)))


def test_netx_import_takes_the_classifier_flags(lava_dl, tmp_path, capsys):
    out = tmp_path / "mnist.npz"
    model = str(lava_dl / "mnist" / "trained_mnist_network.net")
    assert main(["import", model, "--out", str(out)]) == 0
    assert "classifier: none" in capsys.readouterr().out  # 784 flat inputs: nothing to infer
    assert main(["import", model, "--out", str(out), "--classes", ",".join("0123456789")]) == 0
    network = Network.load(out)
    assert network.input_spec is None and network.readout.classes == tuple("0123456789")
    assert main(["import", model, "--out", str(tmp_path / "x.npz"), "--encoding", "spikes"]) == 2
    assert "--encoding needs a (C, H, W) input" in capsys.readouterr().err
