"""The real-time loop: determinism on a real recording, merge counting when behind, drops, fatal sinks,
latency statistics. Timing here is functional (generous slack on a shared machine), never a benchmark."""
from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.core.events import dvs_events
from pipeline.core.packet import Packet, StreamInfo
from pipeline.loop import LatencyHistogram, Loop, LoopConfig, SinkFatalError
from pipeline.sinks import CommandLogSink, read_command_log
from pipeline.snn import build
from pipeline.snn.builders import dvs_steering
from pipeline.stages import SpatialPooling, StepBinner
from recordings.replay import ReplaySource

RECORDING = "events/dvxplorer_tonic.aedat4"  # DVXplorer 320x240, 111,954 events, 0.59 s


class ListSource:
    """Test double: pre-made packets, optionally released every ``period_s`` of wall time (a live sensor)."""

    def __init__(self, packets, width=16, height=12, period_s=0.0):
        self._packets = packets
        self.info = StreamInfo("dvs", width, height)
        self.period_s = period_s
        self.closed = False

    def packets(self):
        for packet in self._packets:
            if self.period_s:
                time.sleep(self.period_s)
            yield Packet(packet.events, packet.t_end_us)

    def close(self):
        self.closed = True


class SlowRuntime:
    """Test double around a real runtime: every step takes at least ``delay_s`` (a network too slow)."""

    def __init__(self, runtime, delay_s):
        self.runtime = runtime
        self.delay_s = delay_s
        self.steps = []

    def warmup(self):
        self.runtime.warmup()

    def step(self, indices):
        self.steps.append(np.array(indices))
        end = time.perf_counter() + self.delay_s
        while time.perf_counter() < end:
            pass
        return self.runtime.step(indices)


class RecordingSink:
    name = "record"

    def __init__(self, fail_after=None, fatal=False):
        self.commands = []
        self.fail_after = fail_after
        self.fatal = fatal

    def write(self, command, t_us):
        if self.fail_after is not None and len(self.commands) >= self.fail_after:
            if self.fatal:
                raise SinkFatalError("port gone")
            raise OSError("write failed")
        self.commands.append((t_us, command.copy()))
        return time.perf_counter_ns()

    def close(self):
        pass


def steering_graph(width, height):
    network = dvs_steering(16, 12, 2)
    runtime = build(network, backend="loihi")
    chain = SpatialPooling(target=(16, 12)).build(width, height)
    binner = StepBinner(1000, 16, 12, channels_by_polarity=True)
    return chain, binner, runtime


def rate_decode(spikes, t_us):
    return spikes.astype(np.float64)


def synthetic_packets(n_packets, per_packet=40, seed=1, dt_us=1000):
    rng = np.random.default_rng(seed)
    packets = []
    for k in range(n_packets):
        t = np.sort(rng.integers(k * dt_us, (k + 1) * dt_us, per_packet))
        events = dvs_events(t, rng.integers(0, 16, per_packet), rng.integers(0, 12, per_packet),
                            rng.integers(0, 2, per_packet))
        packets.append(Packet(events, (k + 1) * dt_us))
    return packets


def run_replay(data_dir, tmp_path, name, mode="fast", speed=1.0, max_lag_ms=10.0):
    path = data_dir / RECORDING
    source = ReplaySource(path, fast=True, chunk_us=1000)
    chain, binner, runtime = steering_graph(source.info.width, source.info.height)
    log = tmp_path / name
    sink = CommandLogSink(log)
    loop = Loop(source, chain, binner, runtime, rate_decode, [sink], LoopConfig(mode=mode, speed=speed, max_lag_ms=max_lag_ms))
    loop.warmup()
    report = loop.run()
    sink.close()
    return report, log


def test_replaying_a_recording_twice_gives_identical_command_streams(data_dir, tmp_path):
    first, log_a = run_replay(data_dir, tmp_path, "a.csv")
    second, log_b = run_replay(data_dir, tmp_path, "b.csv")
    assert log_a.read_bytes() == log_b.read_bytes()
    t, commands = read_command_log(log_a)
    # 0.59 s of recording at 1 ms steps; the last partial step is flushed at the end.
    assert first.steps == second.steps == len(t) and 585 <= len(t) <= 592
    assert np.all(np.diff(t) == 1000)
    assert commands.shape[1] == 2 and commands.sum() > 0  # the network does spike on real events
    assert first.events_in == second.events_in == 111_954
    assert first.merged_steps == 0 and first.sink_errors == 0


