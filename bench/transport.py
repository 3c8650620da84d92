"""Events between two processes: Zenoh (spikeloop's wire format) vs dv-processing's AEDAT 4 TCP stream
(NetworkWriter / NetworkReader, as devices.dvs uses them) vs an in-process hand-off (queue.Queue between
two threads), in the same run, on loopback.

* throughput: a publisher sends 16,384-event packets as fast as the transport takes them for
  ``--seconds``; events/s counted where the consumer receives them.
* latency at 1 Mev/s: 1,000-event packets every 1 ms, each event stamped with the sender's wall clock
  (µs); one-way latency = receiver's wall clock at arrival - stamp (one host, one clock), p50 / p99.
* CPU per Mev: user + system CPU seconds of every process involved (sender, receiver, dv's reader
  child), per million events received.

Each measurement runs ``--repeats`` times; the table shows medians. Goals (issue 13): >= 20 Mev/s between
processes; one-way p50 <= 200 µs and p99 <= 2 ms at 1 Mev/s.

    python -m bench.transport [--seconds 2] [--repeats 3] [--json]   (from the repository root)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import resource
import threading
import time
import uuid

import numpy as np

from devices.dvs import NetworkEventServer, NetworkEventSource
from devices.transport.zenoh_link import PacketPublisher, Subscription
from pipeline.core.clock import wait_until
from pipeline.core.events import DVS_EVENT_DTYPE
from pipeline.core.packet import Packet, StreamInfo

BULK_EVENTS = 16_384
RATE_EVENTS = 1_000  # per 1 ms packet: 1 Mev/s
PERIOD_NS = 1_000_000
WIDTH = HEIGHT = 128
DV_PORT = 7791


def _packet(n: int, stamp_us: int) -> np.ndarray:
    events = np.zeros(n, dtype=DVS_EVENT_DTYPE)
    events["timestamp"] = stamp_us
    events["x"] = np.arange(n) % WIDTH
    events["y"] = (np.arange(n) // WIDTH) % HEIGHT
    events["polarity"] = 1
    return events


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _send(kind: str, mode: str, target, seconds: float, ready=None) -> None:
    """Child process: publish bulk packets or paced 1 ms packets for ``seconds``, then end; ``ready`` is
    set once the dv server listens."""
    info = StreamInfo("dvs", WIDTH, HEIGHT)
    if kind == "zenoh":
        sink = PacketPublisher(target, info, block=True)
        sink.wait_for_subscribers(30)
        send = sink.send
    else:
        sink = NetworkEventServer("127.0.0.1", target, WIDTH, HEIGHT)
        ready.set()
        sink.wait_for_client(60)
        time.sleep(0.2)

        def send(packet: Packet) -> None:
            sink.send(packet.events)
    bulk = _packet(BULK_EVENTS, 0)
    start = time.perf_counter_ns()
    k = 0
    while time.perf_counter_ns() - start < seconds * 1e9:
        if mode == "bulk":
            send(Packet(bulk, 0))
        else:
            wait_until(start + k * PERIOD_NS)
            stamp = time.time_ns() // 1000
            send(Packet(_packet(RATE_EVENTS, stamp), stamp))
        k += 1
    if kind == "zenoh":
        sink.end()
        time.sleep(0.2)
        sink.close()
    else:
        sink.drain()
        time.sleep(0.5)


def _receive(packets, n_expected_s: float):
    """(events, first arrival, last arrival, latencies µs) from an iterator of (events, arrival wall ns)."""
    events = 0
    first = last = None
    latencies = []
    for array, wall_ns in packets:
        if first is None:
            first = time.perf_counter()
        last = time.perf_counter()
        events += len(array)
        if len(array):
            latencies.append(wall_ns / 1e3 - array["timestamp"][-1])
    return events, (last - first) if first is not None else 0.0, np.asarray(latencies)


def run_zenoh(mode: str, seconds: float) -> dict:
    key = f"bench/{uuid.uuid4().hex[:8]}/dvs"
    cpu0 = _cpu_s()
    subscription = Subscription(key, queue=1 << 16)
    child = mp.get_context("spawn").Process(target=_send, args=("zenoh", mode, key, seconds))
    child.start()

    def packets():
        wait_s = 60.0  # the first packet: the spawned sender imports and connects first (slow under load)
        while True:
            item = subscription.take(wait_s)
            if item is None or item[1].payload is None:
                return
            wait_s = 5.0
            yield item[1].payload, item[3]

    events, span, latencies = _receive(packets(), seconds)
    child.join()
    stats = subscription.stats()
    subscription.close()
    return _result(events, span, latencies, _cpu_s() - cpu0, gaps=stats["gaps"] + stats["dropped_oldest"])


def run_dv(mode: str, seconds: float) -> dict:
    global DV_PORT
    DV_PORT += 1  # a fresh port per run: a closed writer's port may still be held
    cpu0 = _cpu_s()
    context = mp.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_send, args=("dv", mode, DV_PORT, seconds, ready))
    child.start()
    if not ready.wait(60):
        raise RuntimeError("the dv server process did not start within 60 s")
    source = NetworkEventSource("127.0.0.1", DV_PORT, connect_timeout_s=60.0)

    def packets():
        for packet in source.packets():
            yield packet.events, time.time_ns()

    events, span, latencies = _receive(packets(), seconds)
    source.close()
    child.join(timeout=3)  # a NetworkWriter destroyed after its client left can hang (see devices.dvs)
    if child.is_alive():
        child.kill()
        child.join()
    return _result(events, span, latencies, _cpu_s() - cpu0)


def run_inprocess(mode: str, seconds: float) -> dict:
    """A producer thread hands packets to a consumer thread through a bounded queue.Queue."""
    handoff: queue.Queue = queue.Queue(maxsize=256)
    cpu0 = _cpu_s()

    def produce():
        bulk = _packet(BULK_EVENTS, 0)
        start = time.perf_counter_ns()
        k = 0
        while time.perf_counter_ns() - start < seconds * 1e9:
            if mode == "bulk":
                handoff.put(bulk.copy())
            else:
                wait_until(start + k * PERIOD_NS)
                handoff.put(_packet(RATE_EVENTS, time.time_ns() // 1000))
            k += 1
        handoff.put(None)

    producer = threading.Thread(target=produce)
    producer.start()

    def packets():
        while (array := handoff.get()) is not None:
            yield array, time.time_ns()

    events, span, latencies = _receive(packets(), seconds)
    producer.join()
    return _result(events, span, latencies, _cpu_s() - cpu0)


def _result(events: int, span: float, latencies: np.ndarray, cpu_s: float, gaps: int = 0) -> dict:
    result = {"events": events, "mev_s": events / span / 1e6 if span > 0 else 0.0,
              "cpu_s_per_mev": cpu_s / (events / 1e6) if events else 0.0, "lost": gaps}
    if len(latencies) > 10:
        kept = latencies[len(latencies) // 10:]  # the first 10 % include connection set-up
        result["p50_us"], result["p99_us"] = (float(v) for v in np.percentile(kept, [50, 99]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each measurement (s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (the median is shown)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    transports = {"dv TCP (2 processes)": run_dv, "zenoh (2 processes)": run_zenoh,
                  "in-process queue": run_inprocess}
    table = {}
    for name, run in transports.items():
        bulk = [run("bulk", args.seconds) for _ in range(args.repeats)]
        paced = [run("paced", args.seconds) for _ in range(args.repeats)]
        table[name] = {
            "throughput_mev_s": float(np.median([r["mev_s"] for r in bulk])),
            "cpu_s_per_mev_bulk": float(np.median([r["cpu_s_per_mev"] for r in bulk])),
            "latency_p50_us_at_1mev": float(np.median([r.get("p50_us", np.nan) for r in paced])),
            "latency_p99_us_at_1mev": float(np.median([r.get("p99_us", np.nan) for r in paced])),
            "cpu_s_per_mev_at_1mev": float(np.median([r["cpu_s_per_mev"] for r in paced])),
            "rate_at_1mev_mev_s": float(np.median([r["mev_s"] for r in paced])),
        }
    if args.json:
        print(json.dumps(table))
        return
    print(f"{'transport':<22} {'Mev/s':>8} {'CPU s/Mev':>10} | at 1 Mev/s: {'p50 µs':>8} {'p99 µs':>8} "
          f"{'CPU s/Mev':>10} {'got Mev/s':>9}")
    for name, row in table.items():
        print(f"{name:<22} {row['throughput_mev_s']:8.2f} {row['cpu_s_per_mev_bulk']:10.3f} |            "
              f"{row['latency_p50_us_at_1mev']:8.0f} {row['latency_p99_us_at_1mev']:8.0f} "
              f"{row['cpu_s_per_mev_at_1mev']:10.3f} {row['rate_at_1mev_mev_s']:9.2f}")
    print(f"goals: >= 20 Mev/s between processes; p50 <= 200 µs, p99 <= 2000 µs at 1 Mev/s "
          f"(medians of {args.repeats} runs of {args.seconds:g} s)")


if __name__ == "__main__":
    main()
