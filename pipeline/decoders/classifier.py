"""Streaming classification: one sample's output activity, step by step -> a class with a confidence as soon
as the evidence is enough (the early decision), and the class the readout gives at the sample's end.

Evidence per class accumulates from the sample's first step, by readout kind (the kinds of
:class:`pipeline.snn.model.Readout`, passed here as plain values):

* ``"count"``: spikes of the class's output neuron so far;
* ``"assignment"``: mean spike count over the output neurons assigned to the class (Diehl & Cook 2015;
  a class without neurons never leads);
* ``"vote"``: every output neuron's spikes so far shared among the classes by its row of ``votes``
  (n_outputs, n_classes), summed per class (a probabilistic assignment);
* ``"max_membrane"``: the highest membrane voltage the class's neuron reached so far (membrane units);
* ``"first_spike"``: the step of the class's first spike (earlier wins).

The early decision is taken at the first step where the leading class's evidence exceeds the runner-up's by
at least ``margin`` and reaches ``min_evidence`` (spikes for count/assignment/vote, membrane units for
max_membrane); for ``"first_spike"`` it is the first step in which an output neuron spikes. A sample that
never reaches it is decided at its end, by the end rule. The end decision follows the readout: count (most
spikes; ties by the higher membrane maximum when membrane voltages are given, then the lower class index),
assignment, vote and max_membrane (highest evidence, ties to the lower index), first_spike (earliest spike, ties
by membrane maximum then index; no spike at all: the highest membrane maximum).

Confidence in [0, 1]: the leading class's share of the evidence (count, assignment), of the evidence above
its minimum (max_membrane), or 1 / the number of classes tied at the earliest spike (first_spike); 1 / the
number of classes when there is no evidence at all.

Latency of a decision: sensor time from the sample's first event (the start of its first step) to the end
of the step in which it was taken (ms).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.checks import check_number
from pipeline.core.schema import toml_value
from pipeline.decoders.window import check_spikes, check_votes

KINDS = ("count", "max_membrane", "first_spike", "assignment", "vote")
UNDECIDED = -1


@dataclass(frozen=True)
class Decision:
    """A class decision: ``index`` into the classes, ``confidence`` in [0, 1], ``latency_ms`` from the
    sample's first event, ``t_us`` sensor time of the end of the deciding step, ``early`` True when taken
    before the sample's end by the margin rule."""

    index: int
    confidence: float
    latency_ms: float
    t_us: int
    early: bool


