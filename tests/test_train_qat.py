"""Quantization-aware training runs the loihi backend's dynamics: the trainer's forward pass and the loihi
runtime (pipeline.snn.build, an independent step-by-step implementation checked against Lava) produce the
same spikes and membrane voltages, step for step, on real N-MNIST recordings; likewise the float forward
and the float backend. Also the shipped N-MNIST model (made by this trainer)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.snn import build
from pipeline.snn.model import InputSpec, Readout
from pipeline.snn.network import Network
from pipeline.train.bptt import batch_events, classify, evaluate, output_summary, runtime_predict
from pipeline.train.lif_stack import LifStack, compile_network, forward
from pipeline.train.present import present_file
from recordings.labelled import open_labelled

MODEL = Path(__file__).resolve().parents[1] / "pipeline" / "train" / "models" / "nmnist.npz"
#: The shipped model's accuracy on the 100 nmnist_small/test recordings on the loihi backend (README, Training).
SHIPPED_TEST_ACCURACY = 0.96


def recordings(data_dir, spec, shape, n, folder="test"):
    labelled = open_labelled(data_dir / "nmnist_small" / folder, data_dir / "nmnist_small" / f"{folder}_labels.txt")
    paths = labelled.paths[:n]
    return [present_file(p, spec, shape, int(np.prod(shape))) for p in paths], np.array(labelled.labels[:n])


def run_runtime(network, presentation, backend, populations):
    runtime = build(network, backend)
    spikes = {name: [] for name in populations}
    v = []
    graded = network.input_spec.encoding == "counts"
    for t in range(presentation.n_steps):
        lo, hi = presentation.indptr[t], presentation.indptr[t + 1]
        runtime.step(presentation.index[lo:hi], presentation.count[lo:hi] if graded else None)
        for name in populations:
            spikes[name].append(runtime.spikes_of(name).copy())
        v.append(runtime.v("output").copy())
    return {k: np.array(s) for k, s in spikes.items()}, np.array(v)


@pytest.mark.parametrize("mode", ["loihi", "float"])
@pytest.mark.parametrize("recurrent, encoding", [(False, "spikes"), (True, "counts")])
def test_forward_is_the_runtime_step_for_step(data_dir, mode, recurrent, encoding):
    spec = InputSpec(encoding=encoding, scale=2, duration_us=120_000, tail_steps=2)
    shape = (2, 17, 17)
    presentations, labels = recordings(data_dir, spec, shape, 6)
    rng = np.random.default_rng(3)
    stack = LifStack([578, 40, 10], mode, 5.0, 20.0, 1.0, recurrent, 1024, [0.25, 2.0], rng, init_gain=2.0,
                     input_rate=0.005)
    network = stack.network(shape, spec, Readout(classes=tuple("0123456789")))
    assert network.is_float == (mode == "float")
    indptr, index, count, n_steps = batch_events(presentations)
    traces = forward(compile_network(network), indptr, index, count, n_steps)
    assert traces[0].spikes.mean() > 0.005 and traces[1].spikes.any()        # the layers are active
    for b, p in enumerate(presentations):
        spikes, v = run_runtime(network, p, "loihi" if mode == "loihi" else "float", ["hidden0", "output"])
        np.testing.assert_array_equal(traces[0].spikes[b], spikes["hidden0"])
        np.testing.assert_array_equal(traces[1].spikes[b], spikes["output"])
        post = np.where(traces[1].spikes[b].astype(bool), 0.0, traces[1].vnorm[b])
        threshold = 1024 * 64 if mode == "loihi" else 1.0
        if mode == "loihi":
            np.testing.assert_array_equal(np.round(post * threshold).astype(np.int64), v)   # integers, exactly
        else:
            np.testing.assert_allclose(post, v, rtol=1e-6, atol=1e-6)
    # the layers' kernel arguments straight from the stack are those of its network description
    for a, b in zip(stack.layers(), compile_network(network)):
        np.testing.assert_array_equal(a.weights, b.weights)
        assert a.shift == b.shift


def test_shipped_model_classifies_real_recordings(data_dir):
    network = Network.load(MODEL)
    assert not network.is_float and network.input_spec is not None and network.readout.kind == "count"
    presentations, labels = recordings(data_dir, network.input_spec, network.input_shape, 100)
    deployed = runtime_predict(network, presentations[:10], "loihi")
    assert np.mean(deployed == labels[:10]) >= 0.9
    metrics = evaluate(network, presentations, labels)
    assert metrics["runtime_agreement"] == 1.0
    assert metrics["loihi_test_accuracy"] == metrics["test_accuracy"] == SHIPPED_TEST_ACCURACY
    counts, vmax = output_summary(forward(compile_network(network), *batch_events(presentations[:4]))[-1])
    np.testing.assert_array_equal(classify(counts, vmax, "count"), deployed[:4])


def test_clips_of_different_lengths_classify_as_on_the_runtime(data_dir):
    """A batch pads every clip to its longest; the padding neither counts nor trains: the trainer's decision on
    spoken digits of different lengths (the shipped FSDD model, cochlea input) is the loihi runtime's, each clip
    run alone for exactly its own steps."""
    from pipeline.snn.ensemble import member
    from pipeline.train.bptt import predict

    network = member(Network.load(MODEL.parent / "fsdd_digits.npz"), 0)  # the shipped ensemble's first network
    paths = sorted((data_dir / "audio" / "fsdd").glob("*_[0-1].wav"))[::5][:12]
    presentations = [present_file(p, network.input_spec, None, network.n_inputs) for p in paths]
    assert len({p.n_steps for p in presentations}) > 6                       # clips of many lengths in one batch
    trained = predict(compile_network(network), presentations, network.readout.kind)
    np.testing.assert_array_equal(trained, runtime_predict(network, presentations, "loihi"))
