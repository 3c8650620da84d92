"""Sources by description: the one opener behind launch files and the command line.

A source is described by a launch file's ``[source]`` table (``type`` + the keys in :data:`SOURCE_KEYS`);
a command-line specification string becomes such a table (:func:`parse_source_spec`), and
:func:`open_source` opens any table. Types, by the packets they stream:

  DVS events   replay   a recording in any supported event format
               webcam   an ordinary camera (index) or a video file through the frame-to-event emulator
               camera   an iniVation DVS camera (dv-processing)
               tcp      an AEDAT 4 network stream (dv-processing NetworkWriter / DV software)
  either       zenoh    packets published on a Zenoh key (devices.transport.zenoh_link; ``kind`` says
                        which: dvs or spikes; ``kind = "command"`` is the robot side, commands -> motors)
               samples  a labelled folder (or one recording) replayed sample by sample for a classifier
                        (recordings.sample_replay; opened with the model it feeds: open_sample_source)
  AER spikes   dad      a DAD .mat block replayed as spikes of its units (recordings.dad)
               mc_maze  an MC_Maze trial CSV replayed as spikes of its units (recordings.mc_maze)
               audio    a WAV file or the microphone through the cochlea (devices.audio)

Specification strings:
  PATH                   a recording: .wav -> audio, .mat -> dad, .csv -> mc_maze, a folder -> samples,
                         anything else -> replay
  camera                 the first attached iniVation camera;  camera:SERIAL  a specific one
  webcam                 the first ordinary camera through the frame-to-event emulator;  webcam:N  camera N
  video:PATH             a video file through the frame-to-event emulator
  tcp://HOST:PORT        an AEDAT 4 network stream
  zenoh:KEY              packets published on a Zenoh key (e.g. zenoh:lab/robot1/dvs; zenoh:lab/*/dvs runs one
                         loop per robot), over the loopback peer unless the launch file names a Zenoh config
  mic                    the default microphone through the cochlea (needs the optional sounddevice package)

Live types (camera, webcam with a camera index, tcp, zenoh, audio with ``microphone = true``) run the loop live;
recordings replay paced, fast, or paced by the source itself in a live loop.
"""
from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import numpy as np

from devices.audio import CochleaConfig, MicrophoneCochleaSource, WavCochleaSource, voice_files, voice_level
from devices.dvs import DvsCameraSource, NetworkEventSource
from devices.errors import CameraError
from devices.transport.zenoh_link import TransportError, ZenohSource, check_key
from devices.webcam import WebcamSource
from pipeline.core.packet import Source
from pipeline.core.schema import REQUIRED, Key, toml_value
from recordings import dad, mc_maze
from recordings.base import RecordingError
from recordings.dad import DadSource
from recordings.labelled import RECORDING_SUFFIXES, LabelsError, open_labelled, read_labels
from recordings.mc_maze import McMazeSource
from recordings.replay import ReplaySource
from recordings.sample_replay import SampleReplaySource

SOURCE_KINDS = ("PATH", "camera[:SERIAL]", "webcam[:N]", "video:PATH", "tcp://HOST:PORT", "zenoh:KEY", "mic")

DVS_TYPES = ("replay", "webcam", "camera", "tcp", "samples", "world")
NEURAL_TYPES = ("dad", "mc_maze")
SOURCE_TYPES = DVS_TYPES[:5] + NEURAL_TYPES + ("audio", "world", "zenoh")
#: What a zenoh source carries: a loop's input packets, or (robot side) commands for the motors.
ZENOH_KINDS = ("dvs", "spikes", "command")

_COCHLEA = CochleaConfig()
_NEURAL_KEYS = {
    "path": Key("file", help="DAD .mat (dad) or MC_Maze trial CSV (mc_maze), relative to the launch file"),
    "block": Key("str", "te", choices=("tr", "te"), help="DAD block replayed (te = Yte/Xte; mc_maze: unused)"),
    "bin_ms": Key("number", 0.0, low=0, high=10_000, help="bin width (ms; 0 = the model's, else 50 DAD / 20 MC_Maze)"),
    "loop": Key("bool", False, help="start over at the end"),
}