class ClassifierDecoder:
    """Class evidence of one sample at a time, with an early (margin) and an end-of-sample decision.

    n_outputs: output neurons. classes: class names in index order (default "0".."n-1" with one neuron per
    class). kind: readout kind (see the module docstring). assignment: (n_outputs,) class index per neuron
    (-1 = none), kind "assignment" only. votes: (n_outputs, n_classes) float >= 0, kind "vote" only. margin: evidence the leader needs over the runner-up for the early
    decision (>= 0; spikes, or membrane units). min_evidence: evidence the leader needs at least (>= 0).

    Use: ``start(t0_us)`` at the sample's first event, ``update(spikes, t_us, v)`` once per step (returns the
    early decision's class index, -1 while undecided), ``finish(t_us)`` at its end -> (early, end) decisions.
    """

    name = "classifier"

    def __init__(self, n_outputs: int, classes=None, kind: str = "count", assignment=None,
                 margin: float = 3.0, min_evidence: float = 1.0, votes=None):
        if kind not in KINDS:
            raise ValueError(f"{self.name}: parameter 'kind' must be one of {', '.join(map(toml_value, KINDS))}, got {toml_value(kind)}")
        self.n_outputs = int(n_outputs)
        self.kind = kind
        if kind == "assignment":
            if assignment is None:
                raise ValueError(f"{self.name}: parameter 'assignment' is required with kind 'assignment'")
            self.assignment = np.asarray(assignment, dtype=np.int64)
            if self.assignment.shape != (self.n_outputs,):
                raise ValueError(f"{self.name}: parameter 'assignment' must have {self.n_outputs} entries, "
                                 f"got shape {self.assignment.shape}")
            n_classes = len(classes) if classes is not None else int(self.assignment.max()) + 1
        elif kind == "vote":
            if votes is None:
                raise ValueError(f"{self.name}: parameter 'votes' is required with kind 'vote'")
            self.assignment = None
            self.votes = check_votes(self.name, votes, self.n_outputs)
            n_classes = self.votes.shape[1]
        else:
            self.assignment = None
            n_classes = self.n_outputs
        if classes is None:
            classes = [str(i) for i in range(n_classes)]
        self.classes = tuple(str(c) for c in classes)
        if len(self.classes) != n_classes or not self.classes:
            raise ValueError(f"{self.name}: parameter 'classes' must name {n_classes} classes, got {len(self.classes)}")
        self.margin = check_number(self.name, "margin", margin, 0.0)
        self.min_evidence = check_number(self.name, "min_evidence", min_evidence, 0.0)
        if self.assignment is not None:
            if self.assignment.min() < -1 or self.assignment.max() >= n_classes:
                raise ValueError(f"{self.name}: parameter 'assignment' must hold class indices -1..{n_classes - 1}")
            voters = self.assignment >= 0
            self._voters = np.flatnonzero(voters)
            self._voter_class = self.assignment[voters]
            self._class_size = np.bincount(self._voter_class, minlength=n_classes).astype(np.float64)
        self.counts = np.zeros(self.n_outputs, dtype=np.int64)
        self.v_max = np.full(self.n_outputs, -np.inf)
        self.first_step = np.full(self.n_outputs, np.iinfo(np.int64).max, dtype=np.int64)
        self.start(0)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def start(self, t0_us: int) -> None:
        """Begin a sample whose first event is at ``t0_us`` µs (the start of its first step): evidence cleared."""
        self.t0_us = int(t0_us)
        self.steps = 0
        self.counts.fill(0)
        self.v_max.fill(-np.inf)
        self.first_step.fill(np.iinfo(np.int64).max)
        self.early: Decision | None = None

    def reset(self) -> None:
        """Forget the current sample (as :meth:`start` at its last ``t0_us``)."""
        self.start(self.t0_us)

    def update(self, spikes, t_us: int, v=None) -> int:
        """One step's output ``spikes`` (uint8 (n_outputs,)) ending at ``t_us`` µs, with the output neurons'
        membrane voltages ``v`` ((n_outputs,), optional; needed by max_membrane and the count tie rule).
        Returns the early decision's class index, or -1 while the evidence is not enough."""
        spikes = check_spikes(self.name, spikes, self.n_outputs)
        self.counts += spikes
        if v is not None:
            np.maximum(self.v_max, v, out=self.v_max)
        fired = spikes.astype(bool)
        if fired.any():
            np.minimum(self.first_step, np.where(fired, self.steps, self.first_step), out=self.first_step)
        self.steps += 1
        if self.early is None:
            index, confidence = self._early_rule()
            if index != UNDECIDED:
                self.early = Decision(index, confidence, (int(t_us) - self.t0_us) / 1000.0, int(t_us), True)
        return self.early.index if self.early is not None else UNDECIDED

    def finish(self, t_us: int) -> tuple[Decision, Decision]:
        """End of the sample at ``t_us`` µs (end of its last step): (early decision, end decision). The early
        decision is the end decision when the margin was never reached."""
        index, confidence = self._end_rule()
        end = Decision(index, confidence, (int(t_us) - self.t0_us) / 1000.0, int(t_us), False)
        return (self.early if self.early is not None else end), end

    # -- evidence and rules ---------------------------------------------------------------------------------

    def evidence(self) -> np.ndarray:
        """float64 (n_classes,) evidence per class so far (first_spike: minus the step of the first spike)."""
        if self.kind == "count":
            return self.counts.astype(np.float64)
        if self.kind == "assignment":
            sums = np.bincount(self._voter_class, weights=self.counts[self._voters], minlength=self.n_classes)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(self._class_size > 0, sums / np.maximum(self._class_size, 1), -np.inf)
        if self.kind == "vote":
            return self.counts @ self.votes
        if self.kind == "max_membrane":
            return self.v_max.copy()
        return np.where(self.first_step < np.iinfo(np.int64).max, -self.first_step.astype(np.float64), -np.inf)

    def _early_rule(self) -> tuple[int, float]:
        evidence = self.evidence()
        if self.kind == "first_spike":
            if not np.isfinite(evidence).any():
                return UNDECIDED, 0.0
            return self._leader(evidence)
        order = np.argsort(-evidence, kind="stable")
        best = evidence[order[0]]
        second = evidence[order[1]] if len(order) > 1 else -np.inf
        if not np.isfinite(best) or best < self.min_evidence or not best - second >= self.margin:
            return UNDECIDED, 0.0
        return int(order[0]), self._confidence(evidence, int(order[0]))

    def _end_rule(self) -> tuple[int, float]:
        evidence = self.evidence()
        if self.kind == "first_spike" and not np.isfinite(evidence).any():
            evidence = self.v_max.copy()  # no output spike: the highest membrane maximum
            if not np.isfinite(evidence).any():
                return 0, 1.0 / self.n_classes
            return int(np.argmax(evidence)), self._confidence(evidence, int(np.argmax(evidence)))
        return self._leader(evidence)

    def _leader(self, evidence: np.ndarray) -> tuple[int, float]:
        """The class with the highest evidence; count and first_spike break ties by membrane maximum, then
        the lower index."""
        best = np.max(evidence)
        tied = np.flatnonzero(evidence == best)
        index = int(tied[0])
        if len(tied) > 1 and self.kind in ("count", "first_spike"):
            v = self.v_max[tied]
            if np.isfinite(v).any():
                index = int(tied[int(np.argmax(v))])
        return index, self._confidence(evidence, index)

    def _confidence(self, evidence: np.ndarray, index: int) -> float:
        finite = evidence[np.isfinite(evidence)]
        if self.kind == "first_spike":
            return 1.0 / int(np.sum(evidence == evidence[index])) if np.isfinite(evidence[index]) else 0.0
        if finite.size == 0:
            return 1.0 / self.n_classes
        shifted = finite - (finite.min() if self.kind == "max_membrane" else 0.0)
        total = shifted.sum()
        if total <= 0:
            return 1.0 / self.n_classes
        lead = evidence[index] - (finite.min() if self.kind == "max_membrane" else 0.0)
        return float(lead / total)


