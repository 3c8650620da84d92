"""``spikeloop evaluate MODEL.npz DATA [--labels FILE] [--backend loihi|float] [--json]``.

Classifies a folder of recordings (N-MNIST .bs2/.bin, any event format, or WAV files through the cochlea)
with a model: a network file holding an input spec and a readout (pipeline.snn.model). Labels come from a
file of ``sample class`` lines, or from FSDD names ``digit_speaker_index.wav``. Prints accuracy (the
readout's end-of-sample decision), per-class accuracy, the confusion matrix, and the streaming classifier's
early decision: its accuracy and its latency from each recording's first event (ms). ``--json`` prints one
object: accuracy, n, backend, confusion, classes, per_class, early_accuracy, end_accuracy, latency_ms
(mean, median), decided_early, notes, seconds, samples_per_s. A float network asked to run on the loihi
backend is converted (pipeline.snn.convert.to_loihi) and the output says so. Progress goes to stderr.

Exit status 0, or 2 on bad input (a model without input spec or readout, no recordings, labels that do not
match, a model of another shape than the data, a damaged recording), with one line saying what.
"""
from __future__ import annotations

import json
import os
import sys
import time

EXIT_INVALID = 2


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("evaluate", help=summary, description=__doc__.split("\n\n")[1])
    parser.add_argument("model", help="network file with an input spec and a readout (.npz)")
    parser.add_argument("data", help="folder of recordings")
    parser.add_argument("--labels", metavar="FILE", help="'sample class' lines (default: FSDD file names)")
    parser.add_argument("--backend", choices=["loihi", "float"], default="loihi",
                        help="backend (default loihi; a float network is converted with to_loihi)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--margin", type=float, default=3.0,
                        help="early decision: evidence the leading class needs over the runner-up (spikes, or "
                             "membrane units for a max_membrane readout; default 3)")
    parser.add_argument("--min-evidence", type=float, default=1.0,
                        help="early decision: evidence the leading class needs at least (default 1)")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes classifying recordings (default: one per core, at most 2)")
    parser.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N recordings (0 = all)")
    parser.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"spikeloop evaluate: {message}", file=sys.stderr)
    return EXIT_INVALID


class Progress:
    """``done/total recordings, rate`` on stderr: rewritten in place on a terminal, else a line per 10 %."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.started = time.perf_counter()
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        line = f"evaluate: {done}/{total} recordings, {rate:.1f}/s"
        if self.tty:
            print("\r" + line, end="\n" if done == total else "", file=sys.stderr, flush=True)
            return
        tenth = done * 10 // max(total, 1)
        if tenth != self.shown:
            self.shown = tenth
            print(line, file=sys.stderr, flush=True)


def run(args) -> int:
    from pipeline.snn.network import Network
    from pipeline.train.evaluate import ModelError, check_model, evaluate
    from recordings.labelled import LabelsError, open_labelled

    if args.margin < 0 or args.min_evidence < 0 or args.workers < 0 or args.limit < 0:
        return _fail("--margin, --min-evidence, --workers and --limit must be >= 0")
    try:
        network = Network.load(args.model)
    except (OSError, ValueError) as error:  # Network.load's errors name the file
        return _fail(str(error))
    try:  # before any data is read
        check_model(network)
    except ModelError as error:
        return _fail(f"{args.model}: {error}")
    try:
        data = open_labelled(args.data, args.labels, classes=network.readout.classes)
    except LabelsError as error:
        return _fail(str(error))
    if args.limit:
        data = data.subset(range(min(args.limit, len(data))))
    workers = args.workers or min(2, os.cpu_count() or 1)
    try:
        result = evaluate(network, data, args.backend, margin=args.margin, min_evidence=args.min_evidence,
                          workers=workers, progress=Progress())
    except ModelError as error:
        return _fail(f"{args.model}: {error}")
    except (OSError, ValueError) as error:
        return _fail(str(error))
    report = result.as_dict()
    if args.json:
        print(json.dumps(report))
        return 0
    print(_text(args, network, result, report))
    return 0


def _text(args, network, result, report) -> str:
    spec, readout = network.input_spec, network.readout
    n, correct = result.n, int(result.confusion().trace())
    lines = [(f"model     {args.model}: {readout.kind} readout over {len(readout.classes)} classes; input "
              f"{spec.sensor}, {spec.bin_us} µs steps, {spec.encoding}"),
             f"data      {args.data}: {n} recordings",
             f"backend   {result.backend}"]
    lines += [f"          {note}" for note in result.notes]
    lines.append(f"accuracy  {100 * report['accuracy']:.1f} % ({correct}/{n}), end-of-sample decision")
    lines.append(f"early     {100 * report['early_accuracy']:.1f} % (margin {args.margin:g}, decided early in "
                 f"{100 * report['decided_early']:.0f} % of the recordings)")
    latency = report["latency_ms"]
    lines.append(f"latency   early decision {latency['mean']:.1f} ms mean, {latency['median']:.1f} ms median from "
                 f"the first event (recordings last {report['sample_duration_ms']['mean']:.0f} ms on average)")
    lines.append(f"speed     {report['samples_per_s']} recordings/s with {report['workers']} worker(s)")
    lines.append("per class")
    width = max(5, *(len(c) for c in result.classes))
    for row in report["per_class"]:
        accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f} %"
        lines.append(f"  {row['class']:>{width}}  n={row['n']:<4d} {accuracy}")
    lines.append("confusion (rows: true class, columns: decided class)")
    lines.append("  " + " " * width + " " + " ".join(f"{c:>5}" for c in result.classes))
    for name, row in zip(result.classes, report["confusion"]):
        lines.append(f"  {name:>{width}} " + " ".join(f"{v:>5d}" for v in row))
    return "\n".join(lines)
