"""The training methods ``spikeloop train`` knows: method name -> module path (imported only when chosen).

A method module provides

* ``SECTIONS: dict[str, dict[str, pipeline.core.schema.Key]]`` — the config sections it reads and their
  keys (types, bounds, defaults). Keys it lists under ``"train"`` join the command's own ``[train]`` keys
  (``method``, ``seed``). The command validates the whole file (and ``--set`` overrides) against them
  before anything runs or is written: an unknown section or key, or a value of the wrong type or out of
  range, is one line naming file, section and key, exit status 2.
* ``fit(config, run) -> pipeline.train.run.Fitted`` — ``config`` is the validated file as
  ``{section: {key: value}}`` (defaults filled in), ``run`` a :class:`pipeline.train.run.TrainRun` (seed,
  data folder, progress, checkpoints and resume). It raises ``ValueError`` (one line naming the file or
  key) for bad data; the command turns that into exit status 2 before anything is written.
"""
from __future__ import annotations

#: method name -> module path (a module with SECTIONS and fit()).
METHODS: dict[str, str] = {
    "bptt": "pipeline.train.bptt",
    "stdp": "pipeline.train.stdp",
    "ann2snn": "pipeline.train.ann2snn",
    "spiketime": "pipeline.train.spiketime",
}
