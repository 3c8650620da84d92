"""Learning from data: surrogate gradients, quantization-aware training, ANN->SNN conversion, STDP, spike times.

Every method trains on the network description of :mod:`pipeline.snn` and returns a
:class:`pipeline.snn.Network` (with its :class:`~pipeline.snn.model.InputSpec` and
:class:`~pipeline.snn.model.Readout`) that the runtime, ``spikeloop evaluate`` and launch files use as is.
"""