def test_paced_replay_without_falling_behind_matches_fast_replay(data_dir, tmp_path):
    fast, log_fast = run_replay(data_dir, tmp_path, "fast.csv")
    # max_lag_ms = 2 s: a loaded machine may run late, but never so late that bins merge.
    paced, log_paced = run_replay(data_dir, tmp_path, "paced.csv", mode="paced", speed=2.0, max_lag_ms=2000)
    assert paced.ticks > 0 and paced.wall_s > 0.25  # the clock really paced the 0.59 s recording at x2
    assert paced.merged_steps == 0
    assert log_fast.read_bytes() == log_paced.read_bytes()


def test_live_loop_behind_merges_bins_and_counts_them():
    packets = synthetic_packets(120)
    binner, runtime = StepBinner(1000, 16, 12), build(dvs_steering(16, 12, 2))
    slow = SlowRuntime(runtime, delay_s=0.004)  # 4 ms per step against 1 ms of sensor time per step
    sink = RecordingSink()
    config = LoopConfig(mode="live", max_lag_ms=5, report_period_s=0)
    loop = Loop(ListSource(packets, period_s=0.001), None, binner, slow, rate_decode, [sink], config)
    loop.warmup()
    report = loop.run()
    assert report.merged_steps > 0
    # Every complete bin was either stepped or merged into a step, never lost silently.
    assert report.steps + report.merged_steps == binner.next_step
    assert report.steps == len(slow.steps) == len(sink.commands)
    # Each network step got exactly the union of the inputs of the consecutive bins it stands for.
    reference = StepBinner(1000, 16, 12)
    bins = []
    for batch in [reference.push(p.events, p.t_end_us) for p in packets] + [reference.flush()]:
        bins += [set(batch.step(i).tolist()) for i in range(len(batch))]
    used = 0
    for step in slow.steps:
        union = set()
        while union != set(step.tolist()):
            union |= bins[used]
            used += 1
            assert union <= set(step.tolist())
    assert used == len(bins)


def test_fast_mode_never_merges_even_when_slow():
    packets = synthetic_packets(30)
    slow = SlowRuntime(build(dvs_steering(16, 12, 2)), delay_s=0.002)
    loop = Loop(ListSource(packets), None, StepBinner(1000, 16, 12), slow, rate_decode, [RecordingSink()],
                LoopConfig(mode="fast", max_lag_ms=1, report_period_s=0))
    loop.warmup()
    report = loop.run()
    assert report.merged_steps == 0 and report.steps == 30


def test_full_queue_in_live_mode_drops_packets_and_counts_them():
    packets = synthetic_packets(200, per_packet=5)
    slow = SlowRuntime(build(dvs_steering(16, 12, 2)), delay_s=0.01)
    loop = Loop(ListSource(packets), None, StepBinner(1000, 16, 12), slow, rate_decode, [RecordingSink()],
                LoopConfig(mode="live", queue_packets=2, max_lag_ms=1000, report_period_s=0))
    loop.warmup()
    report = loop.run()
    assert report.dropped_packets > 0 and report.dropped_events == 5 * report.dropped_packets


def test_sink_errors_are_counted_and_a_fatal_sink_stops_the_loop():
    packets = synthetic_packets(50)
    runtime = build(dvs_steering(16, 12, 2))
    flaky = RecordingSink(fail_after=10)
    loop = Loop(ListSource(packets), None, StepBinner(1000, 16, 12), runtime, rate_decode, [flaky],
                LoopConfig(report_period_s=0))
    loop.warmup()
    report = loop.run()
    assert report.sink_errors == 40 and report.steps == 50 and report.fatal == ""

    fatal = RecordingSink(fail_after=10, fatal=True)
    source = ListSource(packets)
    loop = Loop(source, None, StepBinner(1000, 16, 12), build(dvs_steering(16, 12, 2)), rate_decode, [fatal],
                LoopConfig(report_period_s=0))
    report = loop.run()
    assert report.fatal == "record: port gone" and report.steps == 11 and source.closed