#: The keys of each [source] type (``type`` itself selects the table).
SOURCE_KEYS: dict[str, dict[str, Key]] = {
    "world": {  # closed through the graph's motors: built by `spikeloop demo`, not by open_source
        "seed": Key("int", 0, low=0, help="arena seed of the simulated robot world (devices.world)"),
    },
    "replay": {
        "path": Key("file", help="recording (any supported format), relative to the launch file"),
        "loop": Key("bool", False, help="start again at the end (the stream never ends)"),
        "start_us": Key("int", 0, low=0, help="skip this much of the recording (µs)"),
    },
    "webcam": {
        "device": Key("str", "0", help="camera index or video file"),
        "width": Key("int", 0, low=0, high=32767, help="resize frames to this width (px, 0 = native)"),
        "height": Key("int", 0, low=0, high=32767, help="resize frames to this height (px, 0 = native)"),
    },
    "camera": {
        "serial": Key("str", "", help="camera serial number ('' = the first camera found)"),
    },
    "tcp": {
        "host": Key("str", help="AEDAT 4 network stream host (dv-processing NetworkWriter / DV software)"),
        "port": Key("int", low=1, high=65535, help="TCP port"),
    },
    "samples": {
        "path": Key("str", help="a folder of recordings or one recording, relative to the launch file "
                                "($SPIKELOOP_DATA/... = in the shared data folder)"),
        "labels": Key("str", "", help="'sample class' lines, relative to the launch file or $SPIKELOOP_DATA/... "
                                      "('' = FSDD names, or no labels when the names are not FSDD's)"),
        "limit": Key("int", 0, low=0, help="only the first N recordings of the folder (0 = all)"),
    },
    "dad": {**_NEURAL_KEYS, "rates": Key("bool", False, help="Y holds firing rates (spikes/s over bin_ms bins), "
                                                             "replayed as whole counts (recordings.neural.rates_to_counts)")},
    "mc_maze": _NEURAL_KEYS,
    "zenoh": {
        "key": Key("str", help="Zenoh key expression, e.g. lab/robot1/dvs (a * chunk: one loop per robot)"),
        "kind": Key("str", "dvs", choices=ZENOH_KINDS, help="dvs | spikes (a loop's input) | command (robot "
                                                           "side: commands -> [sinks] motors)"),
        "config": Key("str", "", help="Zenoh JSON5 config file, relative to the launch file ('' = a peer on "
                                      "loopback only)"),
        "first_packet_s": Key("number", 10.0, low=0, help="wait this long for the first packet (s, 0 = forever)"),
        "silence_ms": Key("number", 1000.0, low=0, low_open=True,
                          help="a stream silent this long is lost: the loop stops, motors stop (ms)"),
        "queue_packets": Key("int", 256, low=1, high=100_000,
                             help="received packets held for a slow loop (the oldest are dropped, counted)"),
        "stale_ms": Key("number", 100.0, low=0, low_open=True,
                        help="command: a command older than this is stale and the motors get zero (ms)"),
    },
    "audio": {
        "path": Key("str", "", help="WAV file (integer PCM), relative to the launch file ('' with microphone)"),
        "microphone": Key("bool", False, help="the default microphone instead of a file (sounddevice)"),
        "loop": Key("bool", False, help="WAV: start again at the end (the stream never ends)"),
        "device": Key("str", "", help="microphone: sounddevice device index or name ('' = the default)"),
        "sample_rate_hz": Key("number", 16000.0, low=1000, high=384000, help="microphone: capture rate (Hz)"),
        "input_gain": Key("number", 3.0, low=0, low_open=True, help="microphone: gain on the samples (a WAV is "
                                                                     "normalised to target_rms instead)"),
        "n_channels": Key("int", _COCHLEA.n_channels, low=1, high=1024, help="cochlea filterbank channels"),
        "f_lo_hz": Key("number", _COCHLEA.f_lo_hz, low=0, low_open=True, help="lowest centre frequency (Hz)"),
        "f_hi_hz": Key("number", _COCHLEA.f_hi_hz, low=0, low_open=True,
                       help="highest centre frequency (Hz, below Nyquist)"),
        "method": Key("str", _COCHLEA.method, choices=("lif", "delta"),
                      help="spike encoder: lif (channel c) or delta (ON c, OFF c + n_channels)"),
        "tau_ms": Key("number", _COCHLEA.tau_ms, low=0, low_open=True, help="lif: membrane time constant (ms)"),
        "threshold": Key("number", _COCHLEA.threshold, low=0, low_open=True, help="lif: spike threshold"),
        "refractory_ms": Key("number", _COCHLEA.refractory_ms, low=0, help="lif: silence after a spike (ms)"),
        "delta": Key("number", _COCHLEA.delta, low=0, low_open=True, help="delta: log-envelope step per spike"),
        "envelope_tau_ms": Key("number", _COCHLEA.envelope_tau_ms, low=0, low_open=True,
                               help="delta: envelope low-pass time constant (ms)"),
        "agc_ms": Key("number", _COCHLEA.agc_ms, low=0, high=60_000,
                      help="lif: AGC time constant (ms; 0: off): each channel's drive divided by its tracked level"),
        "agc_strength": Key("number", _COCHLEA.agc_strength, low=0, high=2, help="lif: AGC exponent"),
        "agc_enrol": Key("str", "", help="lif AGC: a WAV, or a folder of WAVs, of the voice (relative to the launch "
                                         "file); the AGC starts settled to its level instead of 0"),
        "target_rms": Key("number", _COCHLEA.target_rms, low=0, low_open=True,
                          help="WAV: normalise the clip to this RMS"),
        "level": Key("str", "rms", choices=("rms", "active"),
                     help="WAV: the level normalised: rms of all samples, or active (pauses excluded)"),
    },
}

