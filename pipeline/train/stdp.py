"""Unsupervised STDP (Diehl & Cook 2015) on the Loihi learning engine, then neuron -> class assignment.

The network (one Loihi runtime, the same description that is deployed):

* input: DVS events on a (C, H, W) grid, one step per ``bin_us`` (event-driven: an input spikes in a
  step when it saw an event; :func:`pipeline.train.present.present_file`),
* ``exc``: ``n_neurons`` LoihiLIF neurons, all-to-all from the input through a Dense projection whose
  weights learn with a Loihi sum-of-products rule (:mod:`pipeline.snn.learning`; default
  ``dw = 2^-1*y0*(x1 - 8)``, Diehl & Cook's pre-trace rule with offset x_tar = 8: at every post spike a
  weight grows with the pre trace and shrinks where the input was silent), applied only to the winner
  of each step's volley (:mod:`pipeline.snn.learning.competitive`), and each neuron's input weights
  rescaled to a fixed L2 norm after every recording (:mod:`pipeline.snn.learning.normalization`),
* lateral inhibition: a fixed Dense projection ``exc -> exc`` with ``-inhibition`` (vth units) between
  every pair of distinct neurons (Diehl & Cook's excitatory -> inhibitory -> excitatory loop folded
  into one hop, as their own "lateral inhibition" variant),
* homeostasis: adaptive thresholds (:mod:`pipeline.snn.learning.homeostasis`) during training.

The saved network has no learning rule and, by default, one common threshold ``deploy_vth``, no leak
(``deploy_dv`` 0) and lateral inhibition equal to the threshold (``deploy_inhibition``): every spike then
lowers every neuron's v by the same amount (the spiker by its reset, the others by inhibition), so each
spike goes to the neuron whose weights have the largest dot product with all events so far (the weights
are L2-normalised: a cosine match). ``deploy_vth`` 0 keeps each neuron's learned vth + theta, as Diehl &
Cook test; on N-MNIST that let threshold differences, not the match, decide (24 % against 80 % on the
100 test recordings, same learned weights, one measured run). With a leak (``deploy_dv`` > 0) the same
holds for the leaky sums: each spike goes to the neuron that best matches the last ~4096 / dv steps of events,
so a low threshold makes the counts a record of which learned digit matched each stretch of the recording
(the shipped launch/train_nmnist_stdp.toml: vth = inhibition = 250, dv = 256, ~250 spikes per recording),
a code the "ridge" readout reads far better than the vote table (README "Unsupervised STDP").

Between recordings the neuron state and the traces are reset (Diehl & Cook's resting period). After
learning, the saved network's responses over the training set name the neurons: by default every neuron's
count is shared among the classes by its mean count per class, normalised (:func:`class_votes`,
``Readout(kind="vote")``: a probabilistic assignment; 81.4 % against 78.8 % mean over 5 seeds on the
100 N-MNIST test recordings, same networks, deployed without leak); ``readout = "assignment"`` gives each
neuron the one class with the highest mean count, as Diehl & Cook (:func:`assign_classes`, :func:`predict`:
the class whose neurons have the highest mean count); ``readout = "ridge"`` fits a linear readout of the
counts by least squares (:func:`ridge_votes`), stored as a vote table. Either way labels are used only
after learning, to read the frozen network out. The saved network carries the readout and the
``InputSpec``, so any evaluator runs it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.schema import Key, toml_value
from pipeline.snn.learning.competitive import WinnerTakeAll
from pipeline.snn.learning.homeostasis import AdaptiveThreshold, ThresholdAdapter
from pipeline.snn.learning.normalization import WeightNormalization
from pipeline.snn.learning.rule import LearningRule
from pipeline.snn.model import InputSpec, Readout
from pipeline.snn.network import INPUT, Dense, LoihiLIF, Network, Population
from pipeline.snn.runtime import build
from pipeline.train.present import Presentation, present_file
from pipeline.train.run import Fitted, TrainRun
from recordings.labelled import open_labelled

#: The N-MNIST sensor grid (Orchard et al. 2015: ATIS, 34 x 34 pixels after saccade stabilisation).
NMNIST_SIZE = 34
EXC = "exc"
#: Per-epoch history entries, in the order a checkpoint stores them.
HISTORY_KEYS = ("epoch", "samples", "accuracy", "spikes_per_sample", "silent_samples", "theta_mean", "weight_mean")
#: Recordings between progress reports inside an epoch.
PROGRESS_EVERY = 50
FEEDFORWARD = "input_exc"
#: How the saved network's training responses become its class readout (StdpConfig.readout).
READOUTS = ("vote", "assignment", "ridge")
INHIBITION = "exc_exc"


class StdpDiverged(ValueError):
    """Learning stopped making sense (no excitatory spikes in an epoch); the message names the epoch."""


@dataclass(frozen=True)
class StdpConfig:
    """Everything that defines a Diehl & Cook run. Units: vth and inhibition in threshold-mantissa units
    (a weight W with exponent weight_exp adds W * 2**weight_exp to v / 64); times in steps of ``bin_us`` µs.

    Input: ``width`` x ``height`` (DVS sensor, px), ``scale`` (event pooling), ``polarity`` ("merge" or "split"),
    ``bin_us``, ``duration_us`` (0 = whole recording). Neurons: ``n_neurons``, ``du``/``dv`` (12-bit
    decays), ``vth``, ``refractory`` (steps), ``weight_exp`` of the learned projection, ``inhibition``.
    Rule: ``rule`` (Lava syntax for dw), pre trace ``x1_impulse``/``x1_tau``, post trace
    ``y1_impulse``/``y1_tau``, ``t_epoch``, initial weights uniform in 0..``init_weight``; ``norm_total``:
    every neuron's input weights are rescaled to this L1 or L2 norm (``norm_order``) after each recording
    (0 = off); ``winner_only``: per step only the spiking neuron with the largest input learns
    (:mod:`pipeline.snn.learning.competitive`); neurons that learned in fewer than ``min_wins`` steps (won a
    step; without winner_only: spiked) are left out of the saved network (0 keeps all): their weights are
    still mostly the random initial ones, which match every digit a little and vote for whichever class
    drives them most (one seed: 40 such neurons, all assigned to class 3). Homeostasis: ``theta_increment``
    per spike (vth units), ``theta_tau`` (steps, 0 = none), ``theta_limit``, ``theta_recentre`` (after each
    recording the smallest theta is subtracted from all, so the least used neuron sits at ``vth``).
    Deployment (the saved network, also used for the class assignment): ``deploy_vth`` > 0 gives every
    neuron this threshold instead of vth + theta (0 keeps the learned thresholds, as Diehl & Cook do);
    ``deploy_dv`` >= 0 replaces dv (-1 keeps it); ``deploy_inhibition`` > 0 replaces the lateral inhibition
    (0 keeps it); ``readout``: "vote" (each neuron's count shared among the classes by its mean response
    per class over the training set: Readout kind "vote"), "assignment" (each neuron votes for its one
    best class, Diehl & Cook) or "ridge" (a least-squares linear readout of the training counts with L2
    penalty ``ridge_penalty``, saved as a vote table: :func:`ridge_votes`). With dv = 0 and inhibition =
    threshold, every spike lowers every neuron's v by the same amount (the spiker by its reset, the others
    by inhibition), so v_i = D_i - vth * (spikes so far) with D_i neuron i's dot product with all events so
    far: each spike goes to the neuron with the largest D_i.
    ``epochs`` passes over the training set (shuffled each pass with ``seed``).
    """

    n_neurons: int = 400
    width: int = NMNIST_SIZE
    height: int = NMNIST_SIZE
    scale: int = 1
    polarity: str = "merge"
    bin_us: int = 1000
    duration_us: int = 0
    du: int = 4095
    dv: int = 128
    vth: int = 300
    refractory: int = 0
    weight_exp: int = -3
    inhibition: int = 32000
    rule: str = "2^-1*y0*(x1 - 8)"
    x1_impulse: float = 32.0
    x1_tau: float = 20.0
    y1_impulse: float = 0.0
    y1_tau: float = 0.0
    t_epoch: int = 1
    init_weight: int = 64
    norm_total: int = 1500
    norm_order: int = 2
    winner_only: bool = True
    min_wins: int = 10
    theta_increment: float = 300.0
    theta_tau: float = 0.0
    theta_limit: float = 100000.0
    theta_recentre: bool = True
    deploy_vth: int = 2000
    deploy_dv: int = 0
    deploy_inhibition: int = 2000
    readout: str = "vote"
    ridge_penalty: float = 30.0
    epochs: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        def positive(name, high):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or not 0 < value <= high:
                raise ValueError(f"stdp config: {name!r} must be an integer in 1..{high}, got {toml_value(value)}")
        if isinstance(self.min_wins, bool) or int(self.min_wins) != self.min_wins or self.min_wins < 0:
            raise ValueError(f"stdp config: 'min_wins' must be an integer >= 0, got {toml_value(self.min_wins)}")
        for name, high in (("n_neurons", 10_000), ("width", 4096), ("height", 4096), ("scale", 64),
                           ("bin_us", 1_000_000),
                           ("vth", 2 ** 17 - 1), ("epochs", 1000), ("init_weight", 255), ("inhibition", 255 * 128)):
            positive(name, high)
        if self.readout not in READOUTS:
            raise ValueError(f"stdp config: 'readout' must be one of {', '.join(READOUTS)}, got {toml_value(self.readout)}")
        if isinstance(self.ridge_penalty, bool) or not isinstance(self.ridge_penalty, (int, float)) \
                or not 0 < self.ridge_penalty < float("inf"):
            raise ValueError(f"stdp config: 'ridge_penalty' must be a finite number > 0, got {toml_value(self.ridge_penalty)}")
        if self.polarity not in ("merge", "split"):
            raise ValueError(f"stdp config: 'polarity' must be \"merge\" or \"split\", got {toml_value(self.polarity)}")
        self.learning_rule()                   # parses and checks the rule and traces
        AdaptiveThreshold(self.theta_increment, self.theta_tau, self.theta_limit)
        if self.norm_total:
            self.normalization()
        if not 0 <= self.deploy_vth < 2 ** 17 or not -1 <= self.deploy_dv <= 4095 \
                or not 0 <= self.deploy_inhibition <= 255 * 128:
            raise ValueError(f"stdp config: 'deploy_vth' must be 0..{2 ** 17 - 1}, 'deploy_dv' -1..4095 and "
                             f"'deploy_inhibition' 0..{255 * 128}, got {toml_value(self.deploy_vth)}, "
                             f"{toml_value(self.deploy_dv)}, {toml_value(self.deploy_inhibition)}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (2 if self.polarity == "split" else 1, -(-self.height // self.scale), -(-self.width // self.scale))

    @property
    def n_inputs(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    def input_spec(self) -> InputSpec:
        return InputSpec(sensor="dvs", bin_us=self.bin_us, encoding="spikes", polarity=self.polarity,
                         duration_us=self.duration_us, tail_steps=2, scale=self.scale)

    def learning_rule(self) -> LearningRule:
        return LearningRule.from_strings(dw=self.rule, x1_impulse=self.x1_impulse, x1_tau=self.x1_tau,
                                         y1_impulse=self.y1_impulse, y1_tau=self.y1_tau, t_epoch=self.t_epoch,
                                         rng_seed=self.seed + 1, sign_mode="excitatory")

    def normalization(self) -> WeightNormalization:
        return WeightNormalization(self.norm_total, self.norm_order)

    def homeostasis(self) -> AdaptiveThreshold:
        return AdaptiveThreshold(self.theta_increment, self.theta_tau, self.theta_limit)


def _exp_for(magnitude: int) -> tuple[int, int]:
    """(mantissa <= 255, exponent >= 0) with mantissa * 2**exponent ~ magnitude."""
    exponent = 0
    while magnitude > 255 * 2 ** exponent:
        exponent += 1
    return round(magnitude / 2 ** exponent), exponent


def build_network(config: StdpConfig, weights: np.ndarray, vth: np.ndarray | int, learning: bool,
                  readout: Readout | None = None, dv: int | None = None, inhibition: int | None = None) -> Network:
    """The Diehl & Cook network: ``weights`` (n_neurons, n_inputs) int 0..255, per-neuron ``vth``; the
    feed-forward projection learns with ``config.learning_rule()`` when ``learning``."""
    n = config.n_neurons
    mantissa, exponent = _exp_for(config.inhibition if inhibition is None else inhibition)
    lateral = np.full((n, n), -mantissa, np.int64)
    np.fill_diagonal(lateral, 0)
    neuron = LoihiLIF(du=config.du, dv=config.dv if dv is None else dv, vth=vth, refractory=config.refractory)
    return Network(
        n_inputs=config.n_inputs,
        populations=[Population(EXC, n, neuron)],
        projections=[Dense(name=FEEDFORWARD, source=INPUT, target=EXC, weights=weights, weight_exp=config.weight_exp,
                           learning=_learning(config) if learning else None),
                     Dense(name=INHIBITION, source=EXC, target=EXC, weights=lateral, weight_exp=exponent)],
        output=EXC, input_shape=config.input_shape, input_spec=config.input_spec(), readout=readout)


def _learning(config: StdpConfig):
    rule = config.learning_rule()
    return WinnerTakeAll(rule) if config.winner_only else rule


def present_all(paths, config: StdpConfig) -> list[Presentation]:
    """Every recording of ``paths`` as the network's input (ValueError names a bad file)."""
    spec = config.input_spec()
    return [present_file(p, spec, config.input_shape, config.n_inputs) for p in paths]