def test_duration_limits_sensor_time_and_periodic_reports_arrive():
    packets = synthetic_packets(400)
    reports = []
    loop = Loop(ListSource(packets, period_s=0.0005), None, StepBinner(1000, 16, 12),
                build(dvs_steering(16, 12, 2)), rate_decode, [RecordingSink()],
                LoopConfig(mode="live", duration_s=0.15, report_period_s=0.02), on_report=reports.append)
    loop.warmup()
    final = loop.run()
    assert final.final and reports[-1] is final
    assert 150 <= final.steps + final.merged_steps <= 152 and abs(final.stream_s - 0.15) < 0.0015
    assert any(not r.final for r in reports)
    assert all(r.latency_p50_ms <= r.latency_p99_ms <= r.latency_max_ms for r in reports if r.commands)


def test_source_failure_is_raised_after_cleanup():
    class Broken(ListSource):
        def packets(self):
            yield from synthetic_packets(3)
            raise OSError("camera unplugged")

    source = Broken([])
    loop = Loop(source, None, StepBinner(1000, 16, 12), build(dvs_steering(16, 12, 2)), rate_decode,
                [RecordingSink()], LoopConfig(report_period_s=0))
    with pytest.raises(OSError, match="camera unplugged"):
        loop.run()
    assert source.closed


def test_latency_histogram_percentiles_match_numpy():
    rng = np.random.default_rng(3)
    latencies_ns = rng.integers(50_000, 5_000_000, 5000)
    hist = LatencyHistogram()
    for value in latencies_ns:
        hist.add(int(value))
    for q in (50, 99):
        assert abs(hist.percentile_ms(q) - np.percentile(latencies_ns, q, method="inverted_cdf") / 1e6) <= 0.001
    assert hist.max_ms == latencies_ns.max() / 1e6
    assert np.isnan(LatencyHistogram().percentile_ms(50))


def test_config_rejects_impossible_values():
    with pytest.raises(ValueError, match="mode"):
        LoopConfig(mode="realtime")
    with pytest.raises(ValueError, match="max_lag_ms"):
        LoopConfig(max_lag_ms=0)


def test_command_log_round_trip_csv_and_jsonl(tmp_path):
    for name in ("c.csv", "c.jsonl"):
        sink = CommandLogSink(tmp_path / name, "jsonl" if name.endswith("jsonl") else "csv")
        sink.write(np.array([0.1, -2.5]), 1000)
        sink.write(np.array([1 / 3, 0.0]), 2000)
        sink.close()
        t, c = read_command_log(tmp_path / name)
        assert t.tolist() == [1000, 2000] and c.tolist() == [[0.1, -2.5], [1 / 3, 0.0]]


def test_paced_loop_behind_its_clock_counts_missed_ticks_and_merges():
    packets = synthetic_packets(150)
    slow = SlowRuntime(build(dvs_steering(16, 12, 2)), delay_s=0.003)
    binner = StepBinner(1000, 16, 12)
    loop = Loop(ListSource(packets), None, binner, slow, rate_decode, [RecordingSink()],
                LoopConfig(mode="paced", max_lag_ms=4, report_period_s=0))
    loop.warmup()
    report = loop.run()
    assert report.missed_ticks > 0 and report.ticks >= report.missed_ticks
    assert report.merged_steps > 0 and report.steps + report.merged_steps == binner.next_step
    # Paced latency counts from when a packet was due on the clock, so running behind shows up in it.
    assert report.latency_p50_ms > 1.0


def test_paced_reader_stays_bounded_by_the_queue():
    packets = synthetic_packets(600)
    yielded = [0]
    ahead = []

    class Counting(ListSource):
        def packets(self):
            for packet in super().packets():
                yielded[0] += 1
                yield packet

    def counting_stage(events):
        ahead.append(yielded[0] - len(ahead))  # packets read but not yet taken by the loop
        return events

    loop = Loop(Counting(packets), counting_stage, StepBinner(1000, 16, 12), build(dvs_steering(16, 12, 2)),
                rate_decode, [RecordingSink()],
                LoopConfig(mode="paced", speed=4.0, queue_packets=8, max_lag_ms=1000, report_period_s=0))
    loop.warmup()
    report = loop.run()
    assert report.steps == 600
    # The queue (8), one packet held for its due time, one in the reader's hands, plus the packets that
    # fell due together after a late tick: bounded, never the whole stream (600).
    assert max(ahead) <= 8 + 16


