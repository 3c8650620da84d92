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
