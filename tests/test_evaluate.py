"""spikeloop evaluate and the streaming classifier: hand-built networks whose decisions and latencies follow
from their wiring, the NIR paper's N-MNIST CNN against an independent presentation (the raw N-MNIST
bytes, tonic's ToFrame by hand), and bad input."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.app.cli import main
from pipeline.decoders.classifier import ClassifierDecoder
from pipeline.snn.model import InputSpec, Readout
from pipeline.snn.network import Dense, FloatLIF, LoihiLIF, Network, Population
from pipeline.snn.runtime import build
from pipeline.train.evaluate import ModelError, evaluate, prepare
from recordings.labelled import open_labelled

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "pipeline" / "train" / "models" / "nmnist.npz"  # made by spikeloop train (launch/train_nmnist.toml)
GRID = (2, 34, 34)  # (C, H, W): N-MNIST's grid; class c lives in columns 3c..3c+2
N_IN = 2 * 34 * 34


# -- hand-built data and networks -------------------------------------------------------------------------

def write_nmnist(path: Path, x, y, p, t_us) -> None:
    """N-MNIST 40-bit records written by hand: x, y, polarity bit 7 | t bits 22..16, t bits 15..8, t bits 7..0."""
    x, y, p, t = (np.asarray(a, dtype=np.int64) for a in (x, y, p, t_us))
    records = np.stack([x, y, (p << 7) | (t >> 16), (t >> 8) & 255, t & 255], axis=1).astype(np.uint8)
    path.write_bytes(records.tobytes())


def band_recordings(folder: Path, classes: list[int], t_offset_us: int = 0) -> Path:
    """One recording per entry of ``classes``: column 3c, row 0, ON, one event every ms at t = 0..19 ms plus
    one at 20 ms (a partial bin, dropped): 20 full 1 ms steps. Labels file ``labels.txt`` next to them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, c in enumerate(classes):
        t = t_offset_us + 1000 * np.arange(21)
        write_nmnist(folder / f"{i}.bin", np.full(21, 3 * c), np.zeros(21), np.ones(21), t)
        lines.append(f"{i} {'abc'[c]}")
    (folder.parent / "labels.txt").write_text("#sample #class\n" + "\n".join(lines) + "\n")
    return folder.parent / "labels.txt"


def band_weights(weight: float) -> np.ndarray:
    """(3, N_IN): output c sums the inputs in columns 3c..3c+2 (both polarities, both rows)."""
    w = np.zeros((3, *GRID))
    for c in range(3):
        w[c, :, :, 3 * c:3 * c + 3] = weight
    return w.reshape(3, N_IN)


def band_network(float_neurons: bool = False, **readout) -> Network:
    """3 outputs; an input spike makes its band's output spike one step later (every step it is driven)."""
    if float_neurons:
        neuron, weight = FloatLIF(tau_syn_ms=0.0, tau_mem_ms=np.inf, threshold=1.0), 2.0
    else:
        neuron, weight = LoihiLIF(du=4095, dv=4095, vth=5), 10
    return Network(N_IN, [Population("out", 3, neuron)], [Dense(name="in_out", source="input", target="out",
                                                                weights=band_weights(weight))],
                   input_shape=GRID, input_spec=InputSpec(tail_steps=2),
                   readout=Readout(**{"kind": "count", "classes": ("a", "b", "c"), **readout}))


@pytest.fixture()
def band_data(tmp_path):
    labels = band_recordings(tmp_path / "rec", [0, 1, 2, 2, 1, 0])
    return tmp_path / "rec", labels


# -- the decoder alone ------------------------------------------------------------------------------------

def test_count_decision_comes_when_the_margin_is_reached():
    decoder = ClassifierDecoder(3, classes=("a", "b", "c"), margin=2, min_evidence=1)
    decoder.start(5_000)
    steps = [[0, 1, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 1, 1]]
    decided = [decoder.update(np.array(s, np.uint8), 5_000 + 1000 * (k + 1)) for k, s in enumerate(steps)]
    assert decided == [-1, -1, -1, 1, 1]  # counts b: 1, 2, 2, 3 vs a: 0, 1, 1, 1 -> lead 2 at the 4th step
    early, end = decoder.finish(10_000)
    assert (early.index, early.latency_ms, early.early) == (1, 4.0, True)
    assert early.confidence == pytest.approx(3 / 4)  # counts (1, 3, 0) at that step
    assert (end.index, end.latency_ms, end.early) == (1, 5.0, False)
    assert end.confidence == pytest.approx(4 / 6)


