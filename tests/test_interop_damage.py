"""Damaged and misfitting model files: seeded mutations of the real NIR and netx files (truncation, bit flips,
deleted keys, replaced datasets) give exit 0 or a one-line error naming the file (exit 2), never a
traceback or a hang; targeted damage names the node or HDF5 path and what was expected."""
from __future__ import annotations

import os
import shutil
import signal

import numpy as np
import pytest

from pipeline.app.cli import main
from recordings.datasets import shared_dir

h5py = pytest.importorskip("h5py")
pytest.importorskip("nir")

FILES = ["lava-dl/oxford/network.net", "lava-dl/tinynet/tiny.net", "lava-dl/mnist/trained_mnist_network.net",
         "nir/lif_norse.nir", "nir/braille_noDelay_bias_zero.nir", "nir/cnn_sinabs.nir"]
CASES = 16
#: A case taking longer than this (s) is a hang (an import of these files takes well under a second).
HANG_S = 120
REPLACEMENTS = (np.array(b"zz"), np.array([-1.0, 2.0, 3.0]), np.array(np.nan), np.zeros((0,)), np.array([[1, 2], [3, 4]]),
                np.array([2**40]))


@pytest.fixture(scope="module")
def interop():
    path = shared_dir() / "interop"
    if not path.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"shared data not found at {path}")
        pytest.skip(f"shared data not found at {path} (set SPIKELOOP_DATA)")
    return path


def _keys(path):
    found = []
    with h5py.File(path, "r") as f:
        f.visit(found.append)
    return found


def _mutate(source, target, case: int, rng) -> str:
    data = source.read_bytes()
    kind = ("truncate", "flip", "delete", "replace")[case % 4]
    if kind == "truncate":
        target.write_bytes(data[: int(rng.integers(0, len(data)))])
    elif kind == "flip":
        damaged = bytearray(data)
        for _ in range(int(rng.integers(1, 9))):
            at = int(rng.integers(0, len(damaged)))
            damaged[at] ^= 1 << int(rng.integers(0, 8))
        target.write_bytes(bytes(damaged))
    else:
        shutil.copy(source, target)
        keys = _keys(source)
        key = keys[int(rng.integers(0, len(keys)))]
        with h5py.File(target, "r+") as f:
            if kind == "delete":
                del f[key]
            elif isinstance(f[key], h5py.Dataset):
                del f[key]
                f[key] = REPLACEMENTS[int(rng.integers(0, len(REPLACEMENTS)))]
    return kind


def _alarm(signum, frame):
    raise TimeoutError(f"import took more than {HANG_S} s")


@pytest.mark.parametrize("name", FILES)
def test_seeded_damage_gives_one_line_or_a_network(interop, tmp_path, capsys, name):
    source = interop / name
    rng = np.random.default_rng(sum(name.encode()))
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for case in range(CASES):
            damaged = tmp_path / f"case{case}{source.suffix}"
            kind = _mutate(source, damaged, case, rng)
            out = tmp_path / f"case{case}.npz"
            signal.alarm(HANG_S)
            try:
                code = main(["import", str(damaged), "--out", str(out)])
            finally:
                signal.alarm(0)
            captured = capsys.readouterr()
            err = captured.err.strip()
            assert code in (0, 2), (case, kind, code, err)
            assert "Traceback" not in err + captured.out, (case, kind, err)
            if code == 2:
                assert "\n" not in err and str(damaged) in err, (case, kind, err)
                assert not out.exists(), (case, kind)
            else:
                assert out.exists(), (case, kind)
    finally:
        signal.signal(signal.SIGALRM, previous)


def _edit(source, target, edits: dict):
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        for key, value in edits.items():
            del f[key]
            if value is not None:
                f[key] = value