def test_live_loop_keeps_stepping_on_the_wall_clock_while_the_sensor_is_silent():
    first = synthetic_packets(30)
    later = [Packet(p.events.copy(), p.t_end_us + 400_000) for p in synthetic_packets(30)]
    for packet in later:
        packet.events["timestamp"] += 400_000

    class Silent(ListSource):
        def packets(self):
            for packet in self._packets[:30]:
                yield Packet(packet.events, packet.t_end_us)
            time.sleep(0.3)  # the camera sees nothing for 300 ms (and sends nothing)
            for packet in self._packets[30:]:
                yield Packet(packet.events, packet.t_end_us)

    sink = RecordingSink()
    binner = StepBinner(1000, 16, 12)
    loop = Loop(Silent(first + later), None, binner, build(dvs_steering(16, 12, 2)), rate_decode, [sink],
                LoopConfig(mode="live", idle_ms=50, max_lag_ms=1000, report_period_s=0))
    loop.warmup()
    report = loop.run()
    # About 250 ms of the silence was stepped on the wall clock (it starts after 50 ms without packets).
    assert 150 <= report.idle_steps <= 350
    assert report.late_events == 0  # the sensor's own clock was ahead of the estimate
    t = np.array([c[0] for c in sink.commands])
    assert np.all(np.diff(t) == 1000) and len(t) == report.steps == binner.next_step
    # Without idle steps the network waits for the next packet.
    quiet = Loop(Silent(first + later), None, StepBinner(1000, 16, 12), build(dvs_steering(16, 12, 2)),
                 rate_decode, [RecordingSink()], LoopConfig(mode="live", idle_ms=0, max_lag_ms=1000, report_period_s=0))
    assert quiet.run().idle_steps == 0


class TimedSink(RecordingSink):
    """Records (t_us, written_ns) of every command."""

    def write(self, command, t_us):
        written = super().write(command, t_us)
        self.written = getattr(self, "written", []) + [(t_us, written)]
        return written


def assert_percentiles(report_ms: tuple[float, float, float], ages_ns: np.ndarray) -> None:
    """The loop's (p50, p99, max) in ms against numpy's on the same values (1 µs histogram bins up to 100 ms,
    where a loaded machine's longer latencies share the last bin)."""
    p50, p99, top = report_ms
    for got, q in ((p50, 50), (p99, 99)):
        expected = min(np.percentile(ages_ns, q, method="inverted_cdf") / 1e6, 100.0005)
        assert abs(got - expected) <= 0.001
    assert top == pytest.approx(ages_ns.max() / 1e6, abs=1e-9)


def test_live_sensor_latency_counts_from_the_step_end_on_the_estimated_sensor_clock():
    """A live sensor whose packets (1 ms each) leave on a 1 ms timer: each leaves at least 1 ms after the
    one before, so the first packet is the one that arrived earliest relative to its end time, and the
    loop's estimate of when sensor time t was due is first arrival + (t - first end). Computed here from
    the packets' own arrival stamps and the sink's write times."""
    arrivals = []

    class Stamped(ListSource):
        def packets(self):
            for packet in super().packets():
                arrivals.append((packet.arrival_ns, packet.t_end_us))
                yield packet

    sink = TimedSink()
    loop = Loop(Stamped(synthetic_packets(200), period_s=0.001), None, StepBinner(1000, 16, 12, t0_us=0),
                build(dvs_steering(16, 12, 2)), rate_decode, [sink],
                LoopConfig(mode="live", max_lag_ms=1000, idle_ms=0, report_period_s=0))
    loop.warmup()
    report = loop.run()
    first_arrival, first_end = arrivals[0]
    assert loop.clock == (first_arrival, first_end)
    t_us, written = np.array(sink.written).T
    ages = written - (first_arrival + (t_us - first_end) * 1000)
    assert report.commands == len(ages) == 200 and ages.min() >= 0
    assert_percentiles((report.sensor_latency_p50_ms, report.sensor_latency_p99_ms, report.sensor_latency_max_ms), ages)