_COCHLEA_FIELDS = tuple(f.name for f in fields(CochleaConfig))
_COCHLEA_ERROR = re.compile(r"^cochlea (?P<key>\w+)(?:/\w+)?: ")


class SourceSpecError(ValueError):
    """A source specification or [source] table naming nothing usable; ``key`` names the offending key of
    the table (None: the specification as a whole)."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def parse_source_spec(spec: str) -> dict:
    """A source specification as a ``[source]`` table, e.g. ``{"type": "replay", "path": ...}`` (paths made
    absolute); keys left out take the launch file's values or the defaults (see the module docstring)."""
    name, _, rest = spec.partition(":")
    if name == "webcam":
        return {"type": "webcam", **({"device": rest} if rest else {})}
    if name == "video":
        return {"type": "webcam", "device": str(Path(rest).expanduser().resolve())}
    if name == "camera":
        return {"type": "camera", **({"serial": rest} if rest else {})}
    if spec == "mic":
        return {"type": "audio", "microphone": True, "path": ""}
    if name == "zenoh":
        if not rest:
            raise SourceSpecError(f"source {spec!r}: expected zenoh:KEY (e.g. zenoh:lab/robot1/dvs)")
        return {"type": "zenoh", "key": rest}
    if spec.startswith("tcp://"):
        host, _, port = spec[len("tcp://"):].rpartition(":")
        if not host or not port.isdigit():
            raise SourceSpecError(f"source {spec!r}: expected tcp://HOST:PORT")
        return {"type": "tcp", "host": host, "port": int(port)}
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        return {"type": "samples", "path": str(path)}
    kind = {".wav": "audio", ".mat": "dad", ".csv": "mc_maze"}.get(path.suffix.lower(), "replay")
    return {"type": kind, "path": str(path), **({"microphone": False} if kind == "audio" else {})}


