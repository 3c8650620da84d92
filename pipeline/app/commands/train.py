"""``spikeloop train CONFIG.toml [--set key=value ...] --out MODEL.npz [--json] [--resume CHECKPOINT]``.

Trains a network with the method named by the config's ``[train] method`` (pipeline.train.methods) and
writes it to MODEL.npz (a normal network file with input_spec and readout), its loss/accuracy curves to
MODEL.png and, after every epoch, a checkpoint to MODEL.ckpt.npz (all written atomically). The config is
TOML: ``[train]`` holds ``method`` and ``seed`` (a fixed seed makes the run reproducible) plus the
method's own keys; the other sections are the method's. ``--set section.key=value`` overrides a value
(parsed as TOML). ``--resume`` continues from a checkpoint of the same method and network shape.

Progress goes to stderr: a bar on a terminal, otherwise one line every few seconds (epoch, samples/s,
loss, accuracy). ``--json`` prints the method's final metrics as one JSON object on stdout.
Exit status: 0 done; 2 bad config, option, data or checkpoint (one line naming file/section/key;
nothing written); 130 interrupted (the last checkpoint stays).
"""
from __future__ import annotations

import importlib
import json
import math
import sys
import time
import tomllib
from pathlib import Path

from pipeline.core.schema import command_line_value

#: How often the non-terminal progress line is printed (s).
LINE_EVERY_S = 5.0
BAR_WIDTH = 24


def register(subparsers, summary: str) -> None:
    parser = subparsers.add_parser("train", help=summary, description=__doc__.split("\n\n")[1])
    parser.add_argument("config", help="training config (.toml) with [train] method = ...")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value (TOML syntax; repeatable)")
    parser.add_argument("--out", required=True, metavar="MODEL.npz", help="network file to write (.npz)")
    parser.add_argument("--json", action="store_true", help="print the final metrics as JSON on stdout")
    parser.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint (MODEL.ckpt.npz)")
    parser.set_defaults(func=run)


class BadInput(ValueError):
    """A config, option or file that cannot be used (exit status 2)."""


def parse_set(assignment: str):
    """``section.key=value`` -> (section, key, value); the value is parsed as TOML, else kept as text."""
    name, sep, text = assignment.partition("=")
    path = [p.strip() for p in name.split(".")]
    if not sep or len(path) != 2 or not all(path):
        raise BadInput(f"--set {assignment!r}: expected section.key=value")
    try:
        return path[0], path[1], command_line_value(text)
    except ValueError as exc:
        raise BadInput(f"--set {'.'.join(path)}: {exc}") from None   # the key only, as launch --set: no 10 kB line


