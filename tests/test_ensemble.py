"""Ensembles of classifiers (pipeline.snn.ensemble): each member inside the ensemble steps exactly as it does
alone (checked against the member run alone on real FSDD clips), the vote readout sums the members, the
command_map decoder and launch files take an ensemble, and ``[train] members`` trains, checkpoints and
resumes one."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline.app.commands.train import load_config
from pipeline.app.launch import LaunchError, build_decoder, build_graph, load_launch
from pipeline.decoders.command_map import CommandMap
from pipeline.snn import build
from pipeline.snn.ensemble import ensemble, member, member_indices
from pipeline.snn.model import Readout
from pipeline.snn.network import Network
from pipeline.train.present import present_file
from pipeline.train.run import TrainRun, load_checkpoint
from recordings.datasets import shared_data_dir
from recordings.wav import word_sequence, write_wav

ROOT = Path(__file__).resolve().parent.parent
FSDD = shared_data_dir() / "audio" / "fsdd"
MODEL = ROOT / "pipeline" / "train" / "models" / "fsdd_digits.npz"
LAUNCH = ROOT / "launch" / "voice_drive.toml"


def variant(network: Network) -> Network:
    """Another classifier of the same input: the model with its hidden weights permuted and its output neurons'
    threshold raised, so its spikes differ from the original's and its neuron parameters too."""
    rng = np.random.default_rng(0)
    order = rng.permutation(network.population("hidden0").size)
    fc0, rec0, fc1 = (network.projection(n) for n in ("fc0", "rec0", "fc1"))
    changed = network.with_projection("fc0", weights=fc0.weights[order]) \
        .with_projection("rec0", weights=rec0.weights[order][:, order][::-1, ::-1].copy()) \
        .with_projection("fc1", weights=fc1.weights[:, order])
    neuron = network.population("output").neuron
    return changed.with_population("output", neuron=dataclasses.replace(neuron, vth=np.asarray(neuron.vth) * 3 // 2))


def output_spikes(network: Network, path: Path) -> np.ndarray:
    """(steps, n_outputs) output spikes of one clip on the loihi runtime."""
    presentation = present_file(path, network.input_spec, network.input_shape, network.n_inputs)
    runtime = build(network, "loihi")
    out = []
    for t in range(presentation.n_steps):
        lo, hi = presentation.indptr[t], presentation.indptr[t + 1]
        out.append(runtime.step(presentation.index[lo:hi]).copy())
    return np.array(out)


def shipped_member() -> Network:
    """The first network of the shipped FSDD ensemble, alone."""
    return member(Network.load(MODEL), 0)


def test_each_member_steps_inside_the_ensemble_as_it_does_alone(tmp_path):
    first = shipped_member()
    second = variant(first)
    merged = ensemble([first, second])
    path = tmp_path / "ensemble.npz"
    merged.save(path)
    merged = Network.load(path)  # what a launch file or evaluate would run
    assert merged.n_outputs == 20 and merged.readout.kind == "vote"
    assert merged.readout.classes == first.readout.classes
    for clip in ("3_jackson_0.wav", "7_george_2.wav", "0_yweweler_4.wav"):
        alone = [output_spikes(member, FSDD / clip) for member in (first, second)]
        assert alone[0].sum() > 0 and alone[1].sum() > 0 and not np.array_equal(alone[0], alone[1])
        together = output_spikes(merged, FSDD / clip)
        np.testing.assert_array_equal(together, np.concatenate(alone, axis=1))
        summed = together.sum(axis=0) @ merged.readout.votes
        np.testing.assert_array_equal(summed, alone[0].sum(axis=0) + alone[1].sum(axis=0))


def test_a_member_comes_back_out_of_the_ensemble_as_it_went_in():
    first = shipped_member()
    second = variant(first)
    merged = ensemble([first, second, first])
    for k, original in enumerate((first, second, first)):
        back = member(merged, k)
        assert [p.name for p in back.populations] == [p.name for p in original.populations]
        assert back.readout.kind == "count" and back.output_name == "output"
        for projection in original.projections:
            np.testing.assert_array_equal(back.projection(projection.name).dense_weights(
                back.source_size(projection.source), back.source_size(projection.target)),
                projection.weights)
            assert back.projection(projection.name).weight_exp == projection.weight_exp
        for name, value in original.population("output").neuron.arrays("o", 10).items():
            np.testing.assert_array_equal(back.population("output").neuron.arrays("o", 10)[name], value)
    assert member_indices(merged) == [0, 1, 2] and member_indices(first) == []
    with pytest.raises(ValueError, match=r"no ensemble member 3 \(it holds members 0, 1, 2;"):
        member(merged, 3)
    with pytest.raises(ValueError, match=r"no ensemble member -1 \(it holds members 0, 1, 2;"):
        member(merged, -1)
    with pytest.raises(ValueError, match=r"no ensemble member 0 \(it is not an ensemble;"):
        member(first, 0)
    for k in ("1", 1.0, True):  # "m1_" would match the string; True printed as "mTrue_*"
        with pytest.raises(ValueError, match="k must be an integer"):
            member(merged, k)


def test_ensemble_refuses_members_that_do_not_fit():
    model = shipped_member()
    with pytest.raises(ValueError, match="at least 2 members"):
        ensemble([model])
    renamed = dataclasses.replace(model, readout=dataclasses.replace(model.readout, classes=tuple("abcdefghij")))
    with pytest.raises(ValueError, match="member 1: classes"):
        ensemble([model, renamed])
    other_input = dataclasses.replace(model, input_spec=dataclasses.replace(model.input_spec, cochlea_threshold=1e-4))
    with pytest.raises(ValueError, match="member 1: input spec differs"):
        ensemble([model, other_input])
    feedback = dataclasses.replace(model, projections=model.projections + (dataclasses.replace(
        model.projection("rec0"), name="back", source="output", weights=np.zeros((128, 10), np.int16)),))
    with pytest.raises(ValueError, match="member 1: projection 'back' reads the output population"):
        ensemble([model, feedback])
    # a hidden population named "output" (the name member() gives the outputs back under) beside outputs "out"
    rename = {"input": "input", "hidden0": "output", "output": "out"}
    swapped = dataclasses.replace(
        model, output="out", populations=[dataclasses.replace(p, name=rename[p.name]) for p in model.populations],
        projections=[dataclasses.replace(p, source=rename[p.source], target=rename[p.target])
                     for p in model.projections])
    with pytest.raises(ValueError, match="member 1: population 'output' is not its output \\('out'\\)"):
        ensemble([model, swapped])


def test_command_map_sums_the_votes_of_an_ensemble():
    votes = np.concatenate([np.eye(2), np.eye(2)])  # outputs 0, 2 -> class 0; 1, 3 -> class 1
    decoder = CommandMap(4, {"0": [1.0], "1": [-1.0]}, gap_us=3000, min_spikes=1, boundary="output", votes=votes,
                         names=["go", "back"])
    assert decoder.n_classes == 2
    t = 0
    for spikes in ([0, 1, 1, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]):  # class 0: 2 spikes, class 1: 3
        t += 1000
        decoder.update(np.array(spikes, np.uint8), t)
    np.testing.assert_array_equal(decoder.evidence, [2.0, 3.0])
    t += 3000
    np.testing.assert_array_equal(decoder.update(np.zeros(4, np.uint8), t), [-1.0])
    assert decoder.decisions == [(t, 1)] and decoder.evidence.sum() == 0
    with pytest.raises(ValueError, match="'names' must be 2 strings"):
        CommandMap(4, {"0": [1.0]}, votes=votes, names=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="'commands' key '2' must be a class index 0..1"):
        CommandMap(4, {"2": [1.0]}, votes=votes)
    with pytest.raises(ValueError, match="'votes' must be a finite"):
        CommandMap(4, {"0": [1.0]}, votes=np.eye(3))


def test_a_vote_table_whose_evidence_could_overflow_is_refused():
    """Votes near 1e308: a word's evidence (counts x votes) overflowed to inf and the decision fell to class 0.
    Tables are bounded by MAX_VOTE (1e6), in the decoder and in a network file's readout."""
    huge = np.array([[1e300, 0.0], [0.0, 1e300]])
    with pytest.raises(ValueError, match=r"command_map: parameter 'votes' must be at most 1e\+06, got 1e\+300"):
        CommandMap(2, {"0": [1.0]}, votes=huge)
    with pytest.raises(ValueError, match=r"readout: parameter 'votes' must be at most 1e\+06, got 1e\+300"):
        Readout("vote", classes=("a", "b"), votes=huge)
    assert CommandMap(2, {"0": [1.0]}, votes=huge / 1e294).votes.max() == 1e6    # the bound itself is allowed


def test_voice_drive_with_an_ensemble_of_two_copies_decides_as_the_model_alone(tmp_path):
    model = shipped_member()
    alone, twice = tmp_path / "alone.npz", tmp_path / "twice.npz"
    model.save(alone)
    ensemble([model, model]).save(twice)
    words = [FSDD / name for name in ("1_jackson_1.wav", "3_nicolas_2.wav", "4_lucas_0.wav", "9_george_3.wav")]
    samples, rate, _ = word_sequence(words, gap_s=0.6, lead_s=0.3, rms=0.05)
    wav = tmp_path / "words.wav"
    write_wav(wav, samples, rate)
    decisions = []
    for network in (alone, twice):
        graph = build_graph(load_launch(LAUNCH, sets=['loop.mode="fast"', f'network.file="{network}"'],
                                        source=str(wav)))
        try:
            graph.loop.warmup()
            graph.loop.run()
        finally:
            graph.close()
        decisions.append(graph.decoder.decisions)
    assert len(decisions[0]) == len(words) and decisions[1] == decisions[0]


def test_a_decoder_that_reads_one_output_per_class_refuses_an_ensemble():
    spec = dataclasses.replace(load_launch(LAUNCH, sets=['loop.mode="fast"']), decoder=("wta", {}))
    with pytest.raises(LaunchError, match=r"\[decoder\] type: the model's 100 outputs vote for 10 classes"):
        build_graph(spec)


def test_command_map_decides_classes_of_an_assignment_readout_not_output_neurons():
    """A Diehl & Cook model (an "assignment" readout: 4 outputs for 2 classes) in a command_map launch: the
    decoder was handed no table, took output neuron i for class i and mapped the commands by neuron. It now
    takes the readout as a vote table (a class's evidence: its neurons' mean count), as evaluate decides."""
    readout = Readout("assignment", classes=("go", "stop"), assignment=[1, 0, -1, 0])
    np.testing.assert_array_equal(readout.vote_table(), [[0, 1], [0.5, 0], [0, 0], [0.5, 0]])
    spec = load_launch(LAUNCH, sets=['decoder.boundary="output"', "decoder.gap_us=3000", "decoder.min_spikes=1",
                                     'decoder.names=["go", "stop"]',
                                     "decoder.commands={0 = [1.0, 1.0], 1 = [0.0, 0.0]}"])
    decoder, length = build_decoder(spec, 4, None, readout)
    assert length == 2 and decoder.n_classes == 2
    decoder.update(np.array([0, 1, 0, 1], np.uint8), 1000)  # two "go" neurons: mean count 1; "stop": 0
    decoder.update(np.array([1, 0, 0, 0], np.uint8), 2000)  # "stop" neuron: mean count 1 -> go 1, stop 1
    decoder.update(np.array([0, 1, 0, 0], np.uint8), 3000)  # go 1.5
    np.testing.assert_array_equal(decoder.update(np.zeros(4, np.uint8), 6000), [1.0, 1.0])
    assert decoder.decisions == [(6000, 0)]
    spec = dataclasses.replace(spec, decoder=("wta", {}))
    with pytest.raises(LaunchError, match=r"the model's 4 outputs vote for 2 classes \(its 'assignment' readout\)"):
        build_decoder(spec, 4, None, readout)


def test_a_launch_votes_key_is_refused_when_the_model_gives_the_votes():
    """[decoder] votes beside an ensemble model was silently replaced by the model's table."""
    spec = load_launch(LAUNCH, sets=["decoder.votes=[[1.0, 0.0]]", 'decoder.boundary="output"'])
    with pytest.raises(LaunchError, match=r"\[decoder\] votes: the model's 'vote' readout gives the votes; remove "
                                          r"this key"):
        build_decoder(spec, 50, None, Network.load(MODEL).readout)


class Interrupted(TrainRun):
    """A run stopped (as by Ctrl-C) right after its ``stop_after``-th checkpoint was written."""

    def __init__(self, *args, stop_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_after, self.written = stop_after, 0

    def checkpoint(self, state):
        super().checkpoint(state)
        self.written += 1
        if self.written == self.stop_after:
            raise KeyboardInterrupt


def _fit(tmp_path, name, members=2, resume=None, stop_after=0):
    method, module, config = load_config(ROOT / "launch" / "train_fsdd.toml", [
        'data.split="official"', "train.limit=60", "train.epochs=2", f"train.members={members}",
        "train.batch_size=20", "train.warmup_steps=0"])       # 6 steps: the recipe's 70-step warm-up would not learn
    kwargs = dict(checkpoint_path=tmp_path / f"{name}.ckpt.npz")
    if resume is not None:
        kwargs.update(resume_state=load_checkpoint(resume, method), resume_path=resume)
    run = Interrupted(config["train"]["seed"], shared_data_dir(), method, config, stop_after=stop_after, **kwargs)
    return module.fit(config, run)


@pytest.mark.slow
def test_training_members_writes_an_ensemble_and_resumes_inside_a_member(tmp_path):
    whole = _fit(tmp_path, "whole")
    metrics = whole.metrics
    assert metrics["members"] == 2 and len(metrics["member_test_accuracy"]) == 2
    assert metrics["runtime_agreement"] == 1.0
    assert whole.network.n_outputs == 20 and whole.network.readout.kind == "vote"
    assert [r["member"] for r in whole.history] == [0, 0, 1, 1]
    # member 0 is the network a one-member run with the same seed trains
    alone = _fit(tmp_path, "alone", members=1).network
    np.testing.assert_array_equal(whole.network.projection("m0_fc0").weights, alone.projection("fc0").weights)
    # stopped after member 1's first epoch (checkpoints: member 0 epochs 1, 2; member 1 epoch 1), resumed
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path, "cut", stop_after=3)
    resumed = _fit(tmp_path, "resumed", resume=tmp_path / "cut.ckpt.npz")
    for projection in whole.network.projections:
        np.testing.assert_array_equal(resumed.network.projection(projection.name).weights, projection.weights)
    def untimed(history):
        return [{k: v for k, v in record.items() if k != "samples_per_s"} for record in history]

    assert untimed(resumed.history) == untimed(whole.history)


def test_a_network_below_member_min_accuracy_is_set_aside_and_the_next_seed_trained(tmp_path):
    """One epoch on 60 clips reaches ~40-50 % training accuracy: a floor of 0.99 sets aside every seed, and
    after 2 x members seeds the run stops naming them."""
    method, module, config = load_config(ROOT / "launch" / "train_fsdd.toml", [
        'data.split="official"', "train.limit=60", "train.epochs=1", "train.members=1", "train.batch_size=20",
        "train.member_min_accuracy=0.99"])
    run = TrainRun(config["train"]["seed"], shared_data_dir(), method, config)
    with pytest.raises(ValueError, match=r"member_min_accuracy: only 0 of 2 seeds \(1..2\) reached a training "
                                         r"accuracy of 0.99 \(last epochs: [0-9.]+ %, [0-9.]+ %\)"):
        module.fit(config, run)


def _tiny_fit(tmp_path, name, sets=(), resume_state=None, stop_after=0):
    """``[train] members = 3`` of 1 epoch on 20 clips with 8 hidden neurons and no test set (seconds)."""
    method, module, config = load_config(ROOT / "launch" / "train_fsdd.toml", [
        'data.split=""', "train.limit=20", "train.epochs=1", "train.members=3", "train.member_min_accuracy=0",
        "train.batch_size=10", "network.hidden=[8]", *sets])
    kwargs = dict(checkpoint_path=tmp_path / f"{name}.ckpt.npz")
    if resume_state is not None:
        kwargs.update(resume_state=resume_state, resume_path=tmp_path / "cut.ckpt.npz")
    run = Interrupted(config["train"]["seed"], shared_data_dir(), method, config, stop_after=stop_after, **kwargs)
    return module.fit(config, run)


@pytest.fixture(scope="module")
def cut_checkpoint(tmp_path_factory):
    """The checkpoint of a 3-member run stopped after member 1's epoch (member 0 finished and kept)."""
    tmp_path = tmp_path_factory.mktemp("cut")
    with pytest.raises(KeyboardInterrupt):
        _tiny_fit(tmp_path, "cut", stop_after=2)
    state = load_checkpoint(tmp_path / "cut.ckpt.npz", "bptt")
    assert int(state["member"]) == 1 and state["kept"].tolist() == [0]
    return state


@pytest.mark.parametrize("sets, message", [
    (["train.seed=2"], r"key 'run_config': \[train\] seed is 1 in the checkpoint, 2 in this config"),
    (["train.lr=0.01"], r"key 'run_config': \[train\] lr is 0.002 in the checkpoint, 0.01 in this config"),
    (["train.member_min_accuracy=0.5"],
     r"key 'run_config': \[train\] member_min_accuracy is 0.0 in the checkpoint, 0.5"),
    (["train.limit=30"], r"key 'run_config': \[train\] limit is 20 in the checkpoint, 30 in this config"),
    # more epochs would continue member 1 for longer, but member 0 was trained with 1
    (["train.epochs=2"], (r"key 'run_config': \[train\] epochs is 1 in the checkpoint, 2 in this config \(.*its "
                          r"member\(s\) \[0\] were trained with its \[train\] epochs\)")),
    (["train.members=1"], r"key 'member': is 1 with finished members \[0\]: more than \[train\] members = 1"),
])
def test_a_checkpoint_resumed_with_another_config_is_refused_naming_the_key(tmp_path, cut_checkpoint, sets, message):
    with pytest.raises(ValueError, match=r"cut\.ckpt\.npz: " + message):
        _tiny_fit(tmp_path, "resumed", sets, resume_state=dict(cut_checkpoint))


@pytest.mark.parametrize("key, value, message", [
    ("member", np.array([1, 2]), r"key 'member': must be an integer in \[0, 63\], got \[1, 2\]"),
    ("member", np.array("x"), r"key 'member': must be an integer"),
    ("kept", np.array([[0]]), r"key 'kept': must be a list of member indices"),
    ("kept", np.array([0, 0]), r"key 'kept': is \[0, 0\] with key 'member' 1: expected distinct"),
    ("epoch", np.array(-1), r"key 'epoch': must be an integer in \[0, 100000\], got -1"),
    ("adam_step", np.array(1.5), r"key 'adam_step': must be an integer"),
    ("rng", np.array('{"bit_generator": "MT19937"}'), r"key 'rng': not a PCG64 random state"),
    ("history", np.array("[1, 2"), r"key 'history': not JSON"),
    ("history", np.array("[1, 2]"), r"key 'history': expected a list of epoch records"),
    ("history", np.array("[]"), (r"key 'history': holds 0 epoch record\(s\) of member 1 and none of \[0\]; key "
                                 r"'epoch' is 1 and key 'kept' \[0\]")),
    ("param_w0", None, r"key 'param_w0': must hold finite numbers"),
    ("done0_param_w1", None, r"key 'done0_param_w1': must hold finite numbers"),
])
def test_a_damaged_member_checkpoint_is_refused_naming_the_key(tmp_path, cut_checkpoint, key, value, message):
    state = dict(cut_checkpoint)
    if value is None:  # a weight array with a NaN
        value = state[key].copy()
        value.flat[0] = np.nan
    state[key] = value
    with pytest.raises(ValueError, match=r"cut\.ckpt\.npz: " + message):
        _tiny_fit(tmp_path, "resumed", resume_state=state)


def test_a_checkpoint_written_before_a_config_key_existed_still_resumes(tmp_path, cut_checkpoint):
    """Its config lacks the key (here [augment] level_db): not compared, so not a difference."""
    import json

    state = dict(cut_checkpoint)
    config = json.loads(str(state["run_config"]))
    del config["augment"]["level_db"]
    state["run_config"] = np.array(json.dumps(config))
    resumed = _tiny_fit(tmp_path, "resumed", resume_state=state)
    assert resumed.metrics["members"] == 3
    del state["run_config"]  # nothing to compare with
    assert _tiny_fit(tmp_path, "resumed", resume_state=state).metrics["members"] == 3


def test_a_checkpoint_resumed_with_fewer_or_more_members_continues_as_that_run(tmp_path, cut_checkpoint):
    """[train] members may change on resume while the finished members fit: the run is then the run with the
    new count (member k is seed + k either way)."""
    resumed = _tiny_fit(tmp_path, "resumed", ["train.members=2"], resume_state=dict(cut_checkpoint))
    straight = _tiny_fit(tmp_path, "straight", ["train.members=2"])
    for projection in straight.network.projections:
        np.testing.assert_array_equal(resumed.network.projection(projection.name).weights, projection.weights)


def test_a_member_of_an_ensemble_of_ensembles_comes_back_as_it_went_in():
    """member() of a member that is itself an ensemble: its projections into the output reach only part of the
    slice, so they stay Sparse (made Dense over the whole slice, member k of it was every member at once)."""
    shipped = Network.load(MODEL)
    first, second = member(shipped, 0), member(shipped, 1)
    inner = ensemble([first, second])
    outer = ensemble([inner, first])
    back = member(outer, 0)
    assert back.n_outputs == 20 and back.readout.kind == "vote"
    for k, original in enumerate((first, second)):
        again = member(back, k)
        assert again.n_outputs == 10 and again.readout.kind == "count"
        assert [p.name for p in again.populations] == [p.name for p in original.populations]
        for projection in original.projections:
            n_pre, n_post = original.source_size(projection.source), original.source_size(projection.target)
            np.testing.assert_array_equal(again.projection(projection.name).dense_weights(n_pre, n_post),
                                          projection.dense_weights(n_pre, n_post))
    overlapping = dataclasses.replace(inner, projections=inner.projections + (dataclasses.replace(
        inner.projection("m1_fc1"), name="extra"),))
    with pytest.raises(ValueError, match="ensemble member 1: its outputs 10..19 are also targets of projection "
                                         "'extra'"):
        member(overlapping, 1)
