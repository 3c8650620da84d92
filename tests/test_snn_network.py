"""Network description: save/load round trip (no pickle), parameter validation, runtime API."""
from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest

from pipeline.snn import INPUT, Conv2D, Dense, FloatLIF, LoihiLIF, Network, Population, Sparse, build
from pipeline.snn.learning.rule import stdp_loihi
from pipeline.snn.model import InputSpec, Readout


def mixed_network() -> Network:
    rng = np.random.default_rng(11)
    conv = Conv2D(name="conv", source=INPUT, target="c", kernel=rng.integers(-80, 120, (2, 2, 3, 3)),
                  in_shape=(2, 6, 6), stride=(1, 1), padding=(1, 1), delay=2, weight_exp=1)
    hidden = Sparse.from_dense(rng.integers(-50, 90, (20, 72)) * (rng.random((20, 72)) < 0.3),
                               name="sparse", source="c", target="h", num_weight_bits=6)
    out = Dense(name="out", source="h", target="o", weights=rng.integers(-100, 150, (4, 20)),
                delay=rng.integers(0, 4, (4, 20)))
    recurrent = Dense(name="rec", source="h", target="h", weights=-np.eye(20, dtype=np.int64) * 40)
    return Network(
        n_inputs=72, input_shape=(2, 6, 6), output="o",
        populations=[Population("c", 72, LoihiLIF(du=500, dv=300, vth=60, bias_mant=3, bias_exp=2)),
                     Population("h", 20, LoihiLIF(du=900, dv=100, vth=40, refractory=2), probe_v=True),
                     Population("o", 4, LoihiLIF(du=200, dv=400, vth=np.arange(20, 24)), probe_u=True)],
        projections=[conv, hidden, out, recurrent])


def spike_record(network: Network, backend: str, steps: int = 80) -> np.ndarray:
    rng = np.random.default_rng(5)
    runtime = build(network, backend)
    return np.array([runtime.step(np.flatnonzero(rng.random(network.n_inputs) < 0.2).astype(np.int32)).copy()
                     for _ in range(steps)])


def test_save_load_round_trip_gives_identical_runs(tmp_path):
    network = mixed_network()
    path = tmp_path / "net.npz"
    network.save(path)
    with np.load(path, allow_pickle=False) as data:  # loads without pickle
        assert all(data[k].dtype != object for k in data.files)
    loaded = Network.load(path)
    assert [p.name for p in loaded.populations] == ["c", "h", "o"]
    assert loaded.input_shape == (2, 6, 6) and loaded.output == "o" and loaded.n_outputs == 4
    assert isinstance(loaded.projections[0], Conv2D) and loaded.projections[0].delay == 2
    np.testing.assert_array_equal(loaded.projections[2].delay, network.projections[2].delay)
    assert loaded.populations[1].probe_v and not loaded.populations[1].probe_u
    for backend in ("loihi", "float"):
        before, after = spike_record(network, backend), spike_record(loaded, backend)
        assert before.sum() > 0
        np.testing.assert_array_equal(before, after)


def test_float_network_round_trip(tmp_path):
    network = Network(n_inputs=3, populations=[Population("p", 2, FloatLIF(tau_syn_ms=np.inf, tau_mem_ms=7.5,
                                                                           threshold=[1.0, 2.0], bias=0.25))],
                      projections=[Dense(name="d", source=INPUT, target="p", weights=np.full((2, 3), 0.3))], dt_ms=0.5)
    network.save(tmp_path / "f.npz")
    loaded = Network.load(tmp_path / "f.npz")
    assert loaded.dt_ms == 0.5 and loaded.is_float
    assert loaded.populations[0].neuron.threshold.tolist() == [1.0, 2.0]
    assert np.isinf(loaded.populations[0].neuron.tau_syn_ms).all()
    np.testing.assert_array_equal(spike_record(loaded, "float", 30), spike_record(network, "float", 30))


