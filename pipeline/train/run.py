"""What a training method gets from ``spikeloop train`` (:class:`TrainRun`) and gives back (:class:`Fitted`).

:class:`TrainRun` carries the run's fixed ``seed``, the data folder (``$SPIKELOOP_DATA``), progress
reporting (the command prints it: a bar on a terminal, one line every few seconds otherwise) and
checkpoints: :meth:`TrainRun.checkpoint` writes the method's state dict atomically (temp file +
``os.replace``) next to the output, :meth:`TrainRun.resumed` returns the state a ``--resume`` checkpoint
holds (or None). A checkpoint records the method and the validated config; resuming with another method,
or with another config (any value but the epochs, unless the method allows more), is refused, and the method
itself checks that the arrays fit its network (:meth:`TrainRun.resume_error`
names the checkpoint file and key).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.core.npz import NpzError, load_npz
from pipeline.core.schema import toml_value

#: Keys of a checkpoint file that belong to the run, not to the method's state.
META_KEYS = ("run_method", "run_config")


@dataclass(frozen=True)
class Fitted:
    """A method's result: the trained ``network`` (with input_spec and readout for classifiers), the
    per-epoch ``history`` (dicts with at least epoch, loss, accuracy) and final ``metrics`` (JSON-ready)."""

    network: object
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temp_path)`` for a temp file in ``path``'s folder, then rename it over ``path`` (a reader
    sees the old file or the whole new one, never a partial one)."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp, 0o666 & ~umask)  # mkstemp makes it private; the result gets the usual permissions
    try:
        write(Path(temp))
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def load_checkpoint(path: str | Path, method: str) -> dict[str, np.ndarray]:
    """The method state held by a checkpoint written by :meth:`TrainRun.checkpoint`, read with bounded memory
    (pipeline.core.npz: no array larger than its budget is allocated). ValueError naming the file when it is
    not one, or was written by another method."""
    path = Path(path)
    try:
        arrays = load_npz(path)
    except OSError as error:
        raise ValueError(f"{path}: not a spikeloop train checkpoint ({error.strerror or error})") from None
    except NpzError as error:
        raise ValueError(f"{error} (not a spikeloop train checkpoint)") from None
    if "run_method" not in arrays:
        raise ValueError(f"{path}: not a spikeloop train checkpoint (no key 'run_method')")
    if str(arrays["run_method"]) != method:
        raise ValueError(f"{path}: key 'run_method' is {toml_value(str(arrays['run_method']))}, the config trains "
                         f"{toml_value(method)}")
    return arrays


class TrainRun:
    """The run a method is fitted in. See the module docstring.

    ``seed``: the config's seed (the method seeds every random choice from it). ``data_dir``: the shared
    data folder; relative data paths of a config resolve against it. ``checkpoint_path``: where
    :meth:`checkpoint` writes (None: checkpoints are not kept). ``report``: called with each progress
    record (the command's printer). ``resume_state``: the arrays of a ``--resume`` checkpoint.
    """

    def __init__(self, seed: int, data_dir: Path, method: str, config: dict, checkpoint_path: Path | None = None,
                 report: Callable[[dict], None] | None = None, resume_state: dict[str, np.ndarray] | None = None,
                 resume_path: Path | None = None):
        self.seed = int(seed)
        self.data_dir = Path(data_dir)
        self.method = method
        self.config = config
        self.checkpoint_path = checkpoint_path
        self.resume_path = resume_path
        self._report = report
        self._resume = resume_state
        self._start = time.perf_counter()
        self.epochs: int | None = None
        self.samples_per_epoch: int | None = None

    def plan(self, epochs: int, samples_per_epoch: int) -> None:
        """Tell the progress display how long the run is (optional; the bar needs it)."""
        self.epochs = int(epochs)
        self.samples_per_epoch = int(samples_per_epoch)

    def progress(self, epoch: int, samples: int, loss: float, accuracy: float, **more) -> None:
        """Report progress: ``epoch`` (0-based), ``samples`` trained so far in this epoch, the running mean
        ``loss`` and training ``accuracy`` (0..1) of this epoch, anything else by name."""
        if self._report is not None:
            self._report({"epoch": int(epoch), "samples": int(samples), "loss": float(loss),
                          "accuracy": float(accuracy), "elapsed_s": time.perf_counter() - self._start, **more})

    def checkpoint(self, state: dict[str, np.ndarray]) -> None:
        """Write ``state`` (names -> arrays) atomically to the checkpoint file, with the method and config."""
        if self.checkpoint_path is None:
            return
        bad = [key for key in state if key in META_KEYS]
        if bad:
            raise ValueError(f"checkpoint state may not use the reserved key {bad[0]!r}")
        arrays = {key: np.asarray(value) for key, value in state.items()}
        arrays["run_method"] = np.array(self.method)
        arrays["run_config"] = np.array(json.dumps(self.config, default=str, sort_keys=True))
        def write(temp: Path) -> None:
            with open(temp, "wb") as handle:
                np.savez(handle, **arrays)

        write_atomically(self.checkpoint_path, write)

    def resumed(self, may_change: tuple[str, ...] = ("train.epochs",)) -> dict[str, np.ndarray] | None:
        """The state of the ``--resume`` checkpoint (without the run's own keys), or None. A checkpoint written
        with another config is refused (:meth:`check_resumed_config`; ``may_change``: the "section.key" values
        that may differ, by default only the epochs, so a run can be continued for longer)."""
        if self._resume is None:
            return None
        self.check_resumed_config(may_change)
        return {key: value for key, value in self._resume.items() if key not in META_KEYS}

    def check_resumed_config(self, may_change: tuple[str, ...] = (), why: str = "") -> None:
        """ValueError (:meth:`resume_error`, key ``run_config``) naming the first ``[section] key`` whose value
        in the resumed checkpoint's config differs from this run's, unless it is in ``may_change``
        ("section.key"); ``why`` is added to the message. A resumed run continues the checkpoint's training:
        another seed, data or learning rate would silently mix two runs. Keys the checkpoint's config lacks
        (written before they existed) are not compared. Nothing to check without a resumed checkpoint."""
        if self._resume is None or "run_config" not in self._resume:  # none, or written before configs were kept
            return
        try:
            stored = json.loads(str(self._resume["run_config"]))
        except json.JSONDecodeError:
            stored = None
        if not isinstance(stored, dict) or not all(isinstance(table, dict) for table in stored.values()):
            raise self.resume_error("run_config", "missing or not the JSON of a config (not a spikeloop train "
                                                  "checkpoint?)")
        current = json.loads(json.dumps(self.config, default=str, sort_keys=True))
        for section in sorted(stored):
            was_table, now_table = stored[section], current.get(section, {})
            for key in sorted(was_table):  # a key the checkpoint lacks did not exist when it was written
                was, now = was_table[key], now_table.get(key)
                if f"{section}.{key}" not in may_change and was != now:
                    raise self.resume_error("run_config", f"[{section}] {key} is {toml_value(was)} in the checkpoint, "
                                                          f"{toml_value(now)} in this config (a resumed run continues "
                                                          f"the checkpoint's training{why})")

    def resume_error(self, key: str, message: str) -> ValueError:
        """A ValueError naming the resumed checkpoint file and key (the method raises it)."""
        return ValueError(f"{self.resume_path}: key {key!r}: {message}")
