"""Hostile launch files: every one is either a valid LaunchSpec or one LaunchError line naming the file
(and, for a bad value, the section and key) - never another exception, never a large allocation, and
nothing opened or created (phase 1 opens nothing; the graph's limits are checked before allocating).

Hypothesis mutates the tables of the shipped launch files (values replaced by values of every TOML type,
keys added, removed or renamed, sections replaced); a seeded corpus mutates their bytes. The regression
cases of issue #14 are listed one by one below.
"""
from __future__ import annotations

import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.app.launch import (
    MAX_BUILDER_SYNAPSES,
    MAX_LAUNCH_BYTES,
    LaunchError,
    build_network,
    build_stages,
    check_launch,
    load_launch,
)

ROOT = Path(__file__).resolve().parent.parent
REPLAY = ROOT / "launch" / "replay.toml"
SAMPLE = ROOT / "recordings" / "samples" / "moving_bars.aedat4"
FILES = ["replay.toml", "robot_controller.toml", "demo.toml", "live_demo.toml"]


def tables(name: str) -> dict:
    return tomllib.loads((ROOT / "launch" / name).read_text())


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def check(raw: dict, path: Path = REPLAY):
    """check_launch on ``raw``: a LaunchSpec, or None after asserting the LaunchError is one line naming
    the file."""
    try:
        return check_launch(raw, path)
    except LaunchError as exc:
        text = str(exc)
        assert text.startswith(f"{path}: ") and "\n" not in text, text
        return None


# -- regression cases of the issue -------------------------------------------------------------------

def test_unreadable_launch_files_are_one_line_exit_2(tmp_path):
    nonutf8 = tmp_path / "latin1.toml"
    nonutf8.write_bytes(b'[source]\ntype = "replay"\npath = "caf\xe9.aedat4"\n')
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_LAUNCH_BYTES + 10))
    cases = [
        (nonutf8, "byte 36: not UTF-8 text"),
        (deep, "nested too deeply"),
        (tmp_path, "is a directory"),
        (Path("/dev/zero"), "larger than 1 MiB"),
        (big, "larger than 1 MiB"),
        (SAMPLE, "this looks like a recording"),
        (tmp_path / "missing.toml", "launch file not found"),
    ]
    for path, expected in cases:
        with pytest.raises(LaunchError, match=expected) as info:
            load_launch(path)
        assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    for args in (["launch", "launch"], ["launch", str(SAMPLE)], ["launch", "/dev/zero"], ["launch", str(deep)]):
        run = cli(*args)
        assert run.returncode == 2 and run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr


@pytest.mark.parametrize("key,value,expected", [
    ("stages.noise_filter.type", ["noise_filter"], "[stages.noise_filter] type: expected one of"),
    ("sinks.motors.type", ["motors"], "[sinks.motors] type: expected one of"),
    ("decoder.type", {"a": 1}, "[decoder] type: expected one of"),
    ("source.type", 3, "[source] type: expected one of"),
    ("decoder.left", "", '[decoder] left: expected a list, got ""'),
    ("decoder.forward", "0,1", '[decoder] forward: expected a list, got "0,1"'),
    ("decoder.window_us", True, "[decoder] window_us: expected an integer, got true"),
    ("decoder.mps_per_hz", float("nan"), "[decoder] mps_per_hz: expected a finite number, got nan"),
    ("sinks.motors.driver.device_watchdog_ms", True, "[sinks.motors.driver] device_watchdog_ms: expected a finite number, got true"),
    ("sinks.motors.timeout_ms", 2**63 - 1, "[sinks.motors] timeout_ms: expected a number in (0, 10000]"),
    ("sinks.motors.fatal_after_ms", 1e300, "[sinks.motors] fatal_after_ms: expected a number in [0, 3600000], got 1e+300"),
    ("loop.speed", 1e308, "[loop] speed: expected a number in (0, 1000]"),
    ("loop.duration_s", float("inf"), "[loop] duration_s: expected a number in [0, 10000000], got inf"),
    ("network.params.weight", 2**70, "[network.params] weight: expected an integer in [1, 255]"),
])
def test_questionable_values_are_refused_naming_section_and_key(key, value, expected):
    raw = tables("replay.toml")
    *sections, name = key.split(".")
    table = raw
    for section in sections:
        table = table[section]
    table[name] = value
    with pytest.raises(LaunchError) as info:
        check_launch(raw, REPLAY)
    assert expected in str(info.value), str(info.value)