def test_load_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "net.npz"
    mixed_network().save(path)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "pop1_du"}
    np.savez(tmp_path / "cut.npz", **arrays)
    with pytest.raises(ValueError, match=r"cut\.npz: missing key 'pop1_du'"):
        Network.load(tmp_path / "cut.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        Network.load(tmp_path / "junk.npz")


@pytest.mark.parametrize("key, value, message", [
    ("proj0_ends", np.array(["input", "c", "h"]), r"key 'proj0_ends' must hold 2 values, got <U5 of shape \(3,\)"),
    ("pop1_probe", np.array([True]), r"key 'pop1_probe' must hold 2 values"),
    ("format_version", np.array("one"), r"key 'format_version' must be one integer"),
    ("pop0_size", np.array([72, 72]), r"key 'pop0_size' must be one integer, got int64 of shape \(2,\)"),
    ("pop0_kind", np.array(["loihi", "loihi"]), r"key 'pop0_kind' must be one text"),
    ("proj1_weight_exp", np.array(1.5), r"key 'proj1_weight_exp' must be one integer"),
    ("proj1_prepare_weights", np.array([True, False]), r"key 'proj1_prepare_weights' must be one value"),
    ("proj0_geometry", np.array(["2"] * 7), r"key 'proj0_geometry' must hold 7 or 10 values, got <U1"),
    ("population_names", np.array([["c", "h", "o"]]), r"key 'population_names' must hold a list of values"),
    ("input_shape", np.array([2.0, 6.0, 6.0]), r"key 'input_shape' must hold 0 or 3 values, got float64"),
    ("dt_ms", np.array(np.inf), r"network: parameter 'dt_ms' must be a finite number > 0, got inf"),
    ("output", np.array("nowhere"), r"network: parameter 'output' must name a population"),
    ("readout_votes", np.array([["1", "0"]] * 4), r"key 'readout_votes' must hold numbers, got dtype <U1"),
    ("readout_assignment", np.array([0.5, 1.0, 0.0, 1.0]),
     r"key 'readout_assignment' must hold integers, got dtype float64"),
    ("readout_classes", np.array(["a", "a"]), r"readout: parameter 'classes' names class 'a' twice"),
])
def test_a_damaged_key_is_one_error_naming_the_file_and_key(tmp_path, key, value, message):
    """A hand-edited network file: a value of the wrong shape or type (ValueError/TypeError inside the reader
    before) is refused naming the file and the key; what a description refuses names its parameter."""
    network = replace(mixed_network(), readout=Readout("vote", classes=("a", "b"), votes=np.eye(2)[[0, 1, 0, 1]]))
    network.save(tmp_path / "net.npz")
    with np.load(tmp_path / "net.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays[key] = value
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"bad\.npz: " + message):
        Network.load(tmp_path / "bad.npz")


def test_sizes_a_file_declares_are_bounded_before_anything_is_allocated(tmp_path):
    """A population's size comes with one stored value per neuron (save() writes them so): a scalar parameter
    with pop<i>_size = 10^12 would have allocated 8 TB (MemoryError) while reading; n_inputs is capped."""
    network = mixed_network()
    network.save(tmp_path / "net.npz")
    with np.load(tmp_path / "net.npz") as data:
        arrays = {k: data[k] for k in data.files}
    ghost = dict(arrays, pop2_size=np.array(10**12), **{f"pop2_{k}": arrays[f"pop2_{k}"][:1].reshape(())
                                                        for k in ("du", "dv", "vth", "bias_mant", "bias_exp",
                                                                  "refractory")})
    np.savez(tmp_path / "ghost.npz", **ghost)
    with pytest.raises(ValueError, match=r"ghost\.npz: key 'pop2_du' must hold 1000000000000 values \(key "
                                         r"'pop2_size'\), got shape \(\)"):
        Network.load(tmp_path / "ghost.npz")
    np.savez(tmp_path / "wide.npz", **dict(arrays, n_inputs=np.array(1 << 40)))
    with pytest.raises(ValueError, match=r"wide\.npz: key 'n_inputs' is 1099511627776, expected 0\.\.16777216"):
        Network.load(tmp_path / "wide.npz")


def test_a_conv_kernel_that_would_expand_past_the_synapse_budget_is_refused_on_load(tmp_path):
    """A Conv2D file stores only its kernel and grid; building it expands every output position x tap x channel
    pair: a (1, 2, 255, 255) kernel over a padded 1024 x 1024 grid (a few bytes of header, ~1 MB of kernel)
    would ask for 1.4e11 synapses (~6 TB at ~48 bytes each). Refused while loading, naming the file, projection and key."""
    network = mixed_network()
    network.save(tmp_path / "net.npz")
    with np.load(tmp_path / "net.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(proj0_kernel=np.ones((1, 2, 255, 255), np.int64),
                  proj0_geometry=np.array([2, 1024, 1024, 1, 1, 127, 127, 1, 1, 1]))
    np.savez(tmp_path / "wide_conv.npz", **arrays)
    with pytest.raises(ValueError, match=r"wide_conv\.npz.*projection 'conv': parameter 'kernel' \(1, 2, 255, 255\) "
                                         r"over an output grid \(1, 1024, 1024\) expands to 136,367,308,800 "
                                         r"synapses, more than 33,554,432"):
        Network.load(tmp_path / "wide_conv.npz")


def _neuron(network: Network, population: str, **changes) -> Network:
    """The network with some LIF parameters of one population changed."""
    return network.with_population(population, neuron=replace(network.population(population).neuron, **changes))


@pytest.mark.parametrize("change, message", [
    (lambda n: _neuron(n, "h", du=4096), r"population 'h': parameter 'du' must be in \[0, 4095\], got 4096"),
    (lambda n: _neuron(n, "o", vth=np.array([1, 2, -3, 4])), r"population 'o': parameter 'vth' .* got -3"),
    (lambda n: _neuron(n, "c", bias_exp=9), r"population 'c': parameter 'bias_exp'"),
    (lambda n: _neuron(n, "c", dv=np.zeros(5, int)), r"population 'c': parameter 'dv' must be a scalar or have shape \(72,\)"),
    (lambda n: _neuron(n, "h", refractory=0.5), r"population 'h': parameter 'refractory' must be an integer"),
    (lambda n: n.with_population("h", size=0), r"population 'h': parameter 'size'"),
    (lambda n: n.with_projection("out", delay=63), r"projection 'out': parameter 'delay' must be in \[0, 62\]"),
    (lambda n: n.with_projection("rec", weights=np.zeros((20, 19), int)), r"projection 'rec': parameter 'weights' must have shape \(20, 20\)"),
    (lambda n: n.with_projection("out", target="nowhere"), r"projection 'out': parameter 'target'"),
    (lambda n: n.with_projection("conv", weight_exp=8), r"projection 'conv': parameter 'weight_exp'"),
    (lambda n: n.with_projection("sparse", num_weight_bits=9), r"projection 'sparse': parameter 'num_weight_bits'"),
    (lambda n: n.with_projection("conv", in_shape=(2, 6, 5)), r"projection 'conv': parameter 'in_shape'"),
    (lambda n: n.with_projection("sparse", indices=n.projection("sparse").indices + 100), r"projection 'sparse': parameter 'indices'"),
    (lambda n: n.with_projection("rec", weights=np.full((20, 20), 0.5)), r"projection 'rec': parameter 'weights' must be integers"),
    (lambda n: replace(n, output="nowhere"), (r"network: parameter 'output' must name a population "
                                              r"\['c', 'h', 'o'\], got 'nowhere'")),
    (lambda n: replace(n, dt_ms=np.inf), r"network: parameter 'dt_ms' must be a finite number > 0, got inf"),
])
def test_bad_parameters_raise_value_errors_naming_owner_and_parameter(change, message):
    with pytest.raises(ValueError, match=message):
        build(change(mixed_network()), "loihi")


def test_descriptions_are_frozen_values():
    network = mixed_network()
    with pytest.raises(FrozenInstanceError):
        network.projections[2].weights = np.zeros((4, 20), int)
    with pytest.raises(FrozenInstanceError):
        network.populations[1].neuron.du = 10
    with pytest.raises(ValueError, match="read-only"):
        network.projection("out").weights[0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        network.population("o").neuron.vth[0] = 1
    # arrays are copied on construction: the caller's array stays the caller's
    weights = np.ones((2, 3), dtype=np.int64)
    small = Network(n_inputs=3, populations=[Population("p", 2)],
                    projections=[Dense(name="d", source=INPUT, target="p", weights=weights)])
    weights[:] = 7
    assert small.projection("d").weights.sum() == 6 and weights.flags.writeable
    # replace keeps every other part as it was (no copy of frozen arrays)
    changed = network.with_projection("out", weight_exp=-1)
    assert changed.projection("out").weight_exp == -1 and network.projection("out").weight_exp == 0
    assert changed.projection("out").weights is network.projection("out").weights
    assert changed.projections[0] is network.projections[0] and changed.populations == network.populations


def test_a_runtime_keeps_what_it_was_built_from():
    """A changed description is a new network: the runtime built before keeps running the old one, a new
    build runs the new one (the zero-weight ablation as an example)."""
    network = mixed_network()
    before = build(network, "loihi")
    silent = replace(network, projections=[replace(p, weights=np.zeros_like(p.weights)) if hasattr(p, "weights")
                                           else replace(p, kernel=np.zeros_like(p.kernel)) for p in network.projections])
    after = build(silent, "loihi")
    reference = build(mixed_network(), "loihi")
    rng = np.random.default_rng(2)
    spikes = {"before": 0, "after": 0}
    for _ in range(60):
        active = np.flatnonzero(rng.random(72) < 0.2).astype(np.int32)
        np.testing.assert_array_equal(before.step(active), reference.step(active))
        spikes["before"] += int(before.spikes_of("h").sum())
        after.step(active)
        spikes["after"] += int(after.spikes_of("h").sum())
    assert spikes["before"] > 0 and spikes["after"] == 0


def test_old_learning_class_names_still_load(tmp_path):
    """Files name the rule class; files written before the registry named it module:qualname (the module
    was pipeline.snn.learning_rule, then pipeline.snn.learning.rule). All of them load; other modules do not."""
    rule = stdp_loihi(1, 2, -2, 10, 8, t_epoch=2, rng_seed=42)
    network = Network(n_inputs=4, populations=[Population("p", 3, LoihiLIF(du=100, dv=100, vth=20))],
                      projections=[Dense(name="d", source=INPUT, target="p", weights=np.full((3, 4), 40), learning=rule)])
    network.save(tmp_path / "net.npz")
    with np.load(tmp_path / "net.npz") as data:
        arrays = {k: data[k] for k in data.files}
    assert str(arrays["proj0_learning_class"]) == "LearningRule"
    for name in ("pipeline.snn.learning_rule:LearningRule", "pipeline.snn.learning.rule:LearningRule"):
        np.savez(tmp_path / "old.npz", **{**arrays, "proj0_learning_class": np.array(name)})
        assert Network.load(tmp_path / "old.npz").projection("d").learning == rule
    for name, message in (("os:system", "only pipeline.snn learning rules load"),
                          ("pipeline.snn.network:Network", "expected one of \\['LearningRule'\\]")):
        np.savez(tmp_path / "bad.npz", **{**arrays, "proj0_learning_class": np.array(name)})
        with pytest.raises(ValueError, match=rf"bad\.npz: key 'proj0_learning_class'.*{message}"):
            Network.load(tmp_path / "bad.npz")


def test_float_population_needs_conversion_for_loihi():
    network = Network(n_inputs=1, populations=[Population("p", 1, FloatLIF())])
    with pytest.raises(ValueError, match="to_loihi"):
        build(network, "loihi")
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        build(network, "gpu")
    with pytest.raises(ValueError, match=r"population 'p': parameter 'tau_mem_ms'"):
        build(Network(n_inputs=1, populations=[Population("p", 1, FloatLIF(tau_mem_ms=-1.0))]), "float")


def test_step_contract_counters_probes_and_reset():
    network = mixed_network()
    runtime = build(network, "loihi")
    runtime.warmup()
    assert runtime.counters.total()["steps"] == 0
    with pytest.raises(ValueError, match=r"input index 72 at position 1 is outside \[0, 72\)"):
        runtime.step(np.array([3, 72], dtype=np.int32))
    with pytest.raises(ValueError, match="1-D integer array"):
        runtime.step(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"input index -1 is outside"):
        runtime.step(np.array([-1, 4], dtype=np.int64))
    assert runtime.counters.total()["steps"] == 0  # rejected steps change nothing
    out = runtime.step(list(range(0, 72, 3)))  # any integer sequence is accepted
    assert out.dtype == np.uint8 and out.shape == (network.n_outputs,)
    conv_synapses = network.projections[0].synapses(72, 72)[0]
    expected_ops = sum(int(conv_synapses[i + 1] - conv_synapses[i]) for i in range(0, 72, 3))
    last = runtime.counters.by_population(0)
    assert last["c"]["synaptic_ops"] == expected_ops  # synapses counted at the target population
    assert last["c"]["active_updates"] == 72  # bias 3 << 2 makes every neuron of "c" active
    assert last["h"]["inactive_updates"] == 20 and last["o"]["inactive_updates"] == 4
    assert runtime.counters.synaptic_ops == expected_ops
    with pytest.raises(ValueError, match="not probed"):
        runtime.u("h")
    assert runtime.v("h").shape == (20,) and runtime.u("o").shape == (4,)
    total_spikes = int(runtime.counters.last()["spikes"])
    for _ in range(50):
        runtime.step(np.arange(0, 72, 2, dtype=np.int32))
        total_spikes += int(runtime.spikes_of("c").sum() + runtime.spikes_of("h").sum() + runtime.spikes_of("o").sum())
    assert runtime.counters.total()["spikes"] == total_spikes > 0
    assert runtime.counters.total()["steps"] == 51
    first = [runtime.step(np.arange(5, dtype=np.int32)).copy() for _ in range(20)]
    runtime.reset()
    assert runtime.counters.total()["steps"] == 0 and not any(a.any() for a in runtime.state)
    runtime.step(np.arange(0, 72, 3, dtype=np.int32))
    for _ in range(50):
        runtime.step(np.arange(0, 72, 2, dtype=np.int32))
    assert runtime.counters.total()["spikes"] == total_spikes
    again = [runtime.step(np.arange(5, dtype=np.int32)).copy() for _ in range(20)]
    np.testing.assert_array_equal(first, again)  # reset returns to the initial state exactly


def test_classifier_input_spec_and_readout_travel_with_the_network(tmp_path):
    net = Network(n_inputs=4, populations=[Population("out", 3, LoihiLIF(vth=10))],
                  projections=[Dense(name="w", source=INPUT, target="out", weights=np.ones((3, 4)))],
                  input_spec=InputSpec(encoding="counts", tail_steps=5, duration_us=300_000),
                  readout=Readout("assignment", classes=("a", "b"), assignment=[0, 1, -1]))
    net.save(tmp_path / "m.npz")
    back = Network.load(tmp_path / "m.npz")
    assert back.input_spec == net.input_spec
    assert back.readout.kind == "assignment" and back.readout.classes == ("a", "b")
    assert back.readout.assignment.tolist() == [0, 1, -1]
    voting = replace(net, readout=Readout("vote", classes=("a", "b"), votes=[[0.5, 0.5], [1, 0], [0, 0]]))
    voting.save(tmp_path / "v.npz")
    assert Network.load(tmp_path / "v.npz").readout.votes.tolist() == [[0.5, 0.5], [1, 0], [0, 0]]
    with pytest.raises(ValueError, match="'votes' has 2 rows"):
        replace(net, readout=Readout("vote", classes=("a", "b"), votes=[[1, 0], [0, 1]])).save(tmp_path / "x.npz")
    plain = replace(net, input_spec=None, readout=None)
    plain.save(tmp_path / "p.npz")
    assert Network.load(tmp_path / "p.npz").readout is None


@pytest.mark.parametrize("make, message", [
    (lambda: dict(readout=Readout("count", classes=("a", "b"))), "2 classes"),
    (lambda: dict(input_spec=InputSpec(encoding="frames")), "'encoding'"),
    (lambda: dict(input_spec=InputSpec(duration_us=10**13)), "steps"),
])
def test_bad_classifier_descriptions_name_the_parameter(make, message):
    with pytest.raises(ValueError, match=message):
        Network(n_inputs=4, populations=[Population("out", 3, LoihiLIF(vth=10))],
                projections=[Dense(name="w", source=INPUT, target="out", weights=np.ones((3, 4)))], **make())
