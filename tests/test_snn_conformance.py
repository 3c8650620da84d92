"""The loihi backend against Lava 0.10's bit-accurate outputs (../shared/conformance/loihi)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.app.cli import main
from pipeline.snn.conformance import run_file, summary


@pytest.fixture(scope="module")
def reference(conformance_dir):
    return conformance_dir / "loihi" / "lava_reference.npz"


def test_every_integer_of_every_scenario_matches(reference):
    checks = run_file(reference)
    with np.load(reference) as data:
        scenarios = sorted({k.split("_")[0] for k in data.files if k.endswith(("_weights", "_W1"))})
        recorded = {(c.scenario, c.quantity): data[f"{c.scenario}_{c.quantity}"] for c in checks}
    assert sorted({c.scenario for c in checks}) == scenarios == ["A", "B", "C", "D", "E", "F"]
    assert len(checks) == 18
    for check in checks:
        assert check.ok, f"{check.scenario}/{check.quantity}: {check.mismatch}"
        assert check.shape == recorded[(check.scenario, check.quantity)].shape
    # The scenarios really exercise what they claim: spikes happen, C/F leave the 24-bit range.
    assert all(recorded[(s, "spikes")].sum() > 0 for s in "ABE")
    assert recorded[("C", "v")].min() == -(2**23 - 1)
    assert recorded[("F", "u")].max() > 2**23


def test_cli_json_and_exit_status(reference, capsys):
    assert main(["conformance", "loihi", str(reference), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {**{s: {"spikes": True, "v": True, "u": True} for s in "ABCEF"},
                      "D": {"s1": True, "s2": True, "v2": True}}


def test_a_changed_reference_value_is_reported_with_step_and_neuron(reference, tmp_path, capsys):
    with np.load(reference) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["B_v"] = arrays["B_v"].copy()
    arrays["B_v"][57, 3] += 1
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    assert main(["conformance", "loihi", str(bad), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["B"] == {"spikes": True, "v": False, "u": True}
    assert main(["conformance", "loihi", str(bad)]) == 1
    table = capsys.readouterr().out
    expected = arrays["B_v"][57, 3]
    assert f"step 57, neuron 3: expected {expected}, got {expected - 1}" in table
    assert "17 of 18 recorded arrays match exactly" in table


def test_sizes_and_length_come_from_the_arrays(reference, tmp_path):
    """A shorter, single-scenario file with a different size still runs (no built-in constants)."""
    with np.load(reference) as data:
        arrays = {k: data[k] for k in data.files if k.startswith("A_")}
    T = 50
    arrays["A_spikes_in"] = arrays["A_spikes_in"][:10, :T]
    arrays["A_weights"] = arrays["A_weights"][:, :10]
    for key in ("A_spikes", "A_v", "A_u"):
        arrays[key] = arrays[key][:T]
    small = tmp_path / "small.npz"
    np.savez(small, **arrays)
    checks = run_file(small)
    assert {c.quantity: c.shape for c in checks} == {"spikes": (T, 8), "v": (T, 8), "u": (T, 8)}
    # dropping 6 inputs changes the answer after the first input spike arrives
    assert not all(c.ok for c in checks)


def test_missing_key_names_file_and_key(reference, tmp_path, capsys):
    with np.load(reference) as data:
        arrays = {k: data[k] for k in data.files if k.startswith("E_") and k != "E_param_dv"}
    broken = tmp_path / "broken.npz"
    np.savez(broken, **arrays)
    assert main(["conformance", "loihi", str(broken)]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "'E_param_dv'" in err


def test_summary_layout():
    from pipeline.snn.conformance import Check, Mismatch
    checks = [Check("A", "spikes", (2, 1), None), Check("A", "v", (2, 1), Mismatch(1, (0,), 5, 4))]
    assert summary(checks) == {"A": {"spikes": True, "v": False}}


def test_learning_reference_file_is_checked_weight_by_weight(conformance_dir, tmp_path, capsys):
    path = conformance_dir / "loihi" / "lava_learning_reference.npz"
    assert main(["conformance", "loihi", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"learning": {"weights": True, "x1": True, "y1": True, "a_out": True}}
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["weights"] = arrays["weights"].copy()
    arrays["weights"][100, 2, 4] += 2
    bad = tmp_path / "learning_bad.npz"
    np.savez(bad, **arrays)
    assert main(["conformance", "loihi", str(bad)]) == 1
    assert "step 100, synapse (post, pre) (2, 4)" in capsys.readouterr().out


@pytest.fixture(scope="module")
def structures(conformance_dir):
    return conformance_dir / "loihi" / "lava_structures_reference.npz"


def test_structures_file_passes_every_scenario(structures, capsys):
    assert main(["conformance", "loihi", str(structures), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {s: {"spikes": True, "v": True, "u": True}
                      for s in ("S", "R", "Y1", "Y2", "K1", "K2", "K3", "B1", "B2")}
    with np.load(structures) as data:
        assert all(data[f"{s}_spikes"].sum() > 0 for s in data["scenarios"])  # every scenario spikes
        # B2 (graded) has steps with 5 or more active inputs: the graded Dense input's four-rows-per-pass
        # loop and its one-row tail both run against Lava's outputs.
        assert np.count_nonzero(data["B2_spikes_in"], axis=0).max() >= 5


def _changed_copy(structures, tmp_path, keep: str, **changes):
    with np.load(structures) as data:
        arrays = {k: data[k] for k in data.files if k.startswith(keep + "_")}
    arrays["scenarios"] = np.array([keep])
    arrays.update(changes)
    path = tmp_path / f"{keep}.npz"
    np.savez(path, **arrays)
    return path


def test_unknown_scenario_kind_fails_loudly(structures, tmp_path, capsys):
    path = _changed_copy(structures, tmp_path, "S", S_kind=np.array("RingBuffer -> Mystery -> LIF"))
    assert main(["conformance", "loihi", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "scenario S" in err and "Mystery" in err


def test_conv_orientation_and_unclipped_weights_matter(structures, tmp_path):
    # An unflipped kernel (cross-correlation) or a truncated odd weight both change K3's traces.
    with np.load(structures) as data:
        weight = data["K3_weight"]
    flipped = _changed_copy(structures, tmp_path, "K3", K3_weight=weight[:, ::-1, ::-1, :].copy())
    assert not all(c.ok for c in run_file(flipped))
    truncated = _changed_copy(structures, tmp_path, "K3", K3_weight=(weight >> 1) << 1)
    assert not all(c.ok for c in run_file(truncated))


def test_delays_shift_each_partial_sum():
    # Weights 1 and 1 with weight_exp -1 and delays 1 and 0: spikes sent at steps 0 and 1 both arrive at
    # step 2. Lava floors each partial sum (1 >> 1 = 0, twice) rather than the total (2 >> 1 = 1).
    from pipeline.snn import INPUT, Dense, LoihiLIF, Network, Population, build

    net = Network(n_inputs=2, populations=[Population("p", 1, LoihiLIF(du=4095, dv=0, vth=1000), probe_u=True)],
                  projections=[Dense(name="d", source=INPUT, target="p", weights=np.array([[1, 1]]),
                                     weight_exp=-1, delay=np.array([[1, 0]]))])
    runtime = build(net, "loihi")
    us = []
    for active in ([0], [1], [], []):
        runtime.step(np.array(active, dtype=np.int32))
        us.append(int(runtime.u("p")[0]))
    assert us == [0, 0, 0, 0]
    together = build(net.with_projection("d", delay=0), "loihi")  # same step: one sum, floored once
    together.step(np.array([0, 1], dtype=np.int32))
    together.step(np.array([], dtype=np.int32))
    assert int(together.u("p")[0]) == 1 << 6
