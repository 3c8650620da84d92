"""Output spikes -> commands, and the BCI decoders (``pipeline.decoders.bci``).

Every decoder here is built from keyword parameters (first ``n_outputs``, the network's output count) and
has ``update(spikes: uint8 (n_outputs,), t_us) -> value`` (units in each class's docstring) and ``reset()``.
``DECODERS`` maps launch-file names to classes; ``MIXERS`` holds the body-velocity -> wheel mixers.
:mod:`pipeline.decoders.classifier` classifies one sample at a time (early and end-of-sample decisions);
it takes its classes from a model's readout, so launch files name it ``type = "classifier"`` outside
``DECODERS``.
"""
from __future__ import annotations

from pipeline.decoders.command_map import CommandMap
from pipeline.decoders.drive import DifferentialDrive, DriveDecoder
from pipeline.decoders.population import PopulationVector
from pipeline.decoders.rate import RateDecoder
from pipeline.decoders.window import SpikeWindow
from pipeline.decoders.wta import NO_ACTION, WinnerTakeAll

#: Decoder type name (as written in launch files) -> class.
DECODERS: dict[str, type] = {
    "rate": RateDecoder,
    "wta": WinnerTakeAll,
    "population_vector": PopulationVector,
    "drive": DriveDecoder,
    "command_map": CommandMap,
}

#: Mixer type name -> class (``mix(v_mps, omega_radps) -> wheel rad/s``).
MIXERS: dict[str, type] = {"differential_drive": DifferentialDrive}

__all__ = ["CommandMap", "DECODERS", "MIXERS", "RateDecoder", "WinnerTakeAll", "NO_ACTION", "PopulationVector",
           "DifferentialDrive", "DriveDecoder", "SpikeWindow"]
