"""Hostile inputs, tallied: ``python bench/hostile_inputs.py [--seed N] [--scale K]``.

Tries seeded corpora of bad inputs against the readers a user or a peer can reach and prints one row per
category: inputs tried, handled cleanly (a valid result, or the documented error type with a one-line
message naming the input), tracebacks (any other exception), hangs (over the per-input deadline) and
events lost (TCP: events of the packets sent whole before the first damaged byte that did not arrive).

* launch tables: the shipped launch files with 1-3 values replaced by values of every TOML type, keys
  removed, added or renamed -> pipeline.app.launch.check_launch (LaunchError);
* launch bytes: the files' bytes flipped, truncated, spliced -> load_launch (LaunchError);
* network .npz: a saved network's arrays replaced by arrays of any dtype/shape, or its bytes mutated,
  plus zip bombs -> Network.load (ValueError);
* BCI .mat: chewie's test-block variables (Yte, Xte, Tte) replaced (NaN, huge counts, wrong shapes, rates)
  -> DadSource, the replay (RecordingError / ValueError);
* TCP: a hostile peer on 127.0.0.1 sends a valid AEDAT 4 stream with flipped bytes, cuts, garbage, stalls
  -> NetworkEventSource (StreamError; a clean end only for an undamaged stream).

Compared in the same run: the unmutated inputs, which must all load (a check that the corpus tests the
readers, not a broken setup).
"""
from __future__ import annotations

import argparse
import io
import signal
import sys
import tempfile
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEADLINE_S = 20


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


class Tally:
    def __init__(self, name: str) -> None:
        self.name, self.tried, self.clean, self.tracebacks, self.hangs, self.lost = name, 0, 0, 0, 0, 0
        self.examples: list[str] = []

    def run(self, call, expected: tuple, must_name: str | None = None) -> None:
        """Call ``call()``: a return or an ``expected`` exception with a one-line message (naming
        ``must_name``) is clean; anything else is a traceback; over DEADLINE_S is a hang."""
        self.tried += 1
        signal.alarm(DEADLINE_S)
        try:
            call()
            self.clean += 1
        except Hang:
            self.hangs += 1
        except expected as exc:
            text = str(exc)
            if "\n" in text or (must_name and must_name not in text):
                self.tracebacks += 1
                self.examples.append(f"unnamed: {text[:200]}")
            else:
                self.clean += 1
        except Exception as exc:  # noqa: BLE001 - counted, that is the point
            self.tracebacks += 1
            self.examples.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            signal.alarm(0)


def launch_tables(rng, n: int) -> Tally:
    from pipeline.app.launch import LaunchError, check_launch

    tally = Tally("launch tables")
    files = ["replay.toml", "robot_controller.toml", "demo.toml", "live_demo.toml"]
    pool = [None, True, False, 0, -1, 2**63 - 1, -2**63, 1e308, float("nan"), float("inf"), "", "x", "emulated:dynamixel",
            [], [1, 2], ["a"], [[1]], {}, {"type": "x"}, {"a": {"b": 1}}, "[" * 10, 0.5, 255, 65536]
    for i in range(n):
        name = files[i % len(files)]
        raw = tomllib.loads((ROOT / "launch" / name).read_text())
        for _ in range(int(rng.integers(1, 4))):
            paths = _paths(raw)
            if not paths:
                break
            target = paths[int(rng.integers(len(paths)))]
            parent = raw
            for part in target[:-1]:
                parent = parent[part]
            action = int(rng.integers(4))
            value = pool[int(rng.integers(len(pool)))]
            if action == 0 and value is not None:
                parent[target[-1]] = value
            elif action == 1:
                parent.pop(target[-1], None)
            elif action == 2 and value is not None:
                parent[f"k{int(rng.integers(100))}"] = value
            else:
                parent[f"r{int(rng.integers(100))}"] = parent.pop(target[-1])
        path = ROOT / "launch" / name
        tally.run(lambda: check_launch(raw, path), (LaunchError,), str(path))
    return tally


def _paths(raw: dict, prefix=()) -> list[tuple]:
    out = []
    for key, value in raw.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out.extend(_paths(value, prefix + (key,)))
    return out


def _mutate(rng, raw: bytes, inserts: list[bytes]) -> bytes:
    mutant = bytearray(raw)
    kind = int(rng.integers(4))
    if kind == 0:
        for pos in rng.integers(0, len(mutant), size=int(rng.integers(1, 8))):
            mutant[pos] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        mutant = mutant[: int(rng.integers(0, len(mutant)))]
    elif kind == 2:
        a, b = sorted(int(x) for x in rng.integers(0, len(mutant), size=2))
        mutant[a:b] = rng.bytes(b - a)
    else:
        pos = int(rng.integers(0, len(mutant) + 1))
        mutant[pos:pos] = inserts[int(rng.integers(len(inserts)))]
    return bytes(mutant)