def run_counts(runtime, presentation: Presentation, after_step: Callable[[], None] | None = None) -> np.ndarray:
    """Reset ``runtime``, present one recording, return the output spike counts (n_outputs,) int64."""
    runtime.reset()
    counts = np.zeros(runtime.network.n_outputs, np.int64)
    indptr, index = presentation.indptr, presentation.index
    for k in range(presentation.n_steps):
        counts += runtime.step(index[indptr[k]:indptr[k + 1]])
        if after_step is not None:
            after_step()
    return counts


def responses(network: Network, presentations: list[Presentation]) -> np.ndarray:
    """(n_samples, n_outputs) spike counts of a (non-learning) network on the loihi backend."""
    runtime = build(network, "loihi")
    runtime.warmup()
    return np.stack([run_counts(runtime, p) for p in presentations]) if presentations else \
        np.zeros((0, network.n_outputs), np.int64)


def assign_classes(counts: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Diehl & Cook's labelling: neuron i -> the class with the highest mean count of i over that class's
    samples; -1 for a neuron that never spiked. counts (n_samples, n_neurons), labels (n_samples,)."""
    labels = np.asarray(labels)
    means = np.zeros((n_classes, counts.shape[1]))
    for c in range(n_classes):
        if np.any(labels == c):
            means[c] = counts[labels == c].mean(axis=0)
    assignment = means.argmax(axis=0).astype(np.int64)
    assignment[counts.sum(axis=0) == 0] = -1
    return assignment


def predict(counts: np.ndarray, assignment: np.ndarray, n_classes: int) -> np.ndarray:
    """The assignment vote per sample: the class whose assigned neurons have the highest mean count
    (classes without neurons never win; ties go to the lower class). counts (n_samples, n_neurons)."""
    scores = np.full((counts.shape[0], n_classes), -np.inf)
    for c in range(n_classes):
        members = assignment == c
        if members.any():
            scores[:, c] = counts[:, members].mean(axis=1)
    return scores.argmax(axis=1)


def class_votes(counts: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """A probabilistic assignment: (n_neurons, n_classes), row i = neuron i's mean count per class over the
    training samples, normalised to sum 1 (zeros for a neuron that never spiked). counts (n_samples,
    n_neurons), labels (n_samples,)."""
    labels = np.asarray(labels)
    means = np.zeros((counts.shape[1], n_classes))
    for c in range(n_classes):
        if np.any(labels == c):
            means[:, c] = counts[labels == c].mean(axis=0)
    total = means.sum(axis=1, keepdims=True)
    return np.divide(means, total, out=np.zeros_like(means), where=total > 0)


def ridge_votes(counts: np.ndarray, labels: np.ndarray, n_classes: int, penalty: float) -> np.ndarray:
    """A least-squares readout as a vote table: (n_neurons, n_classes) float >= 0.

    W = argmin |counts @ W - onehot(labels)|^2 + penalty * |W|^2 (ridge regression of the one-hot labels
    on the spike counts, no intercept), then each row shifted by its minimum: that adds the same amount
    (counts @ row minima) to every class of a sample, so argmax(counts @ votes) is the linear classifier's
    decision, in the form a "vote" Readout stores (votes >= 0). The table is then scaled so its rows' ranges
    (max - min) average 1: one spike moves the gap between two classes by about as much as a spike of a
    one-class neuron does with the vote table, so a streaming classifier's early-decision margin keeps its
    meaning (evidence units ~ spikes). counts (n_samples, n_neurons), labels (n_samples,) ints in
    0..n_classes-1; ``penalty`` > 0 in squared-count units."""
    x = np.asarray(counts, np.float64)
    targets = np.zeros((x.shape[0], n_classes))
    targets[np.arange(x.shape[0]), np.asarray(labels)] = 1.0
    w = np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ targets)
    w -= w.min(axis=1, keepdims=True)
    spread = w.max(axis=1).mean()
    return w / spread if spread > 0 else w


def predict_votes(counts: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """The vote readout per sample: argmax over classes of counts @ votes (ties to the lower class)."""
    return (counts @ votes).argmax(axis=1)


def readout_predict(counts: np.ndarray, readout: Readout) -> np.ndarray:
    """Class per sample of an "assignment" or "vote" readout; counts (n_samples, n_neurons)."""
    if readout.kind == "vote":
        return predict_votes(counts, readout.votes)
    return predict(counts, readout.assignment, len(readout.classes))


@dataclass(frozen=True)
class StdpResult:
    """A trained network (assignment readout set), per-epoch history and final metrics."""

    network: Network
    history: list[dict]
    metrics: dict


def train(config: StdpConfig, presentations: list[Presentation], labels, classes: tuple[str, ...],
          progress: Callable[..., None] | None = None, checkpoint: Callable[[dict], None] | None = None,
          resume: dict | None = None) -> StdpResult:
    """Learn the input weights and thresholds over ``config.epochs`` passes, then assign classes.

    ``presentations`` (from :func:`present_all`) with integer ``labels`` into ``classes``. After every epoch
    ``progress(epoch=, samples=, accuracy=, ...)`` is called (epoch 1-based; accuracy: the assignment vote on
    this epoch's own responses, labels assigned from them; also every PROGRESS_EVERY recordings) and
    ``checkpoint(state)`` gets the arrays that ``resume`` takes back (weights, theta, learned, epoch,
    history). Raises StdpDiverged when an epoch ends without a single excitatory spike.
    """
    rng = np.random.default_rng(config.seed)
    labels = np.asarray(labels, np.int64)
    weights = rng.integers(0, config.init_weight + 1, size=(config.n_neurons, config.n_inputs))
    theta, first, history = None, 1, []
    learned = np.zeros(config.n_neurons, np.int64)
    if resume is not None:
        weights, theta, learned = resume["weights"], resume["theta"], resume["learned"].astype(np.int64)
        first = int(resume["epoch"]) + 1
        history = [dict(zip(HISTORY_KEYS, row)) for row in np.asarray(resume["history"]).tolist()]
        for entry in history:
            entry["epoch"], entry["samples"] = int(entry["epoch"]), int(entry["samples"])
        rng = np.random.default_rng([config.seed, first])
    network = build_network(config, weights, config.vth, learning=True)
    runtime = build(network, "loihi")
    runtime.warmup()
    base = np.full(config.n_neurons, config.vth, np.int64)
    adapter = ThresholdAdapter(config.homeostasis(), base, runtime.spikes_of(EXC), runtime.thresholds(EXC), theta)
    view = runtime.dense_view(FEEDFORWARD)
    normalization = config.normalization() if config.norm_total else None
    if normalization is not None and resume is None:
        normalization.apply(view)
    epoch_counts = np.zeros((len(presentations), config.n_neurons), np.int64)
    for epoch in range(first, config.epochs + 1):
        order = rng.permutation(len(presentations))
        for k, i in enumerate(order, 1):
            epoch_counts[i] = run_counts(runtime, presentations[i], adapter.step)
            if normalization is not None:
                normalization.apply(view)
            if config.theta_recentre:
                adapter.recentre()
            if progress is not None and k % PROGRESS_EVERY == 0 and k < len(order):
                seen = order[:k]
                so_far = assign_classes(epoch_counts[seen], labels[seen], len(classes))
                progress(epoch=epoch, samples=k, accuracy=float(np.mean(
                    predict(epoch_counts[seen], so_far, len(classes)) == labels[seen])))
        totals = epoch_counts.sum(axis=1)
        learned += runtime.learner(FEEDFORWARD).wins if config.winner_only else epoch_counts.sum(axis=0)
        if config.winner_only:
            runtime.learner(FEEDFORWARD).wins[:] = 0
        if totals.sum() == 0:
            raise StdpDiverged(f"epoch {epoch}: no excitatory neuron spiked over {len(order)} recordings "
                               f"(vth {config.vth}, input weights at most {int(view.max())}); lower vth or raise "
                               "the input weights (network.weight_exp)")
        assignment = assign_classes(epoch_counts, labels, len(classes))
        entry = {"epoch": epoch, "samples": len(order),
                 "accuracy": float(np.mean(predict(epoch_counts, assignment, len(classes)) == labels)),
                 "spikes_per_sample": float(totals.mean()), "silent_samples": int((totals == 0).sum()),
                 "theta_mean": float(adapter.theta.mean()), "weight_mean": float(view.mean())}
        history.append(entry)
        if progress is not None:
            progress(**entry)
        if checkpoint is not None:
            checkpoint({"weights": runtime.learned_weights(FEEDFORWARD), "theta": adapter.theta.copy(),
                        "learned": learned.copy(),
                        "epoch": np.array(epoch),
                        "history": np.array([[h[k] for k in HISTORY_KEYS] for h in history], np.float64)})
    keep = learned >= config.min_wins
    if not keep.any():
        raise StdpDiverged(f"epoch {config.epochs}: no neuron learned in {config.min_wins} steps "
                           f"(most: {int(learned.max())}); lower vth or min_wins")
    vth = np.full(config.n_neurons, config.deploy_vth) if config.deploy_vth else adapter.vth()
    deployed = dataclasses.replace(config, n_neurons=int(keep.sum()))
    frozen = build_network(deployed, runtime.learned_weights(FEEDFORWARD)[keep], vth[keep], learning=False,
                           readout=Readout(kind="count", classes=tuple(str(i) for i in range(deployed.n_neurons))),
                           dv=config.deploy_dv if config.deploy_dv >= 0 else None,
                           inhibition=config.deploy_inhibition or None)
    counts = responses(frozen, presentations)
    assignment = assign_classes(counts, labels, len(classes))
    if config.readout == "vote":
        readout = Readout(kind="vote", classes=tuple(classes), votes=class_votes(counts, labels, len(classes)))
    elif config.readout == "ridge":
        readout = Readout(kind="vote", classes=tuple(classes),
                          votes=ridge_votes(counts, labels, len(classes), config.ridge_penalty))
    else:
        readout = Readout(kind="assignment", classes=tuple(classes), assignment=assignment)
    accuracy = float(np.mean(readout_predict(counts, readout) == labels))
    trained = dataclasses.replace(frozen, readout=readout)
    metrics = {"train_accuracy": accuracy, "neurons": deployed.n_neurons,
               "neurons_dropped_unlearned": int((~keep).sum()), "neurons_assigned": int((assignment >= 0).sum()),
               "neurons_per_class": np.bincount(assignment[assignment >= 0], minlength=len(classes)).tolist()}
    return StdpResult(trained, history, metrics)


def evaluate(network: Network, paths, labels) -> float:
    """Accuracy of an assignment- or vote-readout network on labelled recordings (loihi backend)."""
    if network.readout is None or network.readout.kind not in ("assignment", "vote") or network.input_spec is None:
        raise ValueError("the network needs an input spec and an 'assignment' or 'vote' readout")
    spec = network.input_spec
    presentations = [present_file(p, spec, network.input_shape, network.n_inputs) for p in paths]
    counts = responses(network, presentations)
    return float(np.mean(readout_predict(counts, network.readout) == np.asarray(labels)))


def receptive_fields_png(network: Network, path: str | Path, columns: int = 20, zoom: int = 3) -> Path:
    """Tile every excitatory neuron's input weights (one tile per neuron and input channel, side by side)
    into a grey PNG, brighter = stronger, each tile scaled to its own maximum; written atomically."""
    import cv2

    c, h, w = network.input_shape
    weights = np.asarray(network.projection(FEEDFORWARD).weights, np.float64).reshape(-1, c, h, w)
    n = weights.shape[0]
    rows = -(-n // columns)
    tile_w = c * w + (c - 1)
    canvas = np.full((rows * (h + 1) + 1, columns * (tile_w + 1) + 1), 40, np.uint8)
    peak = weights.reshape(n, -1).max(axis=1)
    for i in range(n):
        r, col = divmod(i, columns)
        y0, x0 = 1 + r * (h + 1), 1 + col * (tile_w + 1)
        for ch in range(c):
            tile = weights[i, ch] / peak[i] * 255 if peak[i] > 0 else weights[i, ch]
            canvas[y0:y0 + h, x0 + ch * (w + 1):x0 + ch * (w + 1) + w] = tile.astype(np.uint8)
    image = cv2.resize(canvas, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    if not cv2.imwrite(str(tmp), image):
        raise ValueError(f"{path}: could not write the PNG")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------------- spikeloop train
#: ``spikeloop train`` config sections of method "stdp" (every key optional; defaults are StdpConfig's).
_D = StdpConfig()
SECTIONS: dict[str, dict[str, Key]] = {
    "train": {
        "epochs": Key("int", _D.epochs, low=1, high=1000, help="passes over the training set"),
        "limit": Key("int", 0, low=0, help="use only the first N training recordings (0: all)"),
    },
    "data": {
        "train": Key("str", help="folder of training recordings (relative to $SPIKELOOP_DATA)"),
        "train_labels": Key("str", "", help="labels file (relative to $SPIKELOOP_DATA)"),
        "test": Key("str", "", help="folder of test recordings (empty: none)"),
        "test_labels": Key("str", "", help="labels file of the test folder"),
        "holdout": Key("int", 0, low=0, help="hold out the last N training recordings (after train.limit): not "
                                             "learned from nor read out; reported as validation_accuracy"),
    },
    "input": {
        "width": Key("int", _D.width, low=1, high=4096, help="sensor width (px)"),
        "height": Key("int", _D.height, low=1, high=4096, help="sensor height (px)"),
        "bin_us": Key("int", _D.bin_us, low=1, high=1_000_000, help="step length (µs)"),
        "polarity": Key("str", _D.polarity, choices=("split", "merge"), help="one channel per polarity or one"),
        "scale": Key("int", _D.scale, low=1, high=64, help="pool x and y by this factor"),
        "duration_us": Key("int", _D.duration_us, low=0, high=3_600_000_000, help="present this much (µs; 0: all)"),
    },
    "network": {
        "neurons": Key("int", _D.n_neurons, low=1, high=10_000, help="excitatory neurons"),
        "du": Key("int", _D.du, low=0, high=4095, help="12-bit current decay (4095: current lasts one step)"),
        "dv": Key("int", _D.dv, low=0, high=4095, help="12-bit voltage decay (0: no leak)"),
        "vth": Key("int", _D.vth, low=1, high=2**17 - 1, help="base threshold mantissa while learning"),
        "refractory": Key("int", _D.refractory, low=0, high=255, help="refractory steps"),
        "weight_exp": Key("int", _D.weight_exp, low=-8, high=7, help="exponent of the learned input weights"),
        "inhibition": Key("int", _D.inhibition, low=1, high=255 * 128, help="lateral inhibition per spike "
                                                                            "(threshold-mantissa units)"),
        "init_weight": Key("int", _D.init_weight, low=1, high=255, help="initial weights uniform in 0..this"),
    },
    "stdp": {
        "rule": Key("str", _D.rule, help="dw rule, Lava syntax (x0 y0 x1 y1 w ...)"),
        "x1_impulse": Key("number", _D.x1_impulse, low=0, high=127, help="pre trace impulse"),
        "x1_tau": Key("number", _D.x1_tau, low=0, high=1e6, help="pre trace time constant (steps)"),
        "y1_impulse": Key("number", _D.y1_impulse, low=0, high=127, help="post trace impulse"),
        "y1_tau": Key("number", _D.y1_tau, low=0, high=1e6, help="post trace time constant (steps)"),
        "t_epoch": Key("int", _D.t_epoch, low=1, high=63, help="learning epoch (steps)"),
        "norm_total": Key("int", _D.norm_total, low=0, high=10**9, help="input weight norm per neuron (0: off)"),
        "norm_order": Key("int", _D.norm_order, low=1, high=2, help="1: L1 (sum), 2: L2 norm"),
        "winner_only": Key("bool", _D.winner_only, help="per step only the strongest-driven spiking neuron learns"),
        "min_wins": Key("int", _D.min_wins, low=0, high=10**9, help="neurons that learned in fewer steps are "
                                                                  "left out of the saved network (0: keep all)"),
    },
    "homeostasis": {
        "theta_increment": Key("number", _D.theta_increment, low=0, low_open=True, high=1e6,
                               help="threshold increase per spike (threshold-mantissa units)"),
        "theta_tau": Key("number", _D.theta_tau, low=0, high=1e12, help="theta decay time constant (steps; 0: none)"),
        "theta_limit": Key("number", _D.theta_limit, low=0, high=2**17, help="largest theta"),
        "theta_recentre": Key("bool", _D.theta_recentre, help="subtract the smallest theta after each recording"),
    },
    "deploy": {
        "inhibition": Key("int", _D.deploy_inhibition, low=0, high=255 * 128,
                          help="lateral inhibition of the saved network (0: as trained)"),
        "vth": Key("int", _D.deploy_vth, low=0, high=2**17 - 1, help="common threshold of the saved network "
                                                                     "(0: the learned vth + theta)"),
        "dv": Key("int", _D.deploy_dv, low=-1, high=4095, help="voltage decay of the saved network (-1: as trained)"),
        "readout": Key("str", _D.readout, choices=READOUTS,
                       help="vote: each neuron's spikes shared among classes by its training responses; "
                            "assignment: one class per neuron (Diehl & Cook); ridge: a least-squares linear "
                            "readout of the counts, saved as a vote table"),
        "ridge_penalty": Key("number", _D.ridge_penalty, low=0, low_open=True, high=1e12,
                             help="ridge readout: L2 penalty (squared spike counts)"),
    },
}


def config_from_sections(config: dict, seed: int) -> StdpConfig:
    """The validated ``spikeloop train`` sections -> StdpConfig (ValueError names the bad key)."""
    i, n, r, h, d = config["input"], config["network"], config["stdp"], config["homeostasis"], config["deploy"]
    try:
        return StdpConfig(
            n_neurons=n["neurons"], width=i["width"], height=i["height"], scale=i["scale"], polarity=i["polarity"],
            bin_us=i["bin_us"], duration_us=i["duration_us"], du=n["du"], dv=n["dv"], vth=n["vth"],
            refractory=n["refractory"], weight_exp=n["weight_exp"], inhibition=n["inhibition"], rule=r["rule"],
            x1_impulse=r["x1_impulse"], x1_tau=r["x1_tau"], y1_impulse=r["y1_impulse"], y1_tau=r["y1_tau"],
            t_epoch=r["t_epoch"], init_weight=n["init_weight"], norm_total=r["norm_total"],
            norm_order=r["norm_order"], winner_only=r["winner_only"], min_wins=r["min_wins"],
            theta_increment=h["theta_increment"],
            theta_tau=h["theta_tau"], theta_limit=h["theta_limit"], theta_recentre=h["theta_recentre"],
            deploy_vth=d["vth"], deploy_dv=d["dv"], deploy_inhibition=d["inhibition"], readout=d["readout"],
            ridge_penalty=d["ridge_penalty"],
            epochs=config["train"]["epochs"], seed=seed)
    except ValueError as error:
        raise ValueError(f"[stdp] rule: {error}" if "rule" in str(error) else str(error)) from None


def _data_path(run: TrainRun, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else run.data_dir / path


def fit(config: dict, run: TrainRun) -> Fitted:
    """``spikeloop train`` method "stdp": learn, assign classes, report train (and validation, test) accuracy.

    With ``[data] holdout = N`` the last N training recordings (after ``[train] limit``) are kept out of
    learning and of the readout fit and scored as ``validation_accuracy`` (for choosing hyperparameters
    without the test set).

    Writes the learned receptive fields next to the model (``MODEL.fields.png``) when the run keeps
    checkpoints (``spikeloop train`` always does: MODEL.ckpt.npz).
    """
    stdp = config_from_sections(config, run.seed)
    data = config["data"]
    train_set = open_labelled(_data_path(run, data["train"]),
                              _data_path(run, data["train_labels"]) if data["train_labels"] else None)
    if config["train"]["limit"]:
        train_set = train_set.subset(range(min(config["train"]["limit"], len(train_set))))
    holdout = data["holdout"]
    validation_set = None
    if holdout:
        if holdout >= len(train_set):
            raise ValueError(f"[data] holdout = {holdout} leaves none of the {len(train_set)} training recordings "
                             "to learn from")
        validation_set = train_set.subset(range(len(train_set) - holdout, len(train_set)))
        train_set = train_set.subset(range(len(train_set) - holdout))
    test_set = None
    if data["test"]:
        test_set = open_labelled(_data_path(run, data["test"]),
                                 _data_path(run, data["test_labels"]) if data["test_labels"] else None,
                                 train_set.classes)
    presentations = present_all(train_set.paths, stdp)
    resume = run.resumed()
    if resume is not None:
        for key, shape in (("weights", (stdp.n_neurons, stdp.n_inputs)), ("theta", (stdp.n_neurons,))):
            if key not in resume or resume[key].shape != shape:
                raise run.resume_error(key, f"expected an array of shape {shape} for this config")
    run.plan(stdp.epochs, len(presentations))

    def progress(epoch, samples, accuracy, **more):
        run.progress(epoch=epoch - 1, samples=samples, loss=float("nan"), accuracy=accuracy, **more)

    result = train(stdp, presentations, train_set.labels, train_set.classes, progress, run.checkpoint, resume)
    metrics = dict(result.metrics)
    if validation_set is not None:
        metrics["validation_accuracy"] = evaluate(result.network, validation_set.paths, validation_set.labels)
        metrics["validation_samples"] = len(validation_set)
    if test_set is not None:
        metrics["test_accuracy"] = evaluate(result.network, test_set.paths, test_set.labels)
        metrics["test_samples"] = len(test_set)
    if run.checkpoint_path is not None:
        fields = run.checkpoint_path.with_name(run.checkpoint_path.name.replace(".ckpt.npz", ".fields.png"))
        receptive_fields_png(result.network, fields)
        metrics["fields_png"] = str(fields)
    return Fitted(result.network, result.history, metrics)
