"""Classify labelled recordings with a model: present each one, run the network, read the output out.

A model is a network file with an :class:`~pipeline.snn.model.InputSpec` (how a recording is presented) and
a :class:`~pipeline.snn.model.Readout` (how outputs become a class). For each recording,
:class:`SampleClassifier` resets the runtime, presents the recording step by step as the spec says
(:func:`pipeline.train.present.present_file`: graded event counts go to the runtime as payloads with the
"counts" encoding) and feeds the output spikes (and the output membrane voltages) to the streaming
:class:`pipeline.decoders.classifier.ClassifierDecoder`, which gives the early decision (the margin rule)
and the end-of-sample decision (the readout's rule). :func:`evaluate` does that over a
:class:`recordings.labelled.LabelledSet`, over a pool of worker processes when asked (every sample starts
from a reset network, so the results do not depend on the split and come back in the set's order).

Learning rules are removed before running (an evaluation never changes the weights); a float network asked
to run on the loihi backend is converted with :func:`pipeline.snn.convert.to_loihi` (:func:`prepare` says
so, and notes a LoihiLIF network run on the float backend and classes the readout never decides). Errors
are :class:`ModelError` (the model cannot classify: what is missing and how to add it) or ValueError naming
the recording.
"""
from __future__ import annotations

import dataclasses
import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.decoders.classifier import ClassifierDecoder, Decision
from pipeline.snn.convert import to_loihi
from pipeline.snn.network import INPUT, Network
from pipeline.snn.runtime import build
from pipeline.train.present import Presentation, present_file, speaker_levels
from recordings.labelled import LabelledSet, LabelsError

BACKENDS = ("loihi", "float")


class ModelError(ValueError):
    """A network that cannot classify as it is (no input spec or readout, or one that does not fit it)."""


def check_model(network: Network) -> None:
    """ModelError unless ``network`` carries an input spec and a readout that fit it; the message says what is
    missing and how to add it."""
    how = ("add it with dataclasses.replace(network, {field}=...) from pipeline.snn.model and Network.save "
           "(trainers and importers store it)")
    if network.input_spec is None:
        raise ModelError("the network has no input_spec (how a recording is presented: sensor, bin_us, encoding); "
                         + how.format(field="input_spec"))
    if network.readout is None:
        raise ModelError("the network has no readout (how output activity becomes a class: kind, classes); "
                         + how.format(field="readout"))
    spec = network.input_spec
    if spec.sensor == "dvs":
        if network.input_shape is None:
            raise ModelError("the network has no input_shape; DVS input needs a (C, H, W) grid")
        c, h, w = network.input_shape
        if c * h * w != network.n_inputs:
            raise ModelError(f"input_shape {network.input_shape} holds {c * h * w} inputs, the network has "
                             f"{network.n_inputs}")
    elif spec.channels != network.n_inputs:
        raise ModelError(f"input spec: the cochlea has {spec.channels} channels, the network {network.n_inputs} "
                         f"inputs")
    if spec.graded and not any(p.source == INPUT and p.num_message_bits for p in network.projections):
        raise ModelError(f"input spec encoding {spec.encoding!r} needs graded input spikes, but no projection from the input "
                         "has num_message_bits > 0")


def prepare(network: Network, backend: str) -> tuple[Network, list[str]]:
    """The network as it is evaluated on ``backend``: learning rules removed, the output population's membrane
    probed (readouts read it), converted to LoihiLIF for "loihi" when it is a float network. Returns it and
    notes for the user (what was changed)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    check_model(network)
    notes = []
    if any(p.learning is not None for p in network.projections):
        network = dataclasses.replace(network, projections=tuple(
            dataclasses.replace(p, learning=None) for p in network.projections))
        notes.append("learning rules removed: evaluation does not change the weights")
    if backend == "loihi" and network.is_float:
        network, report = to_loihi(network)
        notes.append(f"float network converted to the loihi backend with pipeline.snn.convert.to_loihi "
                     f"(largest weight error {report.max_weight_error:.3g} of the layer's largest weight)")
    if backend == "float" and not network.is_float:
        notes.append("a LoihiLIF network on the float backend: its dynamics without Loihi's integer rounding, not "
                     "what it computes on the chip (--backend loihi)")
    never = _never_decided(network.readout)
    if never:
        notes.append(f"class(es) {', '.join(never)} get no vote from any output neuron (readout "
                     f"{network.readout.kind!r}): the model never decides them")
    network = network.with_population(network.output_name, probe_v=True)
    return network, notes


def _never_decided(readout) -> list[str]:
    """The classes an "assignment" or "vote" readout (Readout.vote_table) gives no output neuron's spikes to."""
    table = readout.vote_table()
    if table is None:
        return []
    return [name for name, heard in zip(readout.classes, table.any(axis=0)) if not heard]