@pytest.mark.parametrize("name, edits, expected", [
    ("nir/cnn_sinabs.nir", {"node/nodes/10/v_threshold": None}, "node '10': missing parameter 'v_threshold'"),
    ("nir/cnn_sinabs.nir", {"node/nodes/10/r": np.ones(3)}, "node '10': inconsistent parameters"),
    ("nir/cnn_sinabs.nir", {"node/nodes/9/weight": np.ones((256, 100), np.float32)},
     "node '9': input type [[100]] does not match the output type [[128]] of node '8'"),
    ("nir/cnn_sinabs.nir", {"node/nodes/4/type": np.bytes_(b"MaxPool2d")}, "node '4': unknown node type 'MaxPool2d'"),
    ("nir/lif_norse.nir", {"node/nodes/1/tau": np.array([1e-5], np.float32)}, "node '1': tau must be > dt"),
    ("lava-dl/oxford/network.net", {"layer/1/weight": np.ones((200, 100), np.float32)},
     "/layer/1/weight: expected 51200 values"),
    ("lava-dl/oxford/network.net", {"layer/0/neuron/vDecay": None}, "/layer/0/neuron/vDecay: missing"),
    ("lava-dl/tinynet/tiny.net", {"layer/2/shape": np.array([36, 2, 2])}, "/layer/2/shape: expected (36, 1, 1)"),
])
def test_targeted_damage_names_the_node_or_path(interop, tmp_path, capsys, name, edits, expected):
    damaged = tmp_path / f"bad{os.path.splitext(name)[1]}"
    _edit(interop / name, damaged, edits)
    assert main(["import", str(damaged), "--out", str(tmp_path / "n.npz"), "--dt-us", "100"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(damaged) in err and expected in err, err


def test_netx_kernel_beyond_loihi_weights_is_named_with_the_excess(interop, tmp_path, capsys):
    damaged = tmp_path / "tiny.net"
    shutil.copy(interop / "lava-dl/tinynet/tiny.net", damaged)
    with h5py.File(damaged, "r+") as f:
        kernel = f["layer/1/weight"][()]
        kernel.flat[0] = 300.0
        del f["layer/1/weight"]
        f["layer/1/weight"] = kernel
    out = tmp_path / "n.npz"
    assert main(["import", str(damaged), "--out", str(out)]) == 0  # Lava's CPU conv runs it unclipped
    assert main(["import", str(damaged), "--out", str(out), "--backend-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "layer1_conv" in err and "into 'layer1'" in err and "by 45" in err, err


def test_nir_weights_beyond_loihi_range_are_named_with_the_factor(tmp_path, capsys):
    import nir

    weight = np.array([[1.0, 1e-9], [1e7, 1.0]])  # a dynamic range no 8-bit mantissa with exponent <= 7 holds
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}), "lin": nir.Linear(weight=weight),
             "n": nir.IF(r=np.ones(2), v_threshold=np.full(2, 1e-3), v_reset=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    path = tmp_path / "wide.nir"
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=[("input", "lin"), ("lin", "n"), ("n", "output")]))
    assert main(["import", str(path), "--out", str(tmp_path / "n.npz"), "--backend-check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "projection 'lin->n'" in err and "weights do not fit" in err and "x (relative" in err, err


@pytest.mark.parametrize("command", ["import", "export", "simulate"])
def test_unwritable_out_is_one_line_and_nothing_is_left_behind(interop, tmp_path, capsys, command):
    net = tmp_path / "n.npz"
    assert main(["import", str(interop / "lava-dl/oxford/network.net"), "--out", str(net)]) == 0
    np.save(tmp_path / "x.npy", np.zeros((200, 3)))
    args = {"import": ["import", str(interop / "lava-dl/oxford/network.net")],
            "export": ["export", str(net)],
            "simulate": ["simulate", str(net), "--input-spikes", str(tmp_path / "x.npy"), "--steps", "3"]}[command]
    capsys.readouterr()
    for out in (tmp_path / "missing" / "o", tmp_path):
        assert main(args + ["--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(out) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.npz", "x.npy"]