def with_defaults(table: dict) -> dict:
    """``table`` completed with the defaults of its type's keys (required keys stay as given)."""
    keys = SOURCE_KEYS[table["type"]]
    return {**{k: key.default for k, key in keys.items() if key.default is not REQUIRED}, **table}


def is_live(table: dict) -> bool:
    """Whether the table's source is a live sensor (its loop must run live) rather than a recording."""
    kind = table["type"]
    if kind == "webcam":
        return str(table.get("device", "0")).isdigit()
    if kind == "audio":
        return bool(table.get("microphone"))
    return kind in ("camera", "tcp", "zenoh")


def stream_kind(source_type: str) -> str:
    """The packets a source type streams: "dvs" (DVS events) or "spikes" (AER spikes); a zenoh source's
    are its table's ``kind`` (:func:`table_kind`)."""
    return "dvs" if source_type in DVS_TYPES else "spikes"


def table_kind(table: dict) -> str:
    """What a ``[source]`` table streams: "dvs", "spikes" or (a zenoh source on the robot side) "command"."""
    if table["type"] == "zenoh":
        return table.get("kind", "dvs")
    return stream_kind(table["type"])


def robot_chunks(pattern: str, key: str) -> list[str]:
    """The chunks of ``key`` that fill the ``*`` chunks of ``pattern`` (``lab/*/dvs``, ``lab/robot1/dvs``
    -> ``["robot1"]``)."""
    return [part for want, part in zip(pattern.split("/"), key.split("/")) if want == "*"]


def fill_robot(template: str, chunks: list[str]) -> str:
    """``template`` with its ``*`` replaced, in order, by ``chunks`` (``lab/*/cmd`` -> ``lab/robot1/cmd``)."""
    parts = template.split("*")
    out = parts[0]
    for i, part in enumerate(parts[1:]):
        out += chunks[min(i, len(chunks) - 1)] + part
    return out


def check_zenoh_key(key: str) -> str:
    """A key Zenoh accepts, or SourceSpecError naming ``key``."""
    try:
        return check_key(key)
    except TransportError as exc:
        raise SourceSpecError(str(exc), "key") from None


def open_source(table: dict, *, speed: float = 1.0, fast: bool = False, chunk_us: int = 1000, bin_us: int = 0,
                strict: bool = False) -> Source:
    """Open the source a complete ``[source]`` table describes (see :func:`with_defaults`).

    speed, fast: pacing of a recording (sensor s per wall s; fast = no pacing, the loop paces or not);
    chunk_us: packet length of a recording (µs); bin_us: neural recordings, the bin width of the kinematics
    they carry as ``data`` and of the DAD time base (0 = the format's default); strict: raise on damage.
    Raises SourceSpecError naming the key when the recording or device cannot be opened.
    """
    kind = table["type"]
    if kind == "replay":
        try:
            return ReplaySource(table["path"], speed=speed, fast=fast, loop=table["loop"],
                                start_us=table["start_us"], chunk_us=chunk_us, strict=strict)
        except (RecordingError, ValueError, OSError) as exc:
            raise SourceSpecError(f"cannot replay {table['path']}: {exc}", "path") from None
    if kind == "webcam":
        size = (table["width"], table["height"]) if table["width"] and table["height"] else None
        device = table["device"]
        try:
            return WebcamSource(int(device) if device.isdigit() else device, size=size)
        except (CameraError, ValueError) as exc:
            raise SourceSpecError(f"cannot open webcam {device!r}: {exc}", "device") from None
    if kind == "camera":
        try:
            return DvsCameraSource(table["serial"] or None)
        except CameraError as exc:
            raise SourceSpecError(f"no DVS camera could be opened: {exc}", "serial" if table["serial"] else "type") \
                from None
    if kind == "tcp":
        try:
            return NetworkEventSource(table["host"], table["port"])
        except CameraError as exc:
            raise SourceSpecError(f"cannot receive tcp://{table['host']}:{table['port']}: {exc}", "host") from None
    if kind == "zenoh":
        return open_zenoh(table)
    if kind == "world":
        raise SourceSpecError("'world' is closed through the robot's motors: run it with `spikeloop demo --launch "
                              "FILE`, or replay a recording of it with --source PATH", "type")
    if kind == "samples":
        raise SourceSpecError("a samples source feeds a classifier: it is opened with the model "
                              "(a launch file with [decoder] type = 'classifier')", "type")
    if kind in NEURAL_TYPES:
        return _open_neural(table, speed=speed, fast=fast, chunk_us=chunk_us, bin_us=bin_us)
    if kind == "audio":
        return _open_audio(table, speed=speed, fast=fast, chunk_us=chunk_us, strict=strict)
    raise SourceSpecError(f"unknown source type {toml_value(kind)} (expected one of {', '.join(SOURCE_TYPES)})", "type")


