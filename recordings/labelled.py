"""Labelled data sets: a folder of recordings and the class of each.

Two ways to name the classes, as the shared data holds them:

* a labels file of ``sample class`` lines (N-MNIST's ``train_labels.txt``: ``#sample #class`` header
  lines start with ``#``; ``sample`` is a file's name without its extension),
* the FSDD naming ``{digit}_{speaker}_{index}.wav`` (the class is the digit).

:func:`open_labelled` returns a :class:`LabelledSet` (paths and integer class indices, in a fixed order
sorted by sample name, numbers numerically) and raises :class:`LabelsError` naming the file and line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: Recording suffixes a labelled folder may hold (event formats, N-MNIST .bs2/.bin, WAV).
RECORDING_SUFFIXES = (".bs2", ".bin", ".aedat4", ".aedat", ".raw", ".dat", ".es", ".wav")
#: A labels file larger than this is not a labels file (bounds what we read).
MAX_LABELS_BYTES = 64 * 1024 * 1024
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)$")
#: FSDD's official split: recordings with index below this are the test set.
FSDD_OFFICIAL_TEST = 5


class LabelsError(ValueError):
    """A labelled data set that cannot be used; the message names the file (and line)."""


@dataclass(frozen=True)
class LabelledSet:
    """``paths[i]`` is a recording of class ``labels[i]`` (an index into ``classes``)."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def speakers(self) -> tuple[str, ...]:
        """FSDD speaker of each recording (LabelsError when a name is not FSDD's)."""
        names = []
        for path in self.paths:
            match = FSDD_NAME.match(path.stem)
            if not match:
                raise LabelsError(f"{path}: not an FSDD name digit_speaker_index.wav")
            names.append(match.group(2))
        return tuple(names)

    def fsdd_split(self, split: str) -> tuple[LabelledSet, LabelledSet]:
        """(train, test) by an FSDD split: ``"official"`` (recordings 0-4 of every speaker are test, the rest
        train, as FSDD's README), ``"official_validation"`` (for choosing hyperparameters without the official
        test set: recordings 5-9 are the test set, 10 and up train, 0-4 in neither) or ``"leave_out:SPEAKER"``
        (every recording of SPEAKER is test: speaker-independent). LabelsError for another split, an unknown
        speaker or a name that is not FSDD's."""
        speakers = self.speakers()
        if split in ("official", "official_validation"):
            index = [int(FSDD_NAME.match(p.stem).group(3)) for p in self.paths]
            if split == "official_validation":
                low, high = FSDD_OFFICIAL_TEST, 2 * FSDD_OFFICIAL_TEST
                return (self.subset([i for i, k in enumerate(index) if k >= high]),
                        self.subset([i for i, k in enumerate(index) if low <= k < high]))
            test = [k < FSDD_OFFICIAL_TEST for k in index]
        elif split.startswith("leave_out:"):
            speaker = split[len("leave_out:"):]
            if speaker not in speakers:
                raise LabelsError(f"split {split!r}: no speaker {speaker!r} "
                                  f"(speakers: {', '.join(sorted(set(speakers)))})")
            test = [s == speaker for s in speakers]
        else:
            raise LabelsError(f"split {split!r}: expected 'official', 'official_validation' or 'leave_out:SPEAKER'")
        return (self.subset([i for i, t in enumerate(test) if not t]),
                self.subset([i for i, t in enumerate(test) if t]))

    def subset(self, keep) -> LabelledSet:
        """The recordings whose index is in ``keep`` (same classes)."""
        return LabelledSet(tuple(self.paths[i] for i in keep), tuple(self.labels[i] for i in keep), self.classes)


def _sort_key(path: Path):
    stem = path.stem
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


def read_labels(path: str | Path) -> dict[str, str]:
    """``sample -> class`` from a file of ``sample class`` lines (``#`` starts a comment)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise LabelsError(f"{path}: {path.stat().st_size} bytes is too large for a labels file "
                              f"(at most {MAX_LABELS_BYTES})")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise LabelsError(f"{path}: not UTF-8 text (byte offset {error.start})") from None
    except (IsADirectoryError, PermissionError, FileNotFoundError) as error:
        raise LabelsError(f"{path}: cannot read the labels file ({error.strerror})") from None
    labels: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise LabelsError(f"{path}:{number}: expected 'sample class', got {line!r}")
        sample, label = fields
        if sample in labels and labels[sample] != label:
            raise LabelsError(f"{path}:{number}: sample {sample!r} labelled twice ({labels[sample]!r}, {label!r})")
        labels[sample] = label
    if not labels:
        raise LabelsError(f"{path}: no 'sample class' lines")
    return labels


def _class_order(names) -> tuple[str, ...]:
    unique = set(names)
    if all(n.lstrip("-").isdigit() for n in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def open_labelled(folder: str | Path, labels: str | Path | None = None, classes: tuple[str, ...] | None = None
                  ) -> LabelledSet:
    """The recordings in ``folder`` with their classes.

    ``labels``: a ``sample class`` file; without one, WAV files take their class from FSDD names.
    ``classes``: the class names in index order (a model's); by default the sorted classes present.
    Every recording needs a label and every label a recording: a mismatch is a LabelsError naming both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LabelsError(f"{folder}: not a folder of recordings")
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in RECORDING_SUFFIXES and p.is_file()),
                   key=_sort_key)
    if not paths:
        raise LabelsError(f"{folder}: no recordings ({', '.join(RECORDING_SUFFIXES)})")
    if labels is not None:
        table = read_labels(labels)
        missing = [p.name for p in paths if p.stem not in table]
        if missing:
            raise LabelsError(f"{labels}: no label for {len(missing)} recording(s) in {folder}, e.g. {missing[0]}")
        stems = {p.stem for p in paths}
        orphans = [s for s in table if s not in stems]
        if orphans:
            raise LabelsError(f"{labels}: {len(orphans)} labelled sample(s) have no recording in {folder}, "
                              f"e.g. {orphans[0]!r}")
        names = [table[p.stem] for p in paths]
    else:
        names = []
        for path in paths:
            match = FSDD_NAME.match(path.stem)
            if not match:
                raise LabelsError(f"{path}: no labels file given and the name is not FSDD's digit_speaker_index "
                                  f"(pass --labels FILE)")
            names.append(match.group(1))
    order = tuple(classes) if classes is not None else _class_order(names)
    index = {name: i for i, name in enumerate(order)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise LabelsError(f"{labels or folder}: class(es) {unknown} are not among the model's classes {list(order)}")
    return LabelledSet(tuple(paths), tuple(index[n] for n in names), order)
