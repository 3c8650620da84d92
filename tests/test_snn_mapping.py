"""Core mapping under Loihi 1 limits, energy and chip-time arithmetic, runtime counters."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pipeline.snn import Conv2D, Dense, LoihiLIF, Network, Population, Sparse, build
from pipeline.snn.counters import FIELDS, LAST, TOTAL
from pipeline.snn.learning.engine import LearningRule, stdp_loihi
from pipeline.snn.mapping import LoihiSpec, MappingError, estimate_runtime, map_network

LIF = LoihiLIF(du=400, dv=300, vth=40)


def _two_layer(learning=None) -> Network:
    """input 100 -> A 50 (dense, mixed 8-bit) -> B 5 (dense, excitatory 4-bit, delay 3)."""
    rng = np.random.default_rng(1)
    return Network(n_inputs=100, populations=[Population("A", 50, LIF), Population("B", 5, LIF)], projections=[
        Dense(name="in_a", source="input", target="A", weights=rng.integers(-40, 90, size=(50, 100)),
              learning=learning),
        Dense(name="a_b", source="A", target="B", weights=rng.integers(0, 200, size=(5, 50)), num_weight_bits=4,
              delay=3)])


def _one_to_one(n: int) -> Sparse:
    return Sparse(name="one", source="input", target="big", indptr=np.arange(n + 1), indices=np.arange(n),
                  weights=np.full(n, 50))


def test_small_network_resources_by_hand():
    m = map_network(_two_layer())
    a, b = m.population("A"), m.population("B")
    assert (a.cores, b.cores, m.n_cores, m.n_chips) == ([0], [1], 2, 1)
    # A: 100 input axons; 32-bit list header each + 50 x 100 synapses x 9 bits (8 + sign, mixed)
    assert (a.max_compartments, a.max_input_axons) == (50, 100)
    assert a.max_synaptic_bytes == (100 * 32 + 50 * 100 * 9) // 8
    # every A neuron reaches B's single core: one output axon each
    assert a.max_output_axons == 50
    # B: 50 axons; 4-bit excitatory weights + 6 delay bits
    assert b.max_synaptic_bytes == (50 * 32 + 5 * 50 * (4 + 6) + 7) // 8
    assert b.max_output_axons == 0
    # cores 0 and 1 share tile 0: a message costs the within-tile 1.7 pJ; inputs enter at tile 0 too
    assert a.spike_message_pj == pytest.approx(1.7) and m.input_message_pj == pytest.approx(1.7)
    assert a.synapses == 5000 and b.synapses == 250


def test_learning_projection_costs_nine_bit_weights():
    m = map_network(_two_layer(learning=stdp_loihi(1, 2, -2, 10, 8)))
    assert m.population("A").max_synaptic_bytes == (100 * 32 + 50 * 100 * 9) // 8
    tags = LearningRule.from_strings(dw="x0*y1", dt="y0*x1", x1_impulse=8, x1_tau=4, y1_impulse=8, y1_tau=4)
    tagged = map_network(_two_layer(learning=tags))
    # weight 9 bits + tag_2 8 bits + tag_1 9 bits per synapse
    assert tagged.population("A").max_synaptic_bytes == (100 * 32 + 50 * 100 * 26) // 8


def test_benchmark_network_dense_fan_in_limits_compartments_per_core():
    """4,096 inputs -> 1,024 LIF dense (mixed 8-bit): per core 4096 x 32 header bits and 4096 x 9 bits
    per compartment: floor((1048576 - 131072) / 36864) = 24 compartments, so ceil(1024 / 24) = 43 cores."""
    rng = np.random.default_rng(0)
    net = Network(n_inputs=4096, populations=[Population("hidden", 1024, LIF), Population("out", 10, LIF)],
                  projections=[Dense(name="in", source="input", target="hidden",
                                     weights=rng.integers(-20, 40, size=(1024, 4096))),
                               Dense(name="ho", source="hidden", target="out",
                                     weights=rng.integers(-20, 40, size=(10, 1024)))])
    m = map_network(net)
    hidden = m.population("hidden")
    assert hidden.max_compartments == 24 and len(hidden.cores) == 43
    assert hidden.max_input_axons == 4096 and hidden.max_synaptic_bytes <= 128 * 1024
    assert [c.compartments for c in m.cores if c.population == "hidden"] == [24] * 42 + [16]
    assert m.population("out").cores == [43] and m.n_chips == 1
    assert "hidden" in m.report() and "44 cores on 1 chip(s)" in m.report()


def test_network_needing_several_chips():
    n = 150_000
    net = Network(n_inputs=n, populations=[Population("big", n, LIF), Population("tail", 300, LIF)],
                  projections=[_one_to_one(n),
                               Sparse(name="t", source="big", target="tail", indptr=np.arange(n + 1) // 500,
                                      indices=np.zeros(300, np.int32), weights=np.ones(300))])
    m = map_network(net)
    big = m.population("big")
    assert len(big.cores) == -(-n // 1024) == 147
    assert big.chips == [0, 1] and m.population("tail").chips == [1]
    assert m.n_chips == 2 and m.population("tail").cores == [147]
    # sparse synapses carry a 10-bit compartment index: 1 axon, 1 synapse of 8 + 10 bits per compartment
    assert big.max_synaptic_bytes == (1024 * (32 + 18) + 7) // 8


def test_conv_projection_counts_receptive_fields():
    kernel = np.random.default_rng(2).integers(-30, 30, size=(4, 1, 3, 3))
    net = Network(n_inputs=256, input_shape=(1, 16, 16), populations=[Population("conv", 4 * 14 * 14, LIF)],
                  projections=[Conv2D(name="c", source="input", target="conv", kernel=kernel, in_shape=(1, 16, 16))])
    conv = map_network(net).population("conv")
    assert conv.synapses == 4 * 14 * 14 * 9 and conv.max_input_axons == 256
    assert conv.max_synaptic_bytes == (256 * 32 + conv.synapses * (9 + 10)) // 8


def test_compartment_limit_splits_population():
    net = Network(n_inputs=0, populations=[Population("free", 2500, LIF)])
    assert [c.compartments for c in map_network(net).cores] == [1024, 1024, 452]


def test_too_many_input_axons_names_population_and_limit():
    net = Network(n_inputs=5000, populations=[Population("wide", 3, LIF)],
                  projections=[Dense(name="w", source="input", target="wide", weights=np.ones((3, 5000), int))])
    with pytest.raises(MappingError, match=r"population 'wide'.*5000 input axons, the limit is 4096"):
        map_network(net)


def test_synaptic_memory_limit_names_population():
    net = Network(n_inputs=300, populations=[Population("heavy", 2, LIF)],
                  projections=[Dense(name="h", source="input", target="heavy",
                                     weights=np.tile([[-1, 1]], (2, 150)))])
    # one compartment: 300 x 32 header bits + 300 x 9 weight bits = 12,300 bits > 1 KB
    with pytest.raises(MappingError, match=r"population 'heavy'.*12300 bits of synaptic memory, the limit is 8192"):
        map_network(net, LoihiSpec(synaptic_memory_bytes=1024))


def test_output_axon_limit_names_source_population():
    net = Network(n_inputs=1, populations=[Population("src", 1, LIF), Population("dst", 3, LIF)],
                  projections=[Dense(name="i", source="input", target="src", weights=np.ones((1, 1), int)),
                               Dense(name="s", source="src", target="dst", weights=np.ones((3, 1), int))])
    spec = LoihiSpec(compartments_per_core=1, output_axons_per_core=2)
    with pytest.raises(MappingError, match=r"population 'src'.*3 output axons, the limit is 2"):
        map_network(net, spec)


def test_chip_limit_names_population():
    n = 200_000
    net = Network(n_inputs=n, populations=[Population("big", n, LIF)], projections=[_one_to_one(n)])
    with pytest.raises(MappingError, match=r"population 'big'.*max_chips=1"):
        map_network(net, LoihiSpec(max_chips=1))


def test_energy_and_chip_time_by_hand():
    m = map_network(_two_layer())
    counts = np.zeros((2, len(FIELDS)), np.int64)
    counts[0] = [120, 40, 10, 7, 1000]    # A: synaptic ops, active, inactive, spikes, learning updates
    counts[1] = [35, 5, 0, 2, 0]          # B
    e = m.estimate(counts, input_spikes=4)
    assert e.synaptic_pj == pytest.approx(23.6 * 155)
    assert e.learning_pj == pytest.approx(120 * 1000)
    assert e.neuron_pj == pytest.approx(81 * 45 + 52 * 10)
    assert e.spike_pj == pytest.approx(1.7 * 7 + 0 * 2 + 1.7 * 4)   # B has no outgoing projection
    assert e.dynamic_pj == pytest.approx(3658 + 120000 + 4165 + 18.7)
    assert e.static_pj == pytest.approx(0.029 * 1e-3 * 1e12)   # 29 mW on one chip for one 1 ms step
    assert e.total_pj == pytest.approx(e.dynamic_pj + e.static_pj)
    # A's single core is the busiest: 120 x 3.5 + 1000 x 6.1 + 40 x 8.4 + 10 x 5.3 = 6909 ns;
    # longest route of the step: within a tile, 2.1 ns; plus the 5.8 µs step floor
    assert e.busiest_population == "A"
    assert e.chip_time_us == pytest.approx(5.8 + (6909 + 2.1) / 1000)


def test_static_power_is_charged_per_chip_over_network_time():
    counts = np.zeros((2, len(FIELDS)), np.int64)
    one_chip = map_network(_two_layer()).estimate(counts, steps=1000)
    assert one_chip.dynamic_pj == 0 and one_chip.static_pj == pytest.approx(0.029 * 1.0 * 1e12)  # 1 s at 29 mW
    assert map_network(replace(_two_layer(), dt_ms=0.5)).estimate(counts, steps=1000).static_pj == \
        pytest.approx(0.029 * 0.5 * 1e12)
    one_core_chips = LoihiSpec(cores_per_chip=1, cores_per_tile=1, tiles_x=1, tiles_y=1)
    two = map_network(_two_layer(), one_core_chips)
    assert two.n_chips == 2 and two.estimate(counts, steps=1000).static_pj == pytest.approx(2 * 0.029 * 1e12)
    assert map_network(_two_layer(), replace(LoihiSpec(), static_power_w=0.0)).estimate(counts).static_pj == 0


def test_hop_costs_across_tiles_and_chips():
    spec = LoihiSpec()
    pj, ns = spec.route([0], [4 * 9 + 1])          # tile 0 -> tile 9 = (1, 1): one E-W and one N-S hop
    assert pj[0] == pytest.approx(1.7 + 3.0 + 4.0) and ns[0] == pytest.approx(2.1 + 4.1 + 6.5)
    pj, _ = spec.route([0], [128])                 # chip 1's first tile sits 8 tiles east
    assert pj[0] == pytest.approx(1.7 + 8 * 3.0)


def test_runtime_counters_feed_the_estimate():
    net = _two_layer(learning=stdp_loihi(1, 2, -2, 10, 8, t_epoch=2, rng_seed=1))
    m = map_network(net)
    runtime = build(net, "loihi")
    runtime.warmup()
    rng = np.random.default_rng(3)
    summed = 0.0
    for _ in range(40):
        inputs = np.flatnonzero(rng.random(100) < 0.3).astype(np.int32)
        runtime.step(inputs)
        without_inputs = m.estimate(runtime.counters, LAST)
        with_inputs = estimate_runtime(runtime, m)
        assert with_inputs.spike_pj - without_inputs.spike_pj == pytest.approx(1.7 * inputs.size)
        assert with_inputs.learning_pj == pytest.approx(120 * runtime.counters.learning_updates)
        summed += without_inputs.total_pj       # dynamic + one step of static power
    total = estimate_runtime(runtime, m, total=True)
    counts = runtime.counters.array[TOTAL]
    assert counts[:, FIELDS.index("learning_updates")].sum() > 0 and total.learning_pj > 0
    assert total.steps == 40
    assert total.synaptic_pj == pytest.approx(23.6 * counts[:, FIELDS.index("synaptic_ops")].sum())
    assert total.total_pj == pytest.approx(summed)          # energy adds up over steps
    # mean per-step load of A's core (its 5,000 plastic synapses are updated every 2-step epoch)
    a = counts[0] / 40
    busy_ns = 3.5 * a[0] + 8.4 * a[1] + 5.3 * a[2] + 6.1 * a[4]
    assert total.busiest_population == "A"
    assert total.chip_time_us == pytest.approx(5.8 + (busy_ns + 2.1) / 1000)


def test_command_line_prints_table_json_and_errors(tmp_path, capsys):
    import json

    from pipeline.snn.mapping import _main

    path = tmp_path / "net.npz"
    _two_layer().save(path)
    assert _main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 cores on 1 chip(s)" in out
    assert "Davies et al. 2018 pre-silicon dynamic energy" in out and "static 29 mW per chip x 1 = 29 mW" in out
    assert _main([str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cores"] == 2 and [p["cores"] for p in report["populations"]] == [1, 1]
    assert report["static_power_mw"] == pytest.approx(29) and "measured" in report["static_power_source"]
    assert _main([str(path), "--chips", "0"]) == 1
    assert "population 'A'" in capsys.readouterr().err