#: The command a :class:`SampleDecisions` emits per decision (float64, in this order): sample index, final
#: (0 = the early decision, taken before the sample's end; 1 = the end of the sample), class index,
#: confidence, latency_ms, label (-1 unknown), the early decision's class index and latency_ms.
DECISION_FIELDS = ("sample", "final", "class", "confidence", "latency_ms", "label", "early_class", "early_latency_ms")


class SampleDecisions:
    """A :class:`ClassifierDecoder` over a stream of samples laid out in time (the loop's decode step).

    slots: a sequence, growing while the stream plays, of objects with ``start_us``, ``end_us`` (the
    sample's steps, µs) and ``label`` (class index, -1 unknown), e.g. recordings.sample_replay.SampleSlot.
    membrane: ``() -> (n_outputs,)`` output membrane voltages after a step (or None). on_sample_end: called
    after a sample's last step (the graph resets the network there).

    Calling it with one step's output spikes and the step's end time returns a command (see
    :data:`DECISION_FIELDS`) when a decision is taken in that step, else None: the early decision once, and
    the end decision at the sample's last step (which carries the early one too). ``results`` collects
    (slot, early, end) per finished sample.
    """

    def __init__(self, decoder: ClassifierDecoder, slots, membrane=None, on_sample_end=None):
        self.decoder = decoder
        self.slots = slots
        self.membrane = membrane
        self.on_sample_end = on_sample_end
        self.results: list[tuple[object, Decision, Decision]] = []
        self._current = 0
        self._started = False

    def __call__(self, spikes, t_us: int) -> np.ndarray | None:
        decoder = self.decoder
        slot = self.slots[self._current]
        if not self._started:
            decoder.start(slot.start_us)
            self._started = True
        had_early = decoder.early is not None
        decoder.update(spikes, t_us, None if self.membrane is None else self.membrane())
        if t_us >= slot.end_us:
            early, end = decoder.finish(t_us)
            self.results.append((slot, early, end))
            self._current += 1
            self._started = False
            if self.on_sample_end is not None:
                self.on_sample_end()
            return self._command(1, end, slot, early)
        if not had_early and decoder.early is not None:
            return self._command(0, decoder.early, slot, decoder.early)
        return None

    def summary(self) -> dict:
        """Over the finished samples: their number, accuracy of the end and the early decision (over the
        labelled ones; None without labels) and the early decision's latency (ms, mean and median)."""
        labelled = [(slot.label, early.index, end.index) for slot, early, end in self.results if slot.label >= 0]
        latency = np.array([early.latency_ms for _, early, _ in self.results])
        return {"samples": len(self.results), "labelled": len(labelled),
                "accuracy": float(np.mean([e == y for y, _, e in labelled])) if labelled else None,
                "early_accuracy": float(np.mean([e == y for y, e, _ in labelled])) if labelled else None,
                "latency_ms_mean": float(latency.mean()) if len(latency) else None,
                "latency_ms_median": float(np.median(latency)) if len(latency) else None}

    def _command(self, final: int, decision: Decision, slot, early: Decision) -> np.ndarray:
        return np.array([self._current - final, final, decision.index, decision.confidence, decision.latency_ms,
                         slot.label, early.index, early.latency_ms], dtype=np.float64)