def test_paced_sensor_latency_adds_the_wait_for_a_long_packet():
    """Packets of 4 ms into 1 ms steps, paced: a step's command can only leave once the packet holding its
    end arrived (when the packet's end was due), so its age from the step's end exceeds its latency from
    arrival by the rest of the packet, 3, 2, 1 or 0 ms (checked against the loop's own clock)."""
    packets = [Packet(p.events, p.t_end_us) for p in synthetic_packets(60, dt_us=4000)]
    sink = TimedSink()
    loop = Loop(ListSource(packets), None, StepBinner(1000, 16, 12, t0_us=0), build(dvs_steering(16, 12, 2)),
                rate_decode, [sink], LoopConfig(mode="paced", tick_us=4000, max_lag_ms=1000, report_period_s=0))
    loop.warmup()
    report = loop.run()
    t_us, written = np.array(sink.written).T
    origin_ns, origin_us = loop.clock
    assert origin_us == 4000 and report.steps == 240 and report.ticks >= 60
    ages = written - (origin_ns + (t_us - origin_us) * 1000)
    packet_end = -(-t_us // 4000) * 4000
    arrival_ages = written - (origin_ns + (packet_end - origin_us) * 1000)
    assert arrival_ages.min() >= 0 and np.any(packet_end - t_us == 3000)
    assert_percentiles((report.sensor_latency_p50_ms, report.sensor_latency_p99_ms, report.sensor_latency_max_ms), ages)
    assert_percentiles((report.latency_p50_ms, report.latency_p99_ms, report.latency_max_ms), arrival_ages)


def test_fast_mode_has_no_sensor_latency_and_step_time_is_measured():
    slow = SlowRuntime(build(dvs_steering(16, 12, 2)), delay_s=0.002)
    loop = Loop(ListSource(synthetic_packets(20)), None, StepBinner(1000, 16, 12), slow, rate_decode,
                [RecordingSink()], LoopConfig(mode="fast", report_period_s=0))
    loop.warmup()
    report = loop.run()
    assert np.isnan(report.sensor_latency_p50_ms) and loop.clock is None
    assert 2000 <= report.step_time_p50_us <= report.step_time_p99_us <= report.step_time_max_us
    assert report.latency_p50_ms >= 2.0  # the command leaves after the step


def test_a_bin_level_decoder_steps_every_bin_even_when_behind():
    """AER spikes -> CountBinner -> a stepper on counts: overdue bins are never merged (a decoder's model
    is per bin), every bin runs once, in order, with its counts."""
    from pipeline.core.events import spikes
    from pipeline.stages.binning import CountBinner

    rng = np.random.default_rng(4)
    t = np.sort(rng.integers(0, 200_000, 3000))
    channels = rng.integers(0, 5, 3000)
    events = spikes(t, channels)
    packets = [Packet(events[(t >= k * 10_000) & (t < (k + 1) * 10_000)], (k + 1) * 10_000) for k in range(20)]

    class SlowSum:
        def __init__(self):
            self.rows = []

        def warmup(self):
            pass

        def step(self, counts):
            self.rows.append(counts.copy())
            time.sleep(0.02)  # 20 ms per 10 ms bin: always behind
            return counts[:2]

    stepper = SlowSum()
    source = ListSource(packets, period_s=0.001)
    source.info = StreamInfo("spikes", channels=5)
    loop = Loop(source, None, CountBinner(10_000, 5, t0_us=0), stepper, lambda out, t_us: np.array(out),
                [RecordingSink()], LoopConfig(mode="live", dt_us=10_000, max_lag_ms=1, report_period_s=0))
    loop.warmup()
    report = loop.run()
    assert report.merged_steps == 0 and report.steps == 20
    expected = np.zeros((20, 5))
    np.add.at(expected, (t // 10_000, channels), 1)
    np.testing.assert_array_equal(np.array(stepper.rows), expected)


def test_the_loop_rejects_a_binner_on_another_grid():
    with pytest.raises(ValueError, match="the binner steps every 500 µs but config.dt_us is 1000 µs"):
        Loop(ListSource([]), None, StepBinner(500, 16, 12), build(dvs_steering(16, 12, 2)), rate_decode, [],
             LoopConfig())
