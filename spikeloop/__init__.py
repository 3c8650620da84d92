"""spikeloop's public Python API: the documented entry points, re-exported from where they live.

    import spikeloop

    with spikeloop.open_recording("recording.aedat4") as reader:      # any supported event format
        for chunk in reader.chunks():                                  # DVS_EVENT_DTYPE arrays, µs
            ...
    network = spikeloop.Network.load("net.npz")                        # a frozen network description
    runtime = spikeloop.build(network, "loihi")                        # bit-exact Loihi integer backend
    report = spikeloop.run_launch("launch/replay.toml", sets=["loop.mode='fast'"])
    motors = spikeloop.open_motors("dynamixel", "emulated:dynamixel", [1, 2])   # rad/s, with safety
    data = spikeloop.open_labelled("nmnist_small/test", "nmnist_small/test_labels.txt", network.readout.classes)
    result = spikeloop.evaluate(network, data, "loihi")                # .accuracy(), .confusion(), .as_dict()

The code lives in the project's folders (pipeline/, devices/, recordings/); this package only names what a
user needs, so scripts do not depend on the internal layout.
"""
from __future__ import annotations

from pathlib import Path

from devices.motors import SafeMotors, open_motors
from pipeline.app.launch import LaunchSpec, build_graph, load_launch
from pipeline.core.events import DVS_EVENT_DTYPE, SPIKE_DTYPE, dvs_events, spikes
from pipeline.core.packet import Packet, StreamInfo
from pipeline.loop import LoopReport
from pipeline.snn import Network, build
from pipeline.train.evaluate import evaluate
from recordings.detect import open_recording
from recordings.labelled import open_labelled

__all__ = ["DVS_EVENT_DTYPE", "SPIKE_DTYPE", "LaunchSpec", "LoopReport", "Network", "Packet", "SafeMotors",
           "StreamInfo", "build", "build_graph", "dvs_events", "evaluate", "load_launch", "open_labelled",
           "open_motors", "open_recording", "run_launch", "spikes"]


def run_launch(path: str | Path, *, sets: list[str] = (), source: str | None = None,
               duration_s: float | None = None, on_report=None) -> LoopReport:
    """Validate a launch file (plus ``--set``-style overrides and an optional source spec), build its graph,
    warm every kernel up, run the loop to the end (or ``duration_s`` of sensor time) and close motors and
    source. Returns the final :class:`LoopReport`; ``on_report`` also receives the periodic ones."""
    graph = build_graph(load_launch(path, sets, source=source, duration_s=duration_s), on_report=on_report)
    try:
        graph.loop.warmup()
        return graph.loop.run()
    finally:
        graph.close()