def launch_bytes(rng, n: int, folder: Path) -> Tally:
    from pipeline.app.launch import LaunchError, load_launch

    tally = Tally("launch bytes")
    inserts = [b"\xff\xfe", b"[" * 3000, b"= inf", b'= """', b"\x00", b"[[sinks.x]]\n", b"type = [1]\n"]
    for i, name in enumerate(["replay.toml", "robot_controller.toml", "demo.toml", "live_demo.toml"] * (n // 4)):
        path = folder / f"{i}_{name}"
        path.write_bytes(_mutate(rng, (ROOT / "launch" / name).read_bytes(), inserts))
        tally.run(lambda: load_launch(path), (LaunchError,), str(path))
    for special in (Path("/dev/zero"), folder, ROOT / "recordings" / "samples" / "moving_bars.aedat4"):
        tally.run(lambda: load_launch(special), (LaunchError,), str(special))
    return tally


def npz_files(rng, n: int, folder: Path) -> Tally:
    import zipfile

    from pipeline.snn import Dense, Network, Population
    from pipeline.snn.learning.rule import stdp_loihi
    from pipeline.snn.network import LoihiLIF

    tally = Tally("network .npz")
    good = folder / "good.npz"
    Network(n_inputs=6, populations=[Population("out", 3, LoihiLIF(du=100, dv=100, vth=50))],
            projections=[Dense(name="d", source="input", target="out", weights=rng.integers(-20, 20, size=(3, 6)),
                               learning=stdp_loihi(0.25, 1, -1, 10, 8, t_epoch=2, rng_seed=1))]).save(good)
    Network.load(good)  # the unmutated file loads
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    pool = [np.array(1), np.array([[1, 2]]), np.array("x"), np.array(""), np.array("os:system"), np.zeros((0, 3)),
            np.array([1.5, np.nan]), np.zeros((2, 2, 2), dtype="<c16"), np.array(2**62), np.array(-1), np.array(True)]
    raw = good.read_bytes()
    for i in range(n):
        path = folder / f"n{i}.npz"
        if i % 2:
            mutant = dict(arrays)
            for _ in range(int(rng.integers(1, 4))):
                key = sorted(mutant)[int(rng.integers(len(mutant)))]
                if rng.random() < 0.2:
                    del mutant[key]
                else:
                    mutant[key] = pool[int(rng.integers(len(pool)))]
            np.savez(path, **mutant)
        else:
            path.write_bytes(_mutate(rng, raw, [b"PK\x03\x04", b"\x93NUMPY", b"\x00" * 64]))
        tally.run(lambda: Network.load(path), (ValueError,), str(path))
    for size in (600 << 20, 2**40):  # zip bombs: a header for the size, then zeros
        path = folder / f"bomb{size}.npz"
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|i1", "fortran_order": False, "shape": (size,)})
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            with archive.open("proj0_weights.npy", "w", force_zip64=True) as handle:
                handle.write(header.getvalue())
                for _ in range(min(size >> 20, 600)):
                    handle.write(bytes(1 << 20))
        tally.run(lambda: Network.load(path), (ValueError,), str(path))
    return tally


def bci_files(rng, n: int, folder: Path, data: Path) -> Tally:
    import scipy.io

    from recordings.base import RecordingError
    from recordings.dad import DadSource

    tally = Tally("BCI .mat")
    mat = {k: v for k, v in scipy.io.loadmat(data / "bci" / "chewie_demo.mat").items() if not k.startswith("__")}
    DadSource(data / "bci" / "chewie_demo.mat").close()
    for i in range(n):
        mutant = dict(mat)
        key = ("Yte", "Xte", "Tte")[int(rng.integers(3))]  # the block a replay reads
        value = mutant[key].astype(np.float64)
        choice = i % 6
        if choice == 0:
            value[tuple(int(rng.integers(s)) for s in value.shape)] = 1e12
        elif choice == 1:
            value[:] = np.nan
        elif choice == 2:
            value = value.ravel()
        elif choice == 3:
            value = value / 0.05 + 0.3
        elif choice == 4:
            value = value[: len(value) // 2]
        else:
            value = -value
        mutant[key] = value
        path = folder / f"b{i}.mat"
        scipy.io.savemat(path, mutant)

        def replay(path=path):
            DadSource(path).close()

        tally.run(replay, (RecordingError, ValueError), str(path))
    return tally


def tcp_streams(rng, n: int, data: Path) -> Tally:
    from devices.dvs import NetworkEventSource, StreamError
    from recordings.detect import open_recording
    from tests.test_fuzz_tcp import CASE_NAMES, HostilePeer, _cases, drain, packet, stream_header

    tally = Tally("TCP stream (hostile peer)")
    reader = open_recording(data / "events" / "dvxplorer_tonic.aedat4", chunk_events=5000)
    sample = [chunk.copy() for chunk in reader.chunks()][:12]
    head = stream_header()
    packets = [packet(p) for p in sample]
    ends = np.cumsum([len(head)] + [len(p) for p in packets])  # stream byte where each packet ends (+ header)
    whole = head + b"".join(packets)
    cases = _cases(sample)
    scripts = [(cases[name][0], cases[name][2]) for name in CASE_NAMES]
    scripts.append(([("send", whole), ("close",)], sum(len(p) for p in sample)))
    for _ in range(n):
        mutant = bytearray(whole)
        kind = int(rng.integers(3))
        first = int(rng.integers(len(head), len(whole)))
        if kind == 0:
            mutant[first] ^= 1 << int(rng.integers(8))
            script = [("send", bytes(mutant)), ("close",)]
        elif kind == 1:
            script = [("send", bytes(mutant[:first])), ("close",)]
        else:
            script = [("send", bytes(mutant[:first])), ("send", rng.bytes(int(rng.integers(1, 5000)))), ("hold",)]
        intact = int(np.searchsorted(ends[1:], first, side="right"))  # packets wholly before the damage
        scripts.append((script, sum(len(p) for p in sample[:intact])))
    for script, must_arrive in scripts:
        outcome = {}

        def receive(script=script, outcome=outcome):
            with HostilePeer(script) as peer:
                source = NetworkEventSource("127.0.0.1", peer.port, connect_timeout_s=2.0, idle_timeout_s=0.5)
                try:
                    events, error = drain(source)
                finally:
                    source.close()
            outcome["events"], outcome["error"] = events, error
            if error is not None and not isinstance(error, StreamError):
                raise error
            if error is not None and "\n" in str(error):
                raise AssertionError(str(error))

        tally.run(receive, ())
        if "events" in outcome:
            got = outcome["events"]
            expected = np.concatenate(sample)[:must_arrive]
            lost = max(0, must_arrive - len(got))
            if not lost and len(expected) and not np.array_equal(got[:must_arrive], expected):
                lost = must_arrive  # a prefix that differs is data lost too
            tally.lost += lost
    return tally


def command_lines(folder: Path, data: Path) -> Tally:
    """The issue's command lines as a new user types them: each must end with its documented status and,
    when it fails, one ``spikeloop <command>: ...`` line."""
    import subprocess

    tally = Tally("command lines")
    sample = ROOT / "recordings" / "samples" / "moving_bars.aedat4"
    wav = data / "audio" / "fsdd" / "0_george_0.wav"
    cases = [(["info", folder], 2), (["launch", "launch"], 2), (["launch", sample], 2), (["launch", "/dev/zero"], 2),
             (["demo", "--seed", "-1"], 2), (["demo", "--duration", "0"], 2), (["demo", "--duration", "-3"], 2),
             (["audio", wav, "--png", "/nodir/x.png"], 2), (["conformance", "loihi", sample], 2),
             (["replay", sample, "--fast", "--start", "1000"], 2), (["--version"], 0), (["list"], 0),
             (["launch", ROOT / "launch" / "replay.toml", "--check"], 0), (["info", folder / "missing.aedat4"], 2),
             (["bci", "eval", sample, "--decoder", "wiener"], 2), (["simulate", sample, "--steps", "1", "--out",
                                                                  folder / "o.npz"], 2)]
    for argv, status in cases:
        def run(argv=argv, status=status):
            proc = subprocess.run([sys.executable, "-m", "pipeline.app.cli", *map(str, argv)], capture_output=True,
                                  text=True, cwd=folder, timeout=DEADLINE_S * 3)
            lines = proc.stderr.strip().splitlines()
            if "Traceback" in proc.stderr or proc.returncode != status:
                raise RuntimeError(f"{argv}: status {proc.returncode}: {proc.stderr.strip()[-200:]}")
            if status and not (lines and lines[-1].startswith("spikeloop")):
                raise RuntimeError(f"{argv}: not one spikeloop line: {proc.stderr.strip()[-200:]}")

        tally.run(run, ())
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--scale", type=int, default=1, help="multiply every corpus size by K")
    args = parser.parse_args()
    import os

    data = Path(os.environ.get("SPIKELOOP_DATA", ROOT.parent / "shared" / "data"))
    signal.signal(signal.SIGALRM, _alarm)
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(args.seed)
    k = args.scale
    tallies = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for make in (lambda: launch_tables(rng, 600 * k), lambda: launch_bytes(rng, 600 * k, folder),
                     lambda: npz_files(rng, 400 * k, folder), lambda: bci_files(rng, 60 * k, folder, data),
                     lambda: tcp_streams(rng, 60 * k, data), lambda: command_lines(folder, data)):
            started = time.monotonic()
            tally = make()
            tallies.append(tally)
            print(f"{tally.name}: {time.monotonic() - started:.1f} s", file=sys.stderr)
    print(f"{'category':<28}{'tried':>7}{'clean':>7}{'tracebacks':>12}{'hangs':>7}{'events lost':>13}")
    for t in tallies:
        print(f"{t.name:<28}{t.tried:>7}{t.clean:>7}{t.tracebacks:>12}{t.hangs:>7}{t.lost:>13}")
        for example in t.examples[:5]:
            print(f"    {example}")
    total = sum(t.tried for t in tallies)
    print(f"{'total':<28}{total:>7}{sum(t.clean for t in tallies):>7}{sum(t.tracebacks for t in tallies):>12}"
          f"{sum(t.hangs for t in tallies):>7}{sum(t.lost for t in tallies):>13}")
    return 0 if all(t.tracebacks == t.hangs == t.lost == 0 for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())