def _open_neural(table: dict, *, speed: float, fast: bool, chunk_us: int, bin_us: int) -> Source:
    path = table["path"]
    try:
        if table["type"] == "dad":
            return DadSource(path, table["block"], (bin_us or round(dad.DEFAULT_BIN_MS * 1000)) / 1000, speed=speed,
                             fast=fast, loop=table["loop"], chunk_us=chunk_us, rates=table["rates"])
        return McMazeSource(path, bin_ms=(bin_us or round(mc_maze.DEFAULT_BIN_MS * 1000)) / 1000, speed=speed,
                            fast=fast, loop=table["loop"], chunk_us=chunk_us)
    except (RecordingError, ValueError, OSError) as exc:
        raise SourceSpecError(f"cannot replay {path}: {exc}", "path") from None


def _enrolled_level(table: dict, config: CochleaConfig) -> np.ndarray | None:
    """The AGC start level of ``agc_enrol`` (a WAV or a folder of them; devices.audio.voice_level), or None."""
    if not table.get("agc_enrol"):
        return None
    path = Path(table["agc_enrol"])
    try:
        return voice_level(voice_files(path), config)
    except (RecordingError, ValueError, OSError) as exc:
        raise SourceSpecError(f"cannot measure the voice in {path}: {exc}", "agc_enrol") from None


def _open_audio(table: dict, *, speed: float, fast: bool, chunk_us: int, strict: bool) -> Source:
    config = CochleaConfig(**{name: table[name] for name in _COCHLEA_FIELDS})
    level = _enrolled_level(table, config)
    try:
        if table["microphone"]:
            device = table["device"]
            return MicrophoneCochleaSource(config, sample_rate_hz=table["sample_rate_hz"], packet_ms=chunk_us / 1000,
                                           input_gain=table["input_gain"],
                                           device=None if not device else int(device) if device.isdigit() else device,
                                           agc_level=level)
        return WavCochleaSource(table["path"], config, packet_ms=chunk_us / 1000, speed=speed, fast=fast,
                                loop=table["loop"], strict=strict, level=table["level"], agc_level=level)
    except RuntimeError as exc:  # the optional sounddevice package or PortAudio is missing
        raise SourceSpecError(str(exc), "microphone") from None
    except (RecordingError, ValueError, OSError) as exc:
        match = _COCHLEA_ERROR.match(str(exc))
        key = match["key"] if match else ("device" if table["microphone"] else "path")
        raise SourceSpecError(f"cannot open {table['path'] or 'the microphone'}: {exc}", key) from None