def decoder_for(network: Network, margin: float, min_evidence: float) -> ClassifierDecoder:
    """The streaming classifier for ``network``'s readout."""
    readout = network.readout
    return ClassifierDecoder(network.n_outputs, classes=readout.classes, kind=readout.kind,
                             assignment=readout.assignment, margin=margin, min_evidence=min_evidence,
                             votes=readout.votes)


@dataclass(frozen=True)
class SampleResult:
    """One recording's decisions: ``label`` (class index, -1 unknown), the early and the end decision, and
    the steps presented."""

    path: str
    label: int
    early: Decision
    end: Decision
    n_steps: int


class SampleClassifier:
    """A prepared network (see :func:`prepare`) built for ``backend``, classifying one recording at a time."""

    def __init__(self, network: Network, backend: str, margin: float = 3.0, min_evidence: float = 1.0):
        self.network = network
        self.spec = network.input_spec
        self.runtime = build(network, backend)
        self.decoder = decoder_for(network, margin, min_evidence)
        self.output = network.output_name
        self.graded = self.spec.graded
        #: AGC start level (channels,) per recording path, for a spec with cochlea_agc_start "speaker".
        self.agc_levels: dict[str, np.ndarray] = {}

    def present(self, path: str | Path) -> Presentation:
        return present_file(path, self.spec, self.network.input_shape, self.network.n_inputs,
                            agc_level=self.agc_levels.get(str(path)))

    def run(self, presentation: Presentation) -> tuple[Decision, Decision]:
        """Run one presentation from a reset network: (early, end) decisions; time 0 = the first event (a
        "frame" presentation starts after its window, :attr:`InputSpec.start_us`)."""
        runtime, decoder = self.runtime, self.decoder
        runtime.reset()
        decoder.start(0)
        indptr, index, count = presentation
        bin_us, start_us = self.spec.bin_us, self.spec.start_us
        v = runtime.v(self.output)
        for k in range(presentation.n_steps):
            lo, hi = indptr[k], indptr[k + 1]
            spikes = runtime.step(index[lo:hi], count[lo:hi] if self.graded else None)
            decoder.update(spikes, start_us + (k + 1) * bin_us, v)
        return decoder.finish(start_us + presentation.n_steps * bin_us)

    def classify(self, path: str | Path, label: int = -1) -> SampleResult:
        presentation = self.present(path)
        early, end = self.run(presentation)
        return SampleResult(str(path), int(label), early, end, presentation.n_steps)