def test_count_ties_go_to_the_higher_membrane_then_the_lower_index():
    decoder = ClassifierDecoder(3, margin=5)
    decoder.update(np.array([1, 1, 0], np.uint8), 1000, v=np.array([0.1, 0.7, 0.9]))
    assert decoder.finish(1000)[1].index == 1  # a and b tie on spikes; b's membrane went higher
    decoder.start(0)
    decoder.update(np.array([1, 1, 0], np.uint8), 1000)
    early, end = decoder.finish(1000)
    assert end.index == 0 and early == end  # no membrane given: the lower index; never decided early


def test_max_membrane_first_spike_and_assignment_readouts():
    membrane = ClassifierDecoder(2, kind="max_membrane", margin=0.5, min_evidence=0.0)
    membrane.update(np.zeros(2, np.uint8), 1000, v=np.array([0.2, 0.4]))
    assert membrane.early is None
    membrane.update(np.zeros(2, np.uint8), 2000, v=np.array([0.1, 1.0]))
    early, end = membrane.finish(3000)
    assert (early.index, early.latency_ms, end.index) == (1, 2.0, 1)

    first = ClassifierDecoder(3, kind="first_spike")
    first.update(np.array([0, 0, 0], np.uint8), 1000)
    first.update(np.array([0, 1, 1], np.uint8), 2000)
    first.update(np.array([1, 0, 0], np.uint8), 3000)
    early, end = first.finish(3000)
    assert (early.index, early.latency_ms, early.confidence, end.index) == (1, 2.0, 0.5, 1)

    # 4 neurons vote for 2 classes; class 1 has one neuron, so its mean count wins with fewer spikes
    vote = ClassifierDecoder(4, classes=("x", "y"), kind="assignment", assignment=[0, 0, 1, -1], margin=1)
    for _ in range(2):
        vote.update(np.array([1, 0, 1, 1], np.uint8), 1000)
    np.testing.assert_allclose(vote.evidence(), [1.0, 2.0])
    assert vote.finish(2000)[1].index == 1

    # "vote": each neuron's spikes shared by its row; neuron 0 is mostly "x", neuron 1 all "y"
    soft = ClassifierDecoder(2, classes=("x", "y"), kind="vote", votes=[[0.75, 0.25], [0.0, 1.0]], margin=1)
    soft.update(np.array([1, 0], np.uint8), 1000)
    assert soft.early is None                                   # evidence 0.75 vs 0.25: margin not reached
    soft.update(np.array([1, 0], np.uint8), 2000)
    np.testing.assert_allclose(soft.evidence(), [1.5, 0.5])
    early, end = soft.finish(2000)
    assert (early.index, early.latency_ms, end.index) == (0, 2.0, 0)
    with pytest.raises(ValueError, match="votes"):
        ClassifierDecoder(2, kind="vote", votes=[[0.5, -1.0], [1.0, 0.0]])


# -- the engine on hand-built networks --------------------------------------------------------------------

@pytest.mark.parametrize("backend, float_neurons", [("loihi", False), ("float", True), ("loihi", True)])
def test_band_network_decides_every_sample_four_steps_in(band_data, backend, float_neurons):
    folder, labels = band_data
    network = band_network(float_neurons)
    data = open_labelled(folder, labels, network.readout.classes)
    result = evaluate(network, data, backend, margin=3, min_evidence=1)
    # The driven output spikes at steps 1..20 (one hop): 3 spikes after step 3 -> decided at 4 ms.
    assert result.accuracy() == 1.0 and result.accuracy(early=True) == 1.0
    np.testing.assert_array_equal(result.latencies_ms(), 4.0)
    assert all(r.n_steps == 22 and r.end.latency_ms == 22.0 for r in result.results)
    np.testing.assert_array_equal(result.confusion(), np.diag([2, 2, 2]))
    assert any("to_loihi" in note for note in result.notes) == (backend == "loihi" and float_neurons)