def test_builder_sizes_and_sensor_sizes_are_bounded_before_allocating(tmp_path):
    """hidden = 1e6 passes its key's range but would allocate GBs of weights; a legal 32767 x 32767 .es
    header would make the noise filter allocate 8 GiB: both refused before anything is built."""
    raw = tables("replay.toml")
    raw["network"] = {"builder": "random_lif", "params": {"hidden": 1_000_000}}
    spec = check_launch(raw, REPLAY)
    with pytest.raises(LaunchError, match=r"\[network.params\]: the random_lif network .* would allocate "
                                          r"394,000,000 weights"):
        build_network(spec, 16, 12)
    assert 1024 * 16 * 12 * 2 < MAX_BUILDER_SYNAPSES  # the benchmark's shape still builds
    with pytest.raises(LaunchError, match=r"\[source\] path: the sensor is 32767 x 32767 px"):
        build_stages(spec, 32767, 32767)


def test_a_32767_square_es_header_is_refused_by_launch(data_dir, tmp_path):
    raw = bytearray((data_dir / "events" / "dvs_faery.es").read_bytes()[:100_000])
    raw[16:20] = struct.pack("<HH", 32767, 32767)
    huge = tmp_path / "huge.es"
    huge.write_bytes(bytes(raw))
    run = cli("launch", str(REPLAY), "--source", str(huge), "--set", 'loop.mode="fast"', "--headless")
    assert run.returncode == 2, run.stderr
    assert "[source] path: the sensor is 32767 x 32767 px" in run.stderr and "Traceback" not in run.stderr


def test_paths_the_file_system_cannot_hold_are_refused():
    """Found by bench/hostile_inputs.py: a 5000-character port made Path.exists() raise ENAMETOOLONG."""
    for key, value, expected in (("sinks.motors.port", "emulate" + "[" * 5000, "serial device not found"),
                                 ("source.path", "x" * 5000, "not a usable path"),
                                 ("source.path", "a\x00b", "not a usable path"),
                                 ("source.path", "~nosuchuser0/x.aedat4", "not a usable path")):
        raw = tables("replay.toml")
        section, _, name = key.rpartition(".")
        table = raw
        for part in section.split("."):
            table = table[part]
        table[name] = value
        with pytest.raises(LaunchError, match=expected):
            check_launch(raw, REPLAY)


def test_names_with_control_characters_stay_on_one_line():
    """Found by the hypothesis test: a quoted TOML key holding a newline split the message over two lines."""
    raw = tables("replay.toml")
    raw["stages"]["noise_filter"]["\n"] = raw["stages"]["noise_filter"].pop("duration_us")
    with pytest.raises(LaunchError, match=r"\[stages.noise_filter\] \\n: unknown key"):
        check_launch(raw, REPLAY)
    raw = tables("replay.toml")
    raw["sec\ttion"] = {}
    with pytest.raises(LaunchError, match=r"unknown section \[sec\\ttion\]"):
        check_launch(raw, REPLAY)


def test_set_values_nested_too_deeply_are_refused():
    with pytest.raises(LaunchError, match="--set loop.speed: value nested too deeply"):
        load_launch(REPLAY, sets=["loop.speed=" + "[" * 3000 + "]" * 3000])


