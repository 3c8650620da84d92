"""Every NIR node the importer accepts, one graph each, against an independent numpy reading of the NIR
equations (nir/ir docs; forward Euler at dt, as Norse and snnTorch discretise) in this runtime's frame:
an input at step t reaches a neuron through its projection at step t + 1 (+ Delay steps)."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.interop.nir_graph import read_nir
from pipeline.interop.trace import simulate

nir = pytest.importorskip("nir")

T = 60
DT_MS = 1.0


def _run(tmp_path, nodes: dict, edges: list, inputs: np.ndarray, dt_ms: float = DT_MS):
    """Write the graph with the nir package, import it, run it on the float backend: (network, trace)."""
    path = tmp_path / "g.nir"
    nir.write(str(path), nir.NIRGraph(nodes=nodes, edges=edges))
    network = read_nir(path, dt_ms=dt_ms).network
    return network, simulate(network, inputs.shape[0], inputs.reshape(inputs.shape[0], -1).T, backend="float")


def _inputs(shape, seed=0, rate=0.3, counts=False):
    rng = np.random.default_rng(seed)
    x = rng.random((T,) + tuple(shape)) < rate
    return (x * rng.integers(1, 4, x.shape)).astype(np.float64) if counts else x.astype(np.float64)


def _if(drive: np.ndarray, r, threshold) -> tuple[np.ndarray, np.ndarray]:
    """IF: v += r I; spike when v > threshold, then v = 0. drive (T, n) is I in the runtime frame."""
    v = np.zeros(drive.shape[1])
    vs, ss = [], []
    for t in range(drive.shape[0]):
        v = v + r * drive[t]
        s = v > threshold
        v = np.where(s, 0.0, v)
        vs.append(v.copy())
        ss.append(s)
    return np.array(vs), np.array(ss)


def _hop(values: np.ndarray, steps: int = 1) -> np.ndarray:
    """values (T, n) delayed by ``steps`` (the synapse hop)."""
    out = np.zeros_like(values)
    out[steps:] = values[:-steps]
    return out


def _check(trace, name, v, s, atol=1e-6):  # the float backend keeps float32 parameters
    np.testing.assert_allclose(trace[f"{name}_v"].reshape(-1, T).T, v, rtol=1e-5, atol=atol)
    np.testing.assert_array_equal(trace[f"{name}_s"].reshape(-1, T).T.astype(bool), s)


def _io(n_in, n_out):
    return {"input": nir.Input(input_type={"input": np.array(n_in)}),
            "output": nir.Output(output_type={"output": np.array(n_out)})}


def _if_node(shape, r=1.0, threshold=1.0):
    return nir.IF(r=np.full(shape, r), v_threshold=np.full(shape, threshold), v_reset=np.zeros(shape))


def test_linear_into_if(tmp_path):
    w = np.array([[0.5, 0.7, -0.2], [0.3, 0.0, 0.9]])
    r = np.array([1.0, 2.0])
    nodes = {**_io([3], [2]), "lin": nir.Linear(weight=w),
             "n": nir.IF(r=r, v_threshold=np.array([1.0, 1.5]), v_reset=np.zeros(2))}
    x = _inputs((3,))
    _, trace = _run(tmp_path, nodes, [("input", "lin"), ("lin", "n"), ("n", "output")], x)
    _check(trace, "n", *_if(_hop(x @ w.T), r, np.array([1.0, 1.5])))


def test_affine_into_lif_euler(tmp_path):
    w, b = np.array([[0.8, -0.3], [0.4, 0.6]]), np.array([0.05, -0.02])
    tau, r, v_leak, th = np.array([5e-3, 2e-3]), np.array([1.0, 3.0]), np.array([0.1, 0.0]), np.array([0.3, 0.5])
    nodes = {**_io([2], [2]), "aff": nir.Affine(weight=w, bias=b),
             "n": nir.LIF(tau=tau, r=r, v_leak=v_leak, v_threshold=th, v_reset=np.zeros(2))}
    x = _inputs((2,), seed=1, rate=0.5)
    _, trace = _run(tmp_path, nodes, [("input", "aff"), ("aff", "n"), ("n", "output")], x)
    k = DT_MS / 1000 / tau
    drive = _hop(x @ w.T)
    v, vs, ss = np.zeros(2), [], []
    for t in range(T):  # tau dv/dt = v_leak - v + r (W x + b); the bias and leak act from step 0
        v = v + k * (v_leak - v + r * (drive[t] + b))
        s = v > th
        v = np.where(s, 0.0, v)
        vs.append(v.copy())
        ss.append(s)
    _check(trace, "n", np.array(vs), np.array(ss))


def test_conv2d_into_if(tmp_path):
    rng = np.random.default_rng(2)
    kernel = rng.normal(0, 0.5, (2, 1, 3, 3))
    nodes = {**_io([1, 5, 5], [2, 3, 3]),
             "conv": nir.Conv2d(input_shape=(5, 5), weight=kernel, stride=2, padding=1, dilation=1, groups=1,
                                bias=np.zeros(2)),
             "n": _if_node((2, 3, 3))}
    x = _inputs((1, 5, 5), seed=3, counts=True)
    _, trace = _run(tmp_path, nodes, [("input", "conv"), ("conv", "n"), ("n", "output")], x)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((T, 2, 3, 3))
    for c in range(2):  # PyTorch cross-correlation, stride 2, padding 1
        for i in range(3):
            for j in range(3):
                out[:, c, i, j] = np.sum(padded[:, 0, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * kernel[c, 0], axis=(1, 2))
    _check(trace, "n", *_if(_hop(out.reshape(T, -1)), 1.0, 1.0))


def test_flatten_into_linear_reads_c_order(tmp_path):
    w = np.random.default_rng(4).normal(0, 0.4, (3, 8))
    nodes = {**_io([2, 2, 2], [3]), "flat": nir.Flatten(input_type={"input": np.array([2, 2, 2])}, start_dim=0, end_dim=-1),
             "lin": nir.Linear(weight=w), "n": _if_node((3,))}
    x = _inputs((2, 2, 2), seed=5)
    _, trace = _run(tmp_path, nodes, [("input", "flat"), ("flat", "lin"), ("lin", "n"), ("n", "output")], x)
    _check(trace, "n", *_if(_hop(x.reshape(T, 8) @ w.T), 1.0, 1.0))


@pytest.mark.parametrize("kind", ["SumPool2d", "AvgPool2d"])
def test_pooling_into_if(tmp_path, kind):
    pool = getattr(nir, kind)(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0]))
    nodes = {**_io([2, 4, 4], [2, 2, 2]), "pool": pool, "n": _if_node((2, 2, 2), threshold=0.6)}
    x = _inputs((2, 4, 4), seed=6, counts=True)
    # NIR's Input/Output carry no pooling output type; the graph infers it
    _, trace = _run(tmp_path, nodes, [("input", "pool"), ("pool", "n"), ("n", "output")], x)
    pooled = x.reshape(T, 2, 2, 2, 2, 2).sum(axis=(3, 5)) / (1.0 if kind == "SumPool2d" else 4.0)
    _check(trace, "n", *_if(_hop(pooled.reshape(T, -1)), 1.0, 0.6))


def test_scale_into_if(tmp_path):
    scale = np.array([0.5, 1.0, 2.0])
    nodes = {**_io([3], [3]), "sc": nir.Scale(scale=scale), "n": _if_node((3,))}
    x = _inputs((3,), seed=7, counts=True)
    _, trace = _run(tmp_path, nodes, [("input", "sc"), ("sc", "n"), ("n", "output")], x)
    _check(trace, "n", *_if(_hop(x * scale), 1.0, 1.0))


def test_delay_adds_steps(tmp_path):
    w = np.array([[1.0, 0.5]])
    nodes = {**_io([2], [1]), "lin": nir.Linear(weight=w), "d": nir.Delay(delay=np.array([0.003])),
             "n": _if_node((1,), threshold=0.9)}
    x = _inputs((2,), seed=8)
    network, trace = _run(tmp_path, nodes, [("input", "lin"), ("lin", "d"), ("d", "n"), ("n", "output")], x)
    assert network.projections[0].delay == 3  # 3 ms at dt = 1 ms
    _check(trace, "n", *_if(_hop(x @ w.T, 1 + 3), 1.0, 0.9))


def test_threshold_is_a_memoryless_spike(tmp_path):
    w = np.array([[1.0, -0.5, 0.25], [0.5, 0.5, 0.5]])
    th = np.array([0.2, 0.6])
    nodes = {**_io([3], [2]), "lin": nir.Linear(weight=w), "n": nir.Threshold(threshold=th)}
    x = _inputs((3,), seed=9, rate=0.5)
    _, trace = _run(tmp_path, nodes, [("input", "lin"), ("lin", "n"), ("n", "output")], x)
    drive = _hop(x @ w.T)
    np.testing.assert_array_equal(trace["n_s"].T.astype(bool), drive > th)


def test_li_integrates_and_never_spikes(tmp_path):
    tau, r, v_leak = np.array([4e-3, 10e-3]), np.array([1.0, 2.0]), np.array([0.0, 0.2])
    nodes = {**_io([2], [2]), "lin": nir.Linear(weight=np.eye(2) * 5.0), "n": nir.LI(tau=tau, r=r, v_leak=v_leak)}
    x = _inputs((2,), seed=10, rate=0.5)
    _, trace = _run(tmp_path, nodes, [("input", "lin"), ("lin", "n"), ("n", "output")], x)
    k, drive, v, vs = DT_MS / 1000 / tau, _hop(5.0 * x), np.zeros(2), []
    for t in range(T):
        v = v + k * (v_leak - v + r * drive[t])
        vs.append(v.copy())
    _check(trace, "n", np.array(vs), np.zeros((T, 2), bool))


def _cuba(drive, tau_syn, tau_mem, r, w_in, v_leak, threshold, bias=0.0):
    """NIR CubaLIF by forward Euler: tau_syn dI/dt = -I + w_in (x + bias); tau_mem dv/dt = v_leak - v + r I."""
    ks, km = DT_MS / 1000 / tau_syn, DT_MS / 1000 / tau_mem
    i, v, vs, ss = np.zeros(drive.shape[1]), np.zeros(drive.shape[1]), [], []
    for t in range(drive.shape[0]):
        i = i + ks * (-i + w_in * (drive[t] + bias))
        v = v + km * (v_leak - v + r * i)
        s = v > threshold
        v = np.where(s, 0.0, v)
        vs.append(v.copy())
        ss.append(s)
    return np.array(vs), np.array(ss)


CUBA = dict(tau_syn=np.array([2e-3, 4e-3]), tau_mem=np.array([5e-3, 10e-3]), r=np.array([1.0, 2.0]),
            w_in=np.array([1.0, 1.5]), v_leak=np.array([0.0, 0.05]))


def test_cubalif(tmp_path):
    w = np.array([[2.0, 0.5], [-1.0, 3.0]])
    th = np.array([0.2, 0.3])
    nodes = {**_io([2], [2]), "lin": nir.Linear(weight=w),
             "n": nir.CubaLIF(v_threshold=th, v_reset=np.zeros(2), **CUBA)}
    x = _inputs((2,), seed=11, rate=0.5)
    _, trace = _run(tmp_path, nodes, [("input", "lin"), ("lin", "n"), ("n", "output")], x)
    _check(trace, "n", *_cuba(_hop(x @ w.T), threshold=th, **CUBA))


def test_cubalif_current_bias_after_its_start_up(tmp_path, capsys):
    """An Affine bias enters the current (NIR puts it before w_in); the runtime carries its steady state on v,
    so v agrees once the start-up transient (the current's (1 - dt/tau_syn)**t, seen through v's decay) has gone."""
    w, b = np.array([[2.0, 0.5], [-1.0, 3.0]]), np.array([0.3, -0.1])
    nodes = {**_io([2], [2]), "aff": nir.Affine(weight=w, bias=b),
             "n": nir.CubaLI(**CUBA)}
    x = (np.random.default_rng(12).random((300, 2)) < 0.5).astype(np.float64)
    _, trace = _run(tmp_path, nodes, [("input", "aff"), ("aff", "n"), ("n", "output")], x)
    v, _ = _cuba(_hop(x @ w.T), threshold=np.inf, bias=b, **CUBA)  # the reference's current starts at 0
    got = trace["n_v"].T
    assert np.abs(got[:5] - v[:5]).max() > 1e-3  # the start-up differs ...
    np.testing.assert_allclose(got[200:], v[200:], rtol=1e-5, atol=1e-6)  # ... and has gone (0.9**200 = 7e-10)


def test_cubali_never_spikes(tmp_path):
    nodes = {**_io([2], [2]), "lin": nir.Linear(weight=np.eye(2) * 4.0), "n": nir.CubaLI(**CUBA)}
    x = _inputs((2,), seed=13, rate=0.5)
    _, trace = _run(tmp_path, nodes, [("input", "lin"), ("lin", "n"), ("n", "output")], x)
    _check(trace, "n", *_cuba(_hop(4.0 * x), threshold=np.inf, **CUBA))


def test_rockpool_lif_reproduces_rockpool_up_to_its_reset_by_subtraction(tmp_path):
    """lif_rockpool.nir's r = (tau/dt) exp(-dt/tau) marks Rockpool's v <- exp(-dt/tau) v + W x: imported
    that way it spikes at Rockpool's steps (450, 500, 710, 760, one hop later here); v differs only by the
    residual that Rockpool keeps after a spike (reset by subtraction, which NIR cannot express)."""
    from recordings.datasets import shared_dir

    folder = shared_dir() / "interop" / "nir"
    if not folder.exists():
        pytest.skip(f"shared data not found at {folder}")
    network = read_nir(folder / "lif_rockpool.nir", dt_ms=0.1).network
    ref = np.loadtxt(folder / "lif_csv" / "lif_rockpool.csv", delimiter=",")
    trace = simulate(network, 1000, ref[:, 0][None, :], backend="float")
    name = network.populations[0].name
    v, s = trace[f"{name}_v"][0], trace[f"{name}_s"][0]
    np.testing.assert_array_equal(np.flatnonzero(s) - 1, np.flatnonzero(ref[:, 2]))
    before_first_spike = slice(0, 450)
    assert np.abs(v[1:][before_first_spike] - ref[:-1, 1][before_first_spike]).max() < 1e-6
    residual = max(ref[k, 1] for k in np.flatnonzero(ref[:, 2]))  # what subtraction leaves above 0
    assert np.abs(v[1:] - ref[:-1, 1]).max() <= residual + 1e-6