def test_workers_give_the_results_of_one_process(tmp_path):
    labels = band_recordings(tmp_path / "rec", [0, 1, 2, 0, 1, 2, 2, 1])
    network = band_network()
    # Weaker inputs make the decision depend on the state a previous sample would leave behind.
    network = network.with_population("out", neuron=LoihiLIF(du=100, dv=200, vth=40))
    data = open_labelled(tmp_path / "rec", labels, network.readout.classes)
    one = evaluate(network, data, "loihi", workers=1)
    two = evaluate(network, data, "loihi", workers=2)
    assert two.workers == 2
    assert [(r.path, r.early, r.end) for r in one.results] == [(r.path, r.early, r.end) for r in two.results]


def test_notes_say_when_a_class_gets_no_votes_and_when_loihi_neurons_run_on_float():
    """A vote table with a zero column (a hand-edited ensemble file) or an assignment naming no neuron for a
    class: that class can never be decided, which the notes say; so is a LoihiLIF model on the float backend."""
    votes = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    _, notes = prepare(band_network(kind="vote", votes=votes), "loihi")
    assert notes == ["class(es) c get no vote from any output neuron (readout 'vote'): the model never decides them"]
    _, notes = prepare(band_network(kind="assignment", assignment=[1, 1, -1]), "loihi")
    assert notes == [("class(es) a, c get no vote from any output neuron (readout 'assignment'): the model never "
                      "decides them")]
    _, notes = prepare(band_network(), "float")
    assert notes == [("a LoihiLIF network on the float backend: its dynamics without Loihi's integer rounding, not "
                      "what it computes on the chip (--backend loihi)")]
    assert prepare(band_network(), "loihi")[1] == [] and prepare(band_network(True), "float")[1] == []


def test_learning_rules_and_missing_descriptions(tmp_path):
    bare = dataclasses.replace(band_network(), readout=None)
    with pytest.raises(ModelError, match="no readout"):
        prepare(bare, "loihi")
    with pytest.raises(ModelError, match="no input_spec"):
        prepare(dataclasses.replace(band_network(), input_spec=None), "loihi")
    counts = dataclasses.replace(band_network(), input_spec=InputSpec(encoding="counts"))
    with pytest.raises(ModelError, match="num_message_bits"):
        prepare(counts, "loihi")


# -- the command ------------------------------------------------------------------------------------------

def run_cli(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", "evaluate", *map(str, args)],
                          check=False, capture_output=True, text=True, env=env, timeout=600)


