"""The live view of ``spikeloop launch``, driven without a display: a real recording through the real loop
(launch/live_demo.toml's graph with the emulated Dynamixel bus), checked on the drawn image, the sinks
and a recording read back by dv-processing."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.app.dashboard import BG
from pipeline.app.launch import build_graph, load_launch
from pipeline.app.liveview import EVENT_BG, OFF, ON, for_graph, recording_name
from pipeline.core.events import DVS_EVENT_DTYPE

LIVE_DEMO = Path(__file__).resolve().parents[1] / "launch" / "live_demo.toml"
MOTOR_ROW = (80, 200, 255)  # the raster's colour for output neurons (pipeline.app.dashboard)


def dv_events(path: Path) -> np.ndarray:
    import dv_processing as dv

    recording = dv.io.MonoCameraRecording(str(path))
    parts = []
    while (batch := recording.getNextEventBatch()) is not None:
        parts.append(batch.numpy())
    return np.concatenate(parts).astype(DVS_EVENT_DTYPE)


class CommandTrace:
    """A sink that keeps (perf_counter_ns, command) of every write."""

    name = "trace"

    def __init__(self) -> None:
        self.rows: list[tuple[int, np.ndarray]] = []

    def write(self, command: np.ndarray, t_us: int) -> int:
        now = time.perf_counter_ns()
        self.rows.append((now, command.copy()))
        return now

    def close(self) -> None:
        pass

    def between(self, t0_ns: int, t1_ns: int) -> np.ndarray:
        return np.array([c for t, c in self.rows if t0_ns <= t < t1_ns])


@pytest.fixture
def recording(data_dir) -> Path:
    return data_dir / "events" / "dvxplorer_tonic.aedat4"


@pytest.fixture
def open_graph(recording):
    graphs = []

    def make(*sets: str, loop_replay: bool = False):
        spec = load_launch(LIVE_DEMO, sets=list(sets), source=str(recording))
        spec.source["loop"] = loop_replay  # (--set source.loop would land on the file's camera table)
        graph = build_graph(spec)
        graphs.append(graph)
        graph.loop.warmup()
        return graph

    yield make
    for graph in graphs:
        graph.close()


#: Upper bound (s) on waiting for the loop thread on a loaded machine (a wait ends as soon as its condition holds).
LOADED_S = 60.0


def wait_for(condition, timeout_s: float = LOADED_S) -> bool:
    """Poll ``condition()`` every 10 ms until it holds (True) or ``timeout_s`` passes (False)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def run_in_thread(view) -> threading.Thread:
    thread = threading.Thread(target=view.run, kwargs={"window": False, "fps": 50}, daemon=True)
    thread.start()
    return thread