def load_config(path: str | Path, sets: list[str]):
    """(method name, method module, validated config {section: {key: value}}); BadInput names file/section/key."""
    from pipeline.core.schema import Context, Key, LaunchError, check_table, toml_value
    from pipeline.train.methods import METHODS

    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BadInput(f"{path}: cannot read the config ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise BadInput(f"{path}: not valid TOML: {error}") from None
    for assignment in sets:
        section, key, value = parse_set(assignment)
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise BadInput(f"--set {assignment!r}: [{section}] is not a table")
        table[key] = value
    train = raw.get("train")
    if not isinstance(train, dict) or "method" not in train:
        raise BadInput(f"{path}: [train] method: missing (expected one of: {', '.join(sorted(METHODS))})")
    method = train["method"]
    if not isinstance(method, str) or method not in METHODS:
        raise BadInput(f"{path}: [train] method: expected one of: {', '.join(sorted(METHODS))}, "
                       f"got {toml_value(method)}")
    module = importlib.import_module(METHODS[method])
    common = {"method": Key("str", choices=tuple(sorted(METHODS)), help="training method"),
              "seed": Key("int", 0, low=0, high=2**32 - 1, help="random seed (fixed: reproducible run)")}
    sections = {name: dict(keys) for name, keys in module.SECTIONS.items()}
    sections["train"] = {**common, **sections.get("train", {})}
    unknown = [name for name in raw if name not in sections]
    if unknown:
        raise BadInput(f"{path}: [{unknown[0]}]: unknown section for method {toml_value(method)} "
                       f"(expected one of: {', '.join(sorted(sections))})")
    config = {}
    try:
        for name, schema in sections.items():
            config[name] = check_table(Context(path, name), raw.get(name, {}), schema)
    except LaunchError as error:
        raise BadInput(str(error)) from None
    return method, module, config


class Progress:
    """Prints progress records to stderr: a redrawn bar on a terminal, else a line every LINE_EVERY_S."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_line = -math.inf
        self.epoch = None
        self.epoch_start = time.perf_counter()
        self.run = None

    def __call__(self, record: dict) -> None:
        now = time.perf_counter()
        if record["epoch"] != self.epoch:
            self.epoch, self.epoch_start = record["epoch"], now
        rate = record.get("samples_per_s") or record["samples"] / max(now - self.epoch_start, 1e-9)
        epochs = self.run.epochs if self.run else None
        per_epoch = self.run.samples_per_epoch if self.run else None
        head = f"epoch {record['epoch'] + 1}" + (f"/{epochs}" if epochs else "")
        extra = "".join(f" {k} {v:.4g}" if isinstance(v, float) else f" {k} {v}" for k, v in record.items()
                        if k not in ("epoch", "samples", "loss", "accuracy", "elapsed_s", "samples_per_s"))
        text = (f"{head} {record['samples']}" + (f"/{per_epoch}" if per_epoch else "") +
                f" {rate:.0f} samples/s loss {record['loss']:.4f} accuracy {100 * record['accuracy']:.1f}%{extra}")
        end_of_epoch = per_epoch is not None and record["samples"] >= per_epoch
        if self.tty:
            done = record["samples"] / per_epoch if per_epoch else 0.0
            fill = int(round(BAR_WIDTH * min(done, 1.0)))
            self.stream.write(f"\r[{'#' * fill}{'.' * (BAR_WIDTH - fill)}] {text}\033[K" + ("\n" if end_of_epoch else ""))
            self.stream.flush()
        elif end_of_epoch or now - self.last_line >= LINE_EVERY_S:
            self.stream.write(text + "\n")
            self.stream.flush()
            self.last_line = now


def run(args) -> int:
    def fail(message: str) -> int:
        print(f"spikeloop train: {message}", file=sys.stderr)
        return 2

    try:
        method, module, config = load_config(args.config, args.set)
    except BadInput as error:
        return fail(str(error))
    out = Path(args.out)
    if out.suffix != ".npz":
        return fail(f"--out {out}: the model file must end in .npz")
    if not out.parent.resolve().is_dir():
        return fail(f"--out {out}: folder {out.parent} does not exist")
    if out.is_dir():
        return fail(f"--out {out}: is a folder")
    from recordings.datasets import shared_data_dir
    from pipeline.train.run import TrainRun, load_checkpoint, write_atomically

    resume_state = None
    if args.resume:
        try:
            resume_state = load_checkpoint(args.resume, method)
        except ValueError as error:
            return fail(str(error))
    progress = Progress()
    train_run = TrainRun(config["train"]["seed"], shared_data_dir(), method, config,
                         checkpoint_path=out.with_name(out.stem + ".ckpt.npz"), report=progress,
                         resume_state=resume_state, resume_path=Path(args.resume) if args.resume else None)
    progress.run = train_run
    try:
        fitted = module.fit(config, train_run)
    except ValueError as error:  # "[section] key: ..." names the config file too
        return fail(f"{args.config}: {error}" if str(error).startswith("[") else str(error))
    except KeyboardInterrupt:
        print("\nspikeloop train: interrupted" + (f"; last checkpoint {train_run.checkpoint_path}"
              if train_run.checkpoint_path.exists() else ""), file=sys.stderr)
        return 130
    from pipeline.train.curves import curves_png

    png = out.with_suffix(".png")
    write_atomically(out, fitted.network.save)
    write_atomically(png, lambda temp: temp.write_bytes(curves_png(fitted.history)))
    summary = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fitted.metrics.items()
                        if isinstance(v, (int, float, str)))
    print(f"wrote {out} and {png}" + (f"; {summary}" if summary else ""), file=sys.stderr)
    if args.json:
        print(json.dumps(fitted.metrics))
    return 0
