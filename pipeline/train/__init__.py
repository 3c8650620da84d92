"""Learning from data: surrogate gradients, quantization-aware training, ANN->SNN conversion, STDP, spike times.

Every method trains on the network description of :mod:`pipeline.snn` and returns a
:class:`pipeline.snn.Network` (with its :class:`~pipeline.snn.model.InputSpec` and
:class:`~pipeline.snn.model.Readout`) that the runtime, ``spikeloop evaluate`` and launch files use as is.
"""
from __future__ import annotations

import os
import warnings

import numba

# The parallel kernels of pipeline.train run in numba's OpenMP pool. GNU OpenMP's default wait between
# parallel regions is a spin of ~300k iterations; on a 2-core machine shared with other processes the
# waiting thread burned the core the working one needed (2-thread BPTT steps cost 3x the CPU of 1-thread
# ones; small parallel batches ran ~70x slower). libgomp reads the policy once, when numba starts its pool,
# so it is set here, before any kernel of this package runs.
if numba.np.ufunc.parallel._is_initialized and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
    warnings.warn("numba's thread pool started before pipeline.train set OMP_WAIT_POLICY=PASSIVE: parallel "
                  "training may spin-wait (set OMP_WAIT_POLICY=PASSIVE in the environment)", stacklevel=2)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