def test_event_view_and_raster_show_the_replay(open_graph, recording):
    graph = open_graph("loop.mode='fast'")
    steps: list[tuple[int, np.ndarray]] = []
    decode = graph.loop.decode

    def spy(spikes, t_us):
        steps.append((t_us, spikes.astype(bool)))
        return decode(spikes, t_us)

    graph.loop.decode = spy
    view = for_graph(graph)
    report = view.run(window=False)
    assert report.steps > 500 and report.events_in == 111_954
    image = view.draw()
    assert image.shape == (540, 960, 3)

    # events: the file's last 30 ms, scaled from 320 x 240 into the panel, ON over OFF
    events = dv_events(recording)
    shown = events[events["timestamp"] >= events["timestamp"][-1] - 30_000]
    x0, y0, w, h = view.layout.events
    scale = min(w / 320, h / 240)
    sw, sh = int(320 * scale), int(240 * scale)
    panel = image[y0:y0 + sh, x0 + (w - sw) // 2:x0 + (w - sw) // 2 + sw]
    on_px = {(int(x), int(y)) for x, y in zip(shown["x"][shown["polarity"] == 1], shown["y"][shown["polarity"] == 1])}
    off_px = {(int(x), int(y)) for x, y in zip(shown["x"][shown["polarity"] == 0], shown["y"][shown["polarity"] == 0])}
    centre = lambda x, y: panel[int((y + 0.5) * scale), int((x + 0.5) * scale)].tolist()  # noqa: E731
    assert all(centre(x, y) == list(ON) for x, y in on_px)
    assert all(centre(x, y) == list(OFF) for x, y in off_px - on_px)
    quiet = [(x, y) for x in range(0, 320, 7) for y in range(0, 240, 7) if (x, y) not in on_px | off_px]
    assert all(centre(x, y) == list(EVENT_BG) for x, y in quiet)

    # raster: one row per output neuron, a spike line in each column where the neuron fired in the last 1 s
    assert view.neuron_names == ["steer 0 fwd,turn R", "steer 1 fwd,turn L"]
    fired = np.array([s for t, s in steps if t > steps[-1][0] - 1_000_000])
    assert view.raster_labels(fired) == [f"{n}  {c} Hz" for n, c in zip(view.neuron_names, fired.sum(axis=0))]
    rx, ry, rw, rh = view.layout.spikes
    raster = image[ry:ry + rh, rx:rx + rw]
    label_w = view.raster_label_width()
    t_end = steps[-1][0]
    for row in range(2):
        band = raster[int(row * rh / 2) + 3:int((row + 1) * rh / 2) - 3]
        drawn = set(np.flatnonzero(np.all(band == MOTOR_ROW, axis=2).any(axis=0)))
        expected = {label_w + int(rw - label_w - 1 - (t_end - t) / 1000 * (rw - label_w) / 1000)
                    for t, s in steps if s[row] and t > t_end - 1_000_000}
        assert expected and drawn == expected
    # the command plot has both wheels' lines; the status line shows the final rates
    cx, cy, cw, ch = view.layout.commands
    plot = image[cy:cy + ch, cx:cx + cw].reshape(-1, 3)
    assert (plot != BG).any(axis=1).sum() > 200


@pytest.mark.parametrize("mode", ["live", "paced"])
def test_pause_sends_zero_commands_and_resumes(open_graph, mode):
    graph = open_graph(f"loop.mode='{mode}'", "loop.idle_ms=0", loop_replay=True)
    trace = CommandTrace()
    graph.loop.sinks.append(trace)
    holding = threading.Event()  # set when the loop starts holding (the packet in progress is done)
    hold = graph.loop._hold

    def spy(reader):
        holding.set()
        return hold(reader)

    graph.loop._hold = spy
    view = for_graph(graph)
    thread = run_in_thread(view)
    try:
        assert wait_for(lambda: graph.loop.steps > 100)
        view.toggle_pause()
        assert holding.wait(LOADED_S)
        paused_at, steps = time.perf_counter_ns(), graph.loop.steps
        assert wait_for(lambda: len(trace.between(paused_at, time.perf_counter_ns())) >= 3)  # one every 50 ms
        if mode == "live":
            assert wait_for(lambda: graph.loop.paused_events > 0)  # the replay kept arriving and was dropped
        resumed_at = time.perf_counter_ns()
        assert graph.loop.paused and graph.loop.steps == steps
        assert not trace.between(paused_at, resumed_at).any()
        binned = graph.loop.steps + graph.loop.merged_steps
        view.toggle_pause()
        assert wait_for(lambda: graph.loop.steps > steps + 100)
        assert not graph.loop.paused
        assert np.abs(trace.between(resumed_at, time.perf_counter_ns())).max() > 0
        # no step for the 0.4 s paused (~400 bins if a paced clock kept its origin, or a live binner
        # stepped through the time it dropped): steps run + merged since the resume ~ wall time since
        wall_ms = (time.perf_counter_ns() - resumed_at) / 1e6
        assert graph.loop.steps + graph.loop.merged_steps - binned < wall_ms + 200
    finally:
        graph.loop.stop()
        thread.join(10)
    assert not thread.is_alive()


def test_estop_latches_on_the_motor_sink(open_graph):
    graph = open_graph("loop.mode='paced'", loop_replay=True)
    motors = graph.sinks[0]
    assert motors.port == "emulated:dynamixel"
    def counters() -> dict[str, int]:
        return motors.controller.counters

    view = for_graph(graph)
    thread = run_in_thread(view)
    try:
        assert wait_for(lambda: graph.loop.steps > 100)
        assert not motors.controller.estopped
        view.handle_key(ord("e"))
        steps = graph.loop.steps
        # latched while commands keep coming, and they are refused
        assert wait_for(lambda: graph.loop.steps > steps + 100 and counters()["refused"] > 50)
        assert motors.controller.estopped and view.estopped
        assert counters()["estops"] == 1
        view.handle_key(ord("c"))
        assert not motors.controller.estopped and not view.estopped
        # a send already past the e-stop check when it cleared may still count as refused: once one command
        # has been sent since, every later send sees the cleared latch (the loop sends from one thread)
        sent = counters()["commands_sent"]
        assert wait_for(lambda: counters()["commands_sent"] > sent)
        sent, refused = counters()["commands_sent"], counters()["refused"]
        assert wait_for(lambda: counters()["commands_sent"] > sent + 50)
        assert counters()["refused"] == refused
    finally:
        graph.loop.stop()
        thread.join(10)


def test_recording_reads_back_in_dv_processing(open_graph, recording, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    graph = open_graph("loop.mode='fast'")
    seen: list[np.ndarray] = []
    view = for_graph(graph)
    show = graph.loop.on_packet

    def spy(packet):
        seen.append(packet.events)
        show(packet)

    graph.loop.on_packet = spy
    view.handle_key(ord("r"))
    path = view.recording
    assert path.parent == Path(".") and path.name.startswith("spikeloop-") and path.suffix == ".aedat4"
    assert len(recording_name(0.0)) == len("spikeloop-YYYYmmdd-HHMMSS.aedat4")
    view.run(window=False)  # the end of the run closes the recording
    written = dv_events(tmp_path / path)
    shown = np.concatenate(seen).astype(DVS_EVENT_DTYPE)
    assert len(written) == view.recorded_events == 111_954
    np.testing.assert_array_equal(written, shown)
    np.testing.assert_array_equal(written, dv_events(recording))


def test_an_output_neuron_that_votes_for_no_class_is_labelled_so():
    """A command_map with a vote table (an ensemble, or an assignment readout whose neuron 2 was assigned no
    class): neuron 2's row is all zero; it was labelled with class 0 ("'go' cmd")."""
    from types import SimpleNamespace

    from pipeline.app.liveview import neuron_labels
    from pipeline.decoders.command_map import CommandMap

    decoder = CommandMap(4, {"0": [1.0], "1": [0.0]}, boundary="output", names=["go", "stop"],
                         votes=[[0, 1], [0.5, 0], [0, 0], [0.5, 0]])
    network = SimpleNamespace(output_name="out", n_outputs=4)
    assert neuron_labels(network, decoder) == ["out 0 'stop' cmd", "out 1 'go' cmd", "out 2 (no vote)",
                                               "out 3 'go' cmd"]


def test_a_raster_of_more_rows_than_labels_fit_draws_every_row_and_readable_labels():
    """100 output neurons (the shipped ten-network FSDD ensemble) in a 190 px panel: every neuron's spikes
    are drawn (a 3 px gap inside 1.9 px rows left them empty), and labels are at least a text line apart
    (drawn on every row they were an unreadable block)."""
    import cv2

    from pipeline.app.dashboard import LABEL_PX, _raster

    view = np.zeros((190, 360, 3), np.uint8)
    times = np.arange(1, 101, dtype=np.int64) * 1000
    fired = np.ones((100, 100), bool)
    _raster(view, times, fired, [f"n{i}" for i in range(100)], 0, 1000, label_w=80)
    spike = np.all(view[:, 80:] == (80, 200, 255), axis=2)
    assert spike[:, -1].sum() >= 180   # the newest step's column: every row drawn
    text_rows = np.flatnonzero(np.any(np.any(view[:, :80] != BG, axis=2), axis=1))
    starts = text_rows[np.diff(np.concatenate([[-10], text_rows])) > 1]   # top pixel row of each label
    assert 10 <= len(starts) <= 190 // LABEL_PX + 1 and np.all(np.diff(starts) >= LABEL_PX - 2)
    assert cv2.getTextSize("n0", cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][1] < LABEL_PX