def test_set_value_followed_by_more_toml_is_refused():
    """``loop.speed=2\nx = 1`` read as the document ``v = 2\nx = 1``: speed 2, the rest silently dropped."""
    with pytest.raises(LaunchError, match=r"--set loop.speed: expected one value, got more TOML after it: 2\\nx = 1"):
        load_launch(REPLAY, sets=["loop.speed=2\nx = 1"])


def test_check_prints_the_graph_and_opens_nothing(tmp_path):
    """--check validates and prints; the command log named by the file is not created."""
    launch = tmp_path / "log.toml"
    log = tmp_path / "commands.csv"
    text = REPLAY.read_text().replace("../recordings/samples/moving_bars.aedat4", str(SAMPLE))
    launch.write_text(text + f'\n[sinks.log]\ntype = "command_log"\npath = "{log}"\n')
    run = cli("launch", str(launch), "--check")
    assert run.returncode == 0, run.stderr
    assert f"{launch}: valid (nothing opened)" in run.stdout
    assert "[stages.pooling] type=\"pooling\"" in run.stdout and "[sinks.motors.driver] device_watchdog_ms=100" in run.stdout
    assert not log.exists()
    run = cli("launch", str(launch), "--check", "--json", "--set", "network.params.vth=50")
    import json

    graph = json.loads(run.stdout)
    assert graph["network.params"]["vth"] == 50 and graph["sinks.log"]["path"] == str(log)
    run = cli("launch", str(launch), "--check", "--set", "loop.speed=0")
    assert run.returncode == 2 and "[loop] speed: expected a number in (0, 1000], got 0" in run.stderr


# -- hypothesis: tables -------------------------------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(),
                    st.text(max_size=12), st.just(""), st.just("emulated:dynamixel"))
VALUES = st.recursive(SCALARS.filter(lambda v: v is not None),
                      lambda inner: st.one_of(st.lists(inner, max_size=4),
                                              st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)


def _paths(raw: dict, prefix=()) -> list[tuple]:
    out = []
    for key, value in raw.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out.extend(_paths(value, prefix + (key,)))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FILES), data=st.data())
def test_any_mutation_of_a_launch_table_is_a_spec_or_one_line(name, data):
    raw = tables(name)
    path = ROOT / "launch" / name
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(_paths(raw)))
        parent = raw
        for part in target[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "remove", "add", "rename"]))
        if action == "replace":
            parent[target[-1]] = data.draw(VALUES)
        elif action == "remove":
            parent.pop(target[-1], None)
        elif action == "add":
            parent[data.draw(st.text(min_size=1, max_size=10))] = data.draw(VALUES)
        else:
            parent[data.draw(st.text(min_size=1, max_size=10))] = parent.pop(target[-1])
        if not raw:
            break
    check(raw, path)


# -- seeded corpus: bytes -----------------------------------------------------------------------------

def test_byte_mutants_of_the_launch_files_are_specs_or_one_line(tmp_path):
    rng = np.random.default_rng(14)
    tried = 0
    for name in FILES:
        raw = (ROOT / "launch" / name).read_bytes()
        for i in range(150):
            mutant = bytearray(raw)
            kind = i % 4
            if kind == 0:
                for pos in rng.integers(0, len(mutant), size=rng.integers(1, 6)):
                    mutant[pos] = int(rng.integers(256))
            elif kind == 1:
                mutant = mutant[: int(rng.integers(0, len(mutant)))]
            elif kind == 2:
                a, b = sorted(rng.integers(0, len(mutant), size=2))
                mutant[a:b] = bytes(rng.choice(list(b'[]{}="., \n#0123456789abc'), size=b - a))
            else:
                pos = int(rng.integers(0, len(mutant)))
                mutant[pos:pos] = rng.choice([b"\xff\xfe", b"[[[[[[[[", b"= inf", b"= nan", b'= """', b"\x00"])
            path = tmp_path / name
            path.write_bytes(bytes(mutant))
            try:
                load_launch(path)
            except LaunchError as exc:
                assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), str(exc)
            tried += 1
    assert tried == 600