@dataclass(frozen=True)
class Evaluation:
    """Results of a labelled set: ``results`` in the set's order, ``classes`` the model's class names."""

    classes: tuple[str, ...]
    results: tuple[SampleResult, ...]
    backend: str
    notes: tuple[str, ...]
    seconds: float
    workers: int

    @property
    def n(self) -> int:
        return len(self.results)

    def _labels(self) -> np.ndarray:
        return np.array([r.label for r in self.results], dtype=np.int64)

    def accuracy(self, early: bool = False) -> float:
        """Fraction of recordings whose end (or early) decision is their label."""
        if not self.results:
            return math.nan
        picked = np.array([(r.early if early else r.end).index for r in self.results])
        return float(np.mean(picked == self._labels()))

    def confusion(self) -> np.ndarray:
        """int64 (n_classes, n_classes): row = true class, column = end decision."""
        matrix = np.zeros((len(self.classes), len(self.classes)), dtype=np.int64)
        for r in self.results:
            matrix[r.label, r.end.index] += 1
        return matrix

    def per_class(self) -> list[dict]:
        """Per class: name, recordings, accuracy of the end decision (nan without recordings)."""
        matrix = self.confusion()
        rows = []
        for i, name in enumerate(self.classes):
            n = int(matrix[i].sum())
            rows.append({"class": name, "n": n, "accuracy": float(matrix[i, i] / n) if n else math.nan})
        return rows

    def latencies_ms(self) -> np.ndarray:
        """float64 (n,) latency of each recording's early decision (ms from its first event)."""
        return np.array([r.early.latency_ms for r in self.results], dtype=np.float64)

    def as_dict(self) -> dict:
        latency = self.latencies_ms()
        decided = np.array([r.early.early for r in self.results], dtype=bool)
        return {
            "accuracy": nan(self.accuracy()),
            "n": self.n,
            "backend": self.backend,
            "confusion": self.confusion().tolist(),
            "classes": list(self.classes),
            "per_class": [{**row, "accuracy": nan(row["accuracy"])} for row in self.per_class()],
            "early_accuracy": nan(self.accuracy(early=True)),
            "end_accuracy": nan(self.accuracy()),
            "latency_ms": {"mean": nan(float(latency.mean())) if self.n else None,
                           "median": nan(float(np.median(latency))) if self.n else None},
            "decided_early": float(decided.mean()) if self.n else None,
            "sample_duration_ms": {"mean": float(np.mean([r.end.latency_ms for r in self.results])) if self.n
                                   else None},
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
            "samples_per_s": round(self.n / self.seconds, 2) if self.seconds > 0 else None,
            "workers": self.workers,
        }


def nan(value):
    """JSON has no NaN: None for a non-finite float."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


# -- worker processes ---------------------------------------------------------------------------------------

#: The classifier forked worker processes inherit (built once, in the parent, before the pool starts).
_WORKER: SampleClassifier | None = None


def _classify_in_worker(item: tuple[str, int]) -> SampleResult:
    return _WORKER.classify(*item)


def evaluate(network: Network, data: LabelledSet, backend: str = "loihi", margin: float = 3.0,
             min_evidence: float = 1.0, workers: int = 1,
             progress: Callable[[int, int], None] | None = None) -> Evaluation:
    """Classify every recording of ``data`` (its classes must be the readout's) with ``network`` on
    ``backend``. ``workers`` > 1 spreads the recordings over that many processes (same results, same
    order). ``progress(done, total)`` is called as recordings finish. The first recording is classified here
    first, so a model that does not fit the data fails before any worker starts."""
    started = time.perf_counter()
    prepared, notes = prepare(network, backend)
    if tuple(data.classes) != tuple(prepared.readout.classes):
        raise ModelError(f"the data's classes {list(data.classes)} are not the readout's "
                         f"{list(prepared.readout.classes)}")
    local = SampleClassifier(prepared, backend, margin, min_evidence)
    if prepared.input_spec.cochlea_agc_start == "speaker":
        try:
            speakers = data.speakers()
        except LabelsError as error:
            raise ModelError(f"the model's cochlea starts each clip adapted to its speaker (input spec "
                             f"cochlea_agc_start 'speaker'), which needs FSDD names: {error}") from None
        levels = speaker_levels(data.paths, speakers, prepared.input_spec)
        local.agc_levels = {str(p): levels[s] for p, s in zip(data.paths, speakers)}
        notes = [*notes, (f"the cochlea's AGC starts adapted to each speaker: their mean level over their clips "
                          f"here ({len(levels)} speaker{'s' if len(levels) != 1 else ''}, labels unused)")]
    items = [(str(p), int(label)) for p, label in zip(data.paths, data.labels)]
    results = [local.classify(*items[0])] if items else []
    if progress:
        progress(len(results), len(items))
    rest = items[1:]
    workers = max(1, min(int(workers), len(rest)))
    if workers == 1:
        for item in rest:
            results.append(local.classify(*item))
            if progress:
                progress(len(results), len(items))
    else:
        global _WORKER
        _WORKER = local  # forked workers start with the compiled runtime (each sample resets it)
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                for result in pool.map(_classify_in_worker, rest, chunksize=max(1, len(rest) // (8 * workers))):
                    results.append(result)
                    if progress:
                        progress(len(results), len(items))
        finally:
            _WORKER = None
    return Evaluation(tuple(data.classes), tuple(results), backend, tuple(notes),
                      time.perf_counter() - started, workers)
