"""Spiking network description, backends (loihi, float), learning, core mapping.

``from pipeline.snn import Network, build``: see pipeline.snn.network (the frozen description, changed
with dataclasses.replace or ``network.with_projection(name, ...)``; save/load), pipeline.snn.runtime
(``build(network, backend)``, the step contract and the learning hook) and pipeline.snn.kernels (the
step kernels and their parameter/state NamedTuples).
"""
from pipeline.snn.counters import FIELDS as COUNTER_FIELDS
from pipeline.snn.counters import Counters
from pipeline.snn.network import INPUT, Conv2D, Dense, FloatLIF, LoihiLIF, Network, Population, Projection, Sparse
from pipeline.snn.runtime import BACKENDS, Runtime, build

__all__ = ["BACKENDS", "COUNTER_FIELDS", "Conv2D", "Counters", "Dense", "FloatLIF", "INPUT", "LoihiLIF", "Network",
           "Population", "Projection", "Runtime", "Sparse", "build"]