def test_command_prints_accuracy_confusion_and_latency(band_data, tmp_path, capsys):
    folder, labels = band_data
    model = tmp_path / "band.npz"
    band_network(float_neurons=True).save(model)
    assert main(["evaluate", str(model), str(folder), "--labels", str(labels), "--json", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["accuracy"] == 1.0 and report["n"] == 6 and report["backend"] == "loihi"
    assert report["confusion"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert report["latency_ms"] == {"mean": 4.0, "median": 4.0} and report["early_accuracy"] == 1.0
    assert [row["class"] for row in report["per_class"]] == ["a", "b", "c"]
    assert any("to_loihi" in note for note in report["notes"])
    assert "6/6 recordings" in captured.err
    assert main(["evaluate", str(model), str(folder), "--labels", str(labels), "--backend", "float"]) == 0
    text = capsys.readouterr().out
    assert "accuracy  100.0 % (6/6)" in text and "4.0 ms median" in text and "confusion" in text


def test_bad_input_is_one_line_and_exit_2(band_data, tmp_path):
    folder, labels = band_data
    good = tmp_path / "band.npz"
    band_network().save(good)
    bare = tmp_path / "bare.npz"
    dataclasses.replace(band_network(), input_spec=None, readout=None).save(bare)
    narrow = tmp_path / "narrow.npz"  # 2 x 2 x 3 inputs: the band recordings reach column 6
    Network(12, [Population("out", 3, LoihiLIF())], [Dense(name="in_out", source="input", target="out", weights=np.ones((3, 12)))],
            input_shape=(2, 2, 3), input_spec=InputSpec(), readout=Readout("count", ("a", "b", "c"))).save(narrow)
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong_labels = tmp_path / "wrong.txt"
    wrong_labels.write_text("0 a\n1 b\n")
    damaged = tmp_path / "damaged.npz"
    with np.load(good) as data:
        np.savez(damaged, **{**{k: data[k] for k in data.files}, "readout_classes": np.array(["a", "a", "c"])})
    cases = [
        ((damaged, folder, "--labels", labels), "damaged.npz: readout: parameter 'classes' names class 'a' twice"),
        ((bare, folder, "--labels", labels), "no input_spec"),
        ((good, empty, "--labels", labels), "no recordings"),
        ((good, folder, "--labels", wrong_labels), "no label for"),
        ((narrow, folder, "--labels", labels), "outside the network's 3x2 input"),
        ((tmp_path / "missing.npz", folder), "missing.npz"),
    ]
    for args, expected in cases:
        done = run_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.startswith("spikeloop evaluate:")]
        assert len(lines) == 1 and expected in lines[0], (args, done.stderr)
        assert lines[0].count(Path(args[0]).name) <= 1, lines[0]  # the model named once
        assert "Traceback" not in done.stderr and done.stdout == ""


# -- the NIR paper's CNN on real N-MNIST recordings -------------------------------------------------------

def nmnist_frames(path) -> np.ndarray:
    """tonic ToFrame(time_window=1000 µs) from the raw 40-bit records: (T, 2*34*34) counts, full bins only."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    x, y, p = raw[:, 0], raw[:, 1], (raw[:, 2] & 128) >> 7
    t = ((raw[:, 2] & 127) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    n = (t[-1] - t[0]) // 1000
    b = (t - t[0]) // 1000
    keep = b < n
    frames = np.zeros((n, 2, 34, 34), np.int64)
    np.add.at(frames, (b[keep], p[keep], y[keep], x[keep]), 1)
    return frames.reshape(n, -1)


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory):
    pytest.importorskip("nir")
    from recordings.datasets import shared_dir

    nir = shared_dir() / "interop" / "nir" / "cnn_sinabs.nir"
    if not nir.exists():
        pytest.skip(f"{nir} not found")
    out = tmp_path_factory.mktemp("cnn") / "cnn.npz"
    assert main(["import", str(nir), "--out", str(out)]) == 0
    network = Network.load(out)
    if network.input_spec is None or network.readout is None:  # until the importer stores the paper's spec
        network = dataclasses.replace(network, input_spec=InputSpec(encoding="counts", tail_steps=5),
                                      readout=Readout("count", tuple(str(i) for i in range(10))))
        network.save(out)
    return out


def test_cnn_decisions_match_an_independent_presentation(cnn_model, data_dir):
    """Ten recordings: evaluate's end decision is the argmax of output counts when the frames come from the
    raw bytes (ties: the lower index; none occur here) and its latency the step at which the margin is met."""
    test = data_dir / "nmnist_small" / "test"
    data = open_labelled(test, data_dir / "nmnist_small" / "test_labels.txt", tuple(str(i) for i in range(10)))
    data = data.subset(range(10))
    network = Network.load(cnn_model)
    result = evaluate(network, data, "float", margin=3)
    runtime = build(network, "float")
    for path, label, r in zip(data.paths, data.labels, result.results):
        frames = nmnist_frames(path)
        runtime.reset()
        counts = np.zeros(10)
        decided_at = None
        for t in range(len(frames) + 5):
            active = np.flatnonzero(frames[t]).astype(np.int32) if t < len(frames) else np.zeros(0, np.int32)
            counts += runtime.step(active, frames[t, active] if t < len(frames) else None)
            top = np.sort(counts)[::-1]
            if decided_at is None and top[0] >= 1 and top[0] - top[1] >= 3:
                decided_at = (t + 1, int(np.argmax(counts)))
        assert r.n_steps == len(frames) + 5
        assert r.end.index == int(np.argmax(counts))
        assert (r.early.latency_ms, r.early.index) == (float(decided_at[0]), decided_at[1])
    assert result.accuracy() == 1.0


@pytest.mark.slow
def test_cnn_command_reaches_the_paper_on_float_and_loihi(cnn_model, data_dir):
    """The 100 test recordings: >= 97 % on float (the paper: 97.1-98.5 % over frameworks on the full test set)
    and loihi within 1 point of it."""
    data = data_dir / "nmnist_small"
    reports = {}
    for backend in ("float", "loihi"):
        done = run_cli(cnn_model, data / "test", "--labels", data / "test_labels.txt", "--backend", backend, "--json",
                       env_extra={"SPIKELOOP_DATA": str(data_dir)})
        assert done.returncode == 0, done.stderr
        reports[backend] = json.loads(done.stdout)
    assert reports["float"]["n"] == 100 and reports["float"]["accuracy"] >= 0.97
    assert abs(reports["loihi"]["accuracy"] - reports["float"]["accuracy"]) <= 0.01
    assert any("to_loihi" in note for note in reports["loihi"]["notes"])
    assert sum(map(sum, reports["loihi"]["confusion"])) == 100


# -- classification in the loop (spikeloop launch) --------------------------------------------------------

def classify_launch(tmp_path: Path, model: Path, source: dict, decisions: Path, name: str = "classify.toml",
                    **extra) -> Path:
    """A launch file like launch/nmnist_classify.toml, with this model, source and decisions file."""
    tables = {"source": {"type": "samples", **source},
              "loop": {"mode": "fast", "dt_us": 1000, "report_period_s": 0, **extra.get("loop", {})},
              "network": {"file": str(model), "backend": "loihi", "polarity_channels": True},
              "decoder": {"type": "classifier", "margin": 3, "min_evidence": 1},
              "sinks.decisions": {"type": "decisions", "path": str(decisions), "format": "jsonl"}}
    lines = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def run_launch(*args, data_dir=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **({"SPIKELOOP_DATA": str(data_dir)} if data_dir else {})}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", "launch", *map(str, args), "--headless"],
                          check=False, capture_output=True, text=True, env=env, timeout=600)


def test_launch_classifies_band_recordings_in_the_loop(band_data, tmp_path):
    folder, labels = band_data
    model = tmp_path / "band.npz"
    band_network(float_neurons=True).save(model)
    decisions = tmp_path / "decisions.jsonl"
    done = run_launch(classify_launch(tmp_path, model, {"path": str(folder), "labels": str(labels)}, decisions))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in decisions.read_text().splitlines()]
    assert [(r["sample"], r["decision"]) for r in rows] == [(str(i), kind) for i in range(6) for kind in ("early", "end")]
    assert all(r["correct"] for r in rows)
    assert {r["latency_ms"] for r in rows if r["decision"] == "early"} == {4.0}  # by the wiring, as evaluate
    assert {r["latency_ms"] for r in rows if r["decision"] == "end"} == {22.0}  # 20 full steps + 2 tail steps
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    summary = next(e for e in events if e["event"] == "classified")
    assert (summary["samples"], summary["accuracy"], summary["latency_ms_median"]) == (6, 1.0, 4.0)
    assert any(e["event"] == "note" and "to_loihi" in e["message"] for e in events)


@pytest.mark.parametrize("which", ["shipped", "cnn"])
def test_launch_decisions_are_evaluates_on_real_recordings(which, request, data_dir, tmp_path):
    """Five N-MNIST test recordings through the shipped launch file and the loop (loihi, reset between
    samples) give evaluate's decisions: class, confidence and latency of the early and the end decision. The
    shipped model (binary spikes, fixed 300 ms) as the file names it; the NIR CNN (event counts through the
    counting binner, converted from float) set with --set."""
    nmnist = data_dir / "nmnist_small"
    decisions = tmp_path / "decisions.jsonl"
    launch = REPO / "launch" / "nmnist_classify.toml"
    model = SHIPPED if which == "shipped" else request.getfixturevalue("cnn_model")
    sets = ["--set", "source.limit=5", "--set", f"sinks.decisions.path={json.dumps(str(decisions))}"]
    if which == "cnn":
        sets += ["--set", f"network.file={json.dumps(str(model))}"]
    done = run_launch(launch, *sets, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in decisions.read_text().splitlines()]
    network = Network.load(model)
    data = open_labelled(nmnist / "test", nmnist / "test_labels.txt", network.readout.classes).subset(range(5))
    result = evaluate(network, data, "loihi")
    expected = []
    for r in result.results:
        name, early, end = Path(r.path).stem, r.early, r.end
        if early.early and early.t_us < end.t_us:
            expected.append((name, "early", early.index, round(early.confidence, 6), early.latency_ms))
        expected.append((name, "end", end.index, round(end.confidence, 6), end.latency_ms))
    classes = network.readout.classes
    got = [(r["sample"], r["decision"], classes.index(r["class"]), r["confidence"], r["latency_ms"]) for r in rows]
    assert got == expected
    assert all(r["label"] is not None for r in rows)

    one = tmp_path / "one.jsonl"  # --source with one recording keeps the samples source
    sets[3] = f"sinks.decisions.path={json.dumps(str(one))}"
    done = run_launch(launch, "--source", nmnist / "test" / "60002.bs2", *sets, data_dir=data_dir)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["sample"] for line in one.read_text().splitlines()][-1] == "60002"


def test_launch_refuses_what_cannot_classify(band_data, tmp_path):
    folder, labels = band_data
    model, bare = tmp_path / "band.npz", tmp_path / "bare.npz"
    band_network().save(model)
    dataclasses.replace(band_network(), readout=None).save(bare)
    out = tmp_path / "d.jsonl"
    source = {"path": str(folder), "labels": str(labels)}
    cases = [
        (classify_launch(tmp_path, bare, source, out, "a.toml"), "[network] file: bare.npz: the network has no readout"),
        (classify_launch(tmp_path, model, source, out, "b.toml", loop={"dt_us": 500}),
         "[loop] dt_us: the model band.npz steps every 1000 µs"),
        (classify_launch(tmp_path, model, {"path": str(tmp_path / "nowhere")}, out, "c.toml"), "[source] path: not found"),
    ]
    for launch, expected in cases:
        done = run_launch(launch)
        assert done.returncode == 2 and expected in done.stderr, done.stderr
        assert not out.exists()
    replay = tmp_path / "replay.toml"
    replay.write_text(classify_launch(tmp_path, model, source, out).read_text()
                      .replace('type = "samples"', 'type = "replay"').replace(f'labels = "{labels}"\n', "")
                      .replace(str(folder), str(folder / "0.bin")))
    done = run_launch(replay)
    assert done.returncode == 2 and "[decoder] type: the classifier decides per sample" in done.stderr, done.stderr


def test_counting_binner_counts_events_per_input_and_step():
    """Counts against np.add.at over the same events, packets cut at random; a merge adds counts."""
    from pipeline.core.events import dvs_events
    from pipeline.stages.binning import CountingStepBinner

    rng = np.random.default_rng(3)
    n = 4000
    t = np.sort(rng.integers(0, 50_000, n))
    x, y, p = rng.integers(0, 5, n), rng.integers(0, 4, n), rng.integers(0, 2, n)
    events = dvs_events(t, x, y, p)
    binner = CountingStepBinner(1000, 5, 4, t0_us=0)
    got = np.zeros((50, 2 * 4 * 5), np.int64)
    cuts = np.sort(rng.choice(np.arange(1, n), 30, replace=False))
    for part, end in zip(np.split(events, cuts), [*t[cuts], 50_000]):
        batch = binner.push(part, int(end))
        for i in range(len(batch)):
            step = batch.step_start_us(i) // 1000
            pairs = batch.step(i)
            assert len(np.unique(pairs[0])) == pairs.shape[1]
            got[step, pairs[0]] += pairs[1]
    expected = np.zeros_like(got)
    np.add.at(expected, (t // 1000, p * 20 + y * 5 + x), 1)
    np.testing.assert_array_equal(got, expected)
    merged = binner.merge([np.array([[3, 5], [2, 1]], np.int32), np.array([[5, 7], [4, 1]], np.int32)])
    np.testing.assert_array_equal(merged, [[3, 5, 7], [2, 5, 1]])


def test_wav_clips_go_through_the_cochlea_with_fsdd_labels(data_dir, tmp_path, capsys):
    """Spoken digits: classes from FSDD names (no labels file), each clip through the cochlea (64 channels)."""
    import shutil

    clips = tmp_path / "fsdd"
    clips.mkdir()
    names = ["0_george_0", "0_jackson_1", "3_lucas_2", "7_nicolas_0", "7_george_1"]
    for name in names:
        shutil.copy(data_dir / "audio" / "fsdd" / f"{name}.wav", clips)
    rng = np.random.default_rng(0)
    model = tmp_path / "voice.npz"
    Network(64, [Population("out", 10, LoihiLIF(du=400, dv=400, vth=200))],
            [Dense(name="p", source="input", target="out", weights=rng.integers(-20, 60, (10, 64)))],
            input_spec=InputSpec(sensor="cochlea", channels=64, tail_steps=2),
            readout=Readout("count", tuple("0123456789"))).save(model)
    assert main(["evaluate", str(model), str(clips), "--json", "--workers", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 5
    assert [sum(row) for row in report["confusion"]] == [2, 0, 0, 1, 0, 0, 0, 2, 0, 0]
    assert all(0 < d <= 5000 for d in [report["sample_duration_ms"]["mean"]])



def test_a_sensor_mismatch_names_the_model_and_the_file(data_dir, tmp_path, capsys):
    """WAV clips given to a DVS model (the shipped N-MNIST one) are refused in one line that says the model
    takes DVS events, not that the WAV is an unknown format; exit 2."""
    clips = tmp_path / "fsdd"
    clips.mkdir()
    (clips / "0_george_0.wav").write_bytes((data_dir / "audio" / "fsdd" / "0_george_0.wav").read_bytes())
    labels = tmp_path / "labels.txt"
    labels.write_text("0_george_0 0\n")
    assert main(["evaluate", str(SHIPPED), str(clips), "--labels", str(labels), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "0_george_0.wav" in err
    assert "DVS" in err and "cochlea" in err and "not a recording format" not in err


# -- the shipped model (pipeline/train/models/nmnist.npz, made by spikeloop train) -------------------------


def test_shipped_model_through_spikeloop_evaluate(data_dir):
    """``spikeloop evaluate`` on the 100 test recordings: >= 95 % on the loihi backend (the issue's target;
    the trainer reported 95/100), and its end decisions on ten of them are the count argmax of an independent
    presentation (binary 1 ms frames from the raw bytes, its fixed 300 steps and tail, run on the runtime)."""
    nmnist = data_dir / "nmnist_small"
    done = run_cli(SHIPPED, nmnist / "test", "--labels", nmnist / "test_labels.txt", "--json",
                   env_extra={"SPIKELOOP_DATA": str(data_dir)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["backend"] == "loihi" and report["n"] == 100 and report["accuracy"] >= 0.95
    assert report["notes"] == []  # a loihi network runs as it is

    network = Network.load(SHIPPED)
    spec = network.input_spec
    data = open_labelled(nmnist / "test", nmnist / "test_labels.txt", network.readout.classes).subset(range(10))
    result = evaluate(network, data, "loihi")
    runtime = build(network, "loihi")
    compared = 0
    for path, r in zip(data.paths, result.results):
        raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
        x, y, p = raw[:, 0], raw[:, 1], (raw[:, 2] & 128) >> 7
        t = ((raw[:, 2] & 127) << 16) | (raw[:, 3] << 8) | raw[:, 4]
        n_steps = spec.duration_us // spec.bin_us
        frames = np.zeros((n_steps + spec.tail_steps, 2 * 34 * 34), bool)
        keep = (t - t[0]) // spec.bin_us < n_steps
        frames[((t - t[0]) // spec.bin_us)[keep], (p * 34 * 34 + y * 34 + x)[keep]] = True
        runtime.reset()
        counts = np.zeros(10)
        for frame in frames:
            counts += runtime.step(np.flatnonzero(frame).astype(np.int32))
        assert r.n_steps == len(frames)
        if np.sum(counts == counts.max()) == 1:  # ties go to the membrane rule, not compared here
            assert r.end.index == int(np.argmax(counts))
            compared += 1
    assert compared >= 8