def open_zenoh(table: dict, subscription=None) -> ZenohSource:
    """A Zenoh source for a complete zenoh table (one concrete key; ``subscription``: a KeyDemux route to
    read instead of subscribing). Raises SourceSpecError naming the key when no packet of the table's kind
    comes within ``first_packet_s`` or the session cannot be opened."""
    if table["kind"] == "command":
        raise SourceSpecError("a command stream drives motors (a launch file with [sinks] motors and no "
                              "[network]), not a loop", "kind")
    try:
        source = ZenohSource(table["key"], config_file=table["config"] or None, queue=table["queue_packets"],
                             first_sample_timeout_s=table["first_packet_s"] or None,
                             end_after_silence_s=table["silence_ms"] / 1000, shared=True,
                             subscription=subscription)
    except TransportError as exc:
        raise SourceSpecError(str(exc), "config" if table["config"] and "config" in str(exc) else "key") from None
    if source.info.kind != table["kind"]:
        source.close()
        raise SourceSpecError(f"zenoh:{table['key']} carries {source.info.kind} packets, expected "
                              f"{table['kind']}", "kind")
    return source


def sample_recordings(table: dict, classes) -> tuple[list[Path], list[int] | None]:
    """The recordings of a ``samples`` table and their class indices (into ``classes``), or None when not
    labelled: a folder with a labels file (or FSDD names), or one recording (its line of the labels file, if
    any). Raises SourceSpecError naming the key."""
    path, labels = Path(table["path"]), table["labels"] or None
    if labels is not None and not Path(labels).is_file():
        raise SourceSpecError(f"labels file not found: {labels}", "labels")
    if path.is_file():
        if path.suffix.lower() == ".wav":
            raise SourceSpecError(f"{path}: a samples source replays event recordings (WAV clips: spikeloop "
                                  f"evaluate, or an audio source)", "path")
        if labels is None:
            return [path], None
        try:
            table_of = read_labels(labels)
        except LabelsError as exc:
            raise SourceSpecError(str(exc), "labels") from None
        if path.stem not in table_of:
            raise SourceSpecError(f"{labels}: no label for {path.name}", "labels")
        if table_of[path.stem] not in classes:
            raise SourceSpecError(f"{labels}: class {table_of[path.stem]!r} of {path.name} is not among the "
                                  f"model's classes {list(classes)}", "labels")
        return [path], [list(classes).index(table_of[path.stem])]
    if not path.is_dir():
        raise SourceSpecError(f"not a recording or a folder of recordings: {path}", "path")
    try:
        data = open_labelled(path, labels, classes=tuple(classes))
    except LabelsError as exc:
        if labels is not None or "not FSDD" not in str(exc):
            raise SourceSpecError(str(exc), "labels" if labels else "path") from None
        data = None  # unlabelled: the recordings in the labelled set's order
        paths = sorted((p for p in path.iterdir() if p.suffix.lower() in RECORDING_SUFFIXES and p.is_file()),
                       key=lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem))
    if data is not None:
        paths, indices = list(data.paths), list(data.labels)
    else:
        indices = None
    if any(p.suffix.lower() == ".wav" for p in paths):
        raise SourceSpecError(f"{path}: a samples source replays event recordings (WAV clips: spikeloop evaluate)",
                              "path")
    if table["limit"]:
        paths = paths[:table["limit"]]
        indices = None if indices is None else indices[:table["limit"]]
    return paths, indices


def open_sample_source(table: dict, classes, *, bin_us: int, duration_us: int, tail_steps: int, chunk_us: int,
                       speed: float = 1.0, fast: bool = False) -> SampleReplaySource:
    """A ``samples`` table's recordings replayed one after another on the model's step grid (``bin_us``,
    ``duration_us``, ``tail_steps`` of its input spec); class indices into ``classes`` when labelled."""
    paths, indices = sample_recordings(table, classes)
    try:
        return SampleReplaySource(paths, indices, bin_us=bin_us, duration_us=duration_us, tail_steps=tail_steps,
                                  chunk_us=chunk_us, speed=speed, fast=fast)
    except (ValueError, OSError) as exc:
        raise SourceSpecError(f"cannot replay {table['path']}: {exc}", "path") from None
