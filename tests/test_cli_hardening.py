"""Issue #14's command-line and BCI cases, one regression test each: one line
``spikeloop <command>: <file/key>: <what> (<hint>)`` on stderr, the documented exit status (2 bad input),
nothing written when the input is refused."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from pipeline.app.cli import COMMANDS
from pipeline.core.schema import Key, annotation_expectation, default_text, parameter_help
from recordings.dad import load_dad
from recordings.neural import counts_to_spikes, rates_to_counts

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "recordings" / "samples" / "moving_bars.aedat4"


def cli(*args, cwd: Path = ROOT, **kwargs) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "SPIKELOOP_DATA": os.environ.get("SPIKELOOP_DATA", "")}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env=env, **kwargs)


def one_line_error(run: subprocess.CompletedProcess, command: str, needle: str, status: int = 2) -> None:
    assert run.returncode == status, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"spikeloop {command}: ") and needle in lines[-1], run.stderr
    assert "Traceback" not in run.stderr


def test_info_of_a_directory(tmp_path):
    one_line_error(cli("info", tmp_path), "info", f"{tmp_path}: is a directory (expected a recording file)")


@pytest.mark.parametrize("args,needle", [
    (["--seed", "-1"], "--seed: expected an integer >= 0"),
    (["--duration", "0"], "--duration: expected a positive number, got '0'"),
    (["--duration", "-3"], "--duration: expected a positive number, got '-3'"),
    (["--duration", "1e300"], "--duration: expected at most 86400 s (24 h) of simulated time, got '1e300'"),
    (["--duration", "86400.5"], "--duration: expected at most 86400 s (24 h) of simulated time, got '86400.5'"),
    (["--duration", "inf"], "--duration: expected a positive number, got 'inf'"),
])
def test_demo_refuses_bad_numbers_before_writing(tmp_path, args, needle):
    run = cli("demo", "--headless", *args, cwd=tmp_path)
    assert run.returncode == 2 and needle in run.stderr and "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_audio_png_in_a_missing_folder_is_refused_first(data_dir, tmp_path):
    wav = data_dir / "audio" / "fsdd" / "0_george_0.wav"
    one_line_error(cli("audio", wav, "--png", "/nodir/x.png"), "audio", "--png /nodir/x.png: folder /nodir does not exist")
    one_line_error(cli("audio", wav, "--out", tmp_path), "audio", "is a directory")
    run = cli("audio", wav, "--plot", tmp_path / "r.png", "--out", tmp_path / "s.npy")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "r.png").stat().st_size > 1000 and len(np.load(tmp_path / "s.npy")) > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png", "s.npy"]  # no temporary left behind


def test_a_closed_pipe_is_not_an_error():
    """``spikeloop info FILE | head`` printed "error: : Broken pipe": the reader left, nothing failed."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.app.cli", "info", SAMPLE, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == b""


def test_replay_start_past_the_end():
    one_line_error(cli("replay", SAMPLE, "--fast", "--start", "1000"), "replay",
                   "--start 1000 s is past the last event")
    assert cli("replay", SAMPLE, "--fast", "--start", "1").returncode == 0


def test_version_and_help_without_markup():
    run = cli("--version")
    assert run.returncode == 0 and run.stdout.startswith("spikeloop ")
    for command in COMMANDS:
        text = cli(command, "--help").stdout
        assert text and "``" not in text and ":class:" not in text and ":func:" not in text, command
    assert "Exit status: 0 ok, 1 runtime failure, 2 bad input or usage, 3 device lost, 130" in cli("--help").stdout


def _motor_help_options() -> dict[str, list[str]]:
    """``spikeloop motor --help``'s driver options block as {protocol: ["key: description", ...]}."""
    text = cli("motor", "--help").stdout
    block = text[text.index("driver options per protocol"):].splitlines()[1:]
    out: dict[str, list[str]] = {}
    for line in block:
        if re.fullmatch(r"  \w+:", line):
            out[line.strip(" :")] = []
        elif line.startswith("      "):
            out[list(out)[-1]].append(line.strip())
    return out


def test_motor_help_describes_driver_options_in_the_launch_file_words():
    """The block read ``counts_per_rev=None (float | None)``, ``mode='servo' (str)``: Python reprs, and the
    options the drivers refuse to start without shown as optional."""
    options = _motor_help_options()
    assert set(options) == {"dynamixel", "firmata", "maestro", "odrive", "roboclaw"}
    text = "\n".join(line for lines in options.values() for line in lines)
    for line in ("counts_per_rev: a number, required: quadrature encoder counts per wheel revolution",
                 "full_scale_rad_s: a number, required: speed at full servo angle / full PWM duty (rad/s)",
                 "full_scale_rad_s: a number, required: speed the servo/ESC reaches at neutral_us + range_us (rad/s)",
                 "neutral_us: a number, default 1500.0: pulse width that stops the motor (µs)",
                 'mode: a string, default "servo": ',
                 "dir_pins: a list of integers, optional: ",
                 "max_turns_s: a number, optional: speed limit the device enforces (turns/s",
                 "boot_wait_s: a number, default 3.0: ", "device_watchdog_ms: a number, default 100.0: "):
        assert line in text, line
    assert not re.search(r"\bNone\b|'[^' ]*'|\w\[|\w=", text), text
    # One description of a key in the whole project: the help's lines are `spikeloop list motors`'s.
    listed = json.loads(cli("list", "motors", "--json").stdout)["motors"]
    assert options == {name: [f"{key}: {about}" for key, about in entry["keys"].items()]
                       for name, entry in listed.items()}


@pytest.mark.parametrize("protocol, ids, option", [
    ("firmata", "9", "full_scale_rad_s"), ("maestro", "0", "full_scale_rad_s"), ("roboclaw", "1", "counts_per_rev"),
])
def test_a_required_driver_option_left_out_is_one_line_and_bad_input(tmp_path, protocol, ids, option):
    one_line_error(cli("motor", "--protocol", protocol, "--port", f"emulated:{protocol}", "--ids", ids,
                       "--velocity", "1", "--duration", "0"),
                   "motor", f"{protocol}: driver option {option} is required: ")
    launch = (ROOT / "launch" / "replay.toml").read_text().replace('"../recordings/', f'"{ROOT}/recordings/')
    launch = (launch.replace('protocol = "dynamixel"', f'protocol = "{protocol}"')
              .replace("emulated:dynamixel", f"emulated:{protocol}").replace("ids = [1, 2]", f"ids = [{ids}]")
              .replace("device_watchdog_ms = 100 ", "mode = 'servo' " if protocol == "firmata" else "# "))
    path = tmp_path / "motors.toml"
    path.write_text(launch)
    one_line_error(cli("launch", path, "--check"), "launch",
                   f"{path}: [sinks.motors.driver] {option}: missing (required by protocol \"{protocol}\")")


def test_driver_option_errors_are_bad_input():
    base = ("motor", "--protocol", "firmata", "--port", "emulated:firmata", "--ids", "9", "--velocity", "1",
            "--duration", "0")
    one_line_error(cli(*base, "--opt", "full_scale_rad_s=6", "--opt", "bogus=1"), "motor",
                   "firmata: unknown driver option bogus (expected one of: full_scale_rad_s, mode, ")
    one_line_error(cli(*base, "--opt", "full_scale_rad_s=-1"), "motor", "must be a number > 0, got -1")
    one_line_error(cli(*base, "--opt", "full_scale_rad_s=fast"), "motor",
                   'firmata: driver option full_scale_rad_s: expected a finite number, got "fast"')
    one_line_error(cli(*base, "--opt", "full_scale_rad_s=6", "--opt", "boot_wait_s=true"), "motor",
                   "firmata: driver option boot_wait_s: expected a finite number, got true")
    # true was pin 1 (a bool is an int) and then a numpy index: a traceback from the emulated twin, exit 1.
    pwm = ("--opt", "full_scale_rad_s=6", "--opt", "mode=pwm")
    for pins in ("[true]", '["x"]', "[1.5]"):
        one_line_error(cli(*base, *pwm, "--opt", f"dir_pins={pins}"), "motor",
                       f"firmata: dir_pins must be a list of pin numbers, got {pins}")
    # A line break ended the value: the next line was read as another TOML key and dropped without a word.
    one_line_error(cli(*base, "--opt", "full_scale_rad_s=6\nfull_scale_rad_s = -1"), "motor",
                   "argument --opt: full_scale_rad_s: expected one value, got more TOML after it: 6\\nfull_scale_rad_s = -1")


def test_driver_option_values_are_toml_as_in_a_launch_file():
    """``--opt dir_pins=[11,12]`` was the text "[11,12]": a list option (help: "a list of integers") could not be
    given on the command line. Values now read as ``launch --set`` reads them."""
    run = cli("motor", "--protocol", "firmata", "--port", "emulated:firmata", "--ids", "9,10", "--velocity", "1,-1",
              "--duration", "0.2", "--opt", "full_scale_rad_s=6", "--opt", "mode=pwm", "--opt", "dir_pins=[11, 12]")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    run = cli("motor", "--protocol", "roboclaw", "--port", "emulated:roboclaw", "--ids", "1", "--velocity", "1",
              "--duration", "0.2", "--opt", "counts_per_rev=2048", "--opt", "address=0x81")
    assert run.returncode == 0, run.stderr


def test_a_clamp_is_reported():
    run = cli("motor", "--protocol", "dynamixel", "--port", "emulated:dynamixel", "--ids", "1,2",
              "--velocity", "100,1", "--duration", "0.2")
    assert run.returncode == 0, run.stderr
    assert "id 1: --velocity 100 rad/s is clamped to +6.355 rad/s (the device limit)" in run.stderr
    assert "id 2" not in run.stderr


def test_list_shows_every_registry_entry_with_its_keys():
    from pipeline.app.sources import SOURCE_KEYS
    from pipeline.decoders import DECODERS
    from pipeline.snn.builders import BUILDERS
    from pipeline.stages import STAGES

    data = json.loads(cli("list", "--json").stdout)
    assert set(data["sources"]) == set(SOURCE_KEYS) and set(data["stages"]) == set(STAGES)
    assert set(data["networks"]) == set(BUILDERS) and set(DECODERS) <= set(data["decoders"])
    assert set(data["stages"]["noise_filter"]["keys"]) == {"duration_us"}
    assert "timeout_ms" in data["sinks"]["motors"]["keys"] and "device_watchdog_ms" in data["motors"]["dynamixel"]["keys"]
    assert "hidden" in cli("list", "networks").stdout


#: ``      key: <expectation> [(unit)], required | optional | default <TOML>: <help>``, as ``spikeloop list`` prints
#: every key; the expectation in pipeline.core.schema's words.
_LIST_KEY_LINE = re.compile(r"      (?P<key>\w+): (?P<expect>.+?), "
                            r"(?P<default>required|optional|default [^:]+?): (?P<help>\S.*)")
_SCHEMA_WORDS = ("an integer", "a number", "a positive", "a string", "true or false", "one of ", "a list",
                 "a non-empty list", "a table", "a path", "a file path")


def test_list_speaks_the_launch_file_vocabulary_and_every_key_has_help():
    lines = cli("list").stdout.splitlines()
    keys = [line for line in lines if line.startswith("      ")]
    assert len(keys) > 150
    for line in keys:
        match = _LIST_KEY_LINE.fullmatch(line)
        assert match, f"no help or no default: {line!r}"
        assert match["expect"].startswith(_SCHEMA_WORDS), line
        assert not re.search(r"\b(None|True|False)\b|\w\[|'", match["expect"] + match["default"]), line
    assert not [line for line in lines if "type = '" in line], "type names quoted as Python, not TOML"
    text = "\n".join(keys)
    assert "per_polarity: true or false, default false: " in text
    assert "factor: an integer or a list of 2 integers (px), optional: " in text
    assert "initial: a list of numbers, optional: the command before the first decision (command units" in text
    assert "pixels: a list of lists of 2 integers (px), default []: " in text


def test_annotations_read_as_schema_words_and_docstrings_give_help():
    assert annotation_expectation("int | tuple[int, int] | None") == "an integer or a list of 2 integers"
    assert annotation_expectation("list[list[float]] | None") == "a list of lists of numbers"
    assert annotation_expectation("bool") == Key("bool").expectation()
    for unreadable in ("Path", "None", "set[int]", "tuple[int, str]"):
        with pytest.raises(ValueError, match="no launch-file reading"):
            annotation_expectation(unreadable)
    assert parameter_help("""Summary: not a key.

        gap_us: silence that ends
            a word (µs)
        a / b: shared help
        v (m/s) = prose, skipped
        """) == {"Summary": "not a key.", "gap_us": "silence that ends a word (µs)", "a": "shared help",
                 "b": "shared help"}
    assert default_text(None, required=False) == "optional" and default_text((), required=False) == "default []"
    assert default_text(False, required=False) == "default false" and default_text(0, required=True) == "required"


# -- BCI -----------------------------------------------------------------------------------------------

@pytest.fixture()
def dad_tables(data_dir) -> dict:
    mat = scipy.io.loadmat(data_dir / "bci" / "chewie_demo.mat")
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def _write(path: Path, tables: dict, **changes) -> Path:
    scipy.io.savemat(path, {**tables, **changes})
    return path


def test_bci_hostile_dad_files_are_one_line_errors(dad_tables, tmp_path):
    big = dad_tables["Yte"].astype(float)
    big[3, 5] = 1e12
    cases = {
        "big": ({"Yte": big}, "variable 'Yte' row 3, unit 5: 1e+12 is not a spike count or rate"),
        "nan": ({"Tte": np.full(len(big), np.nan)}, "variable 'Tte' has 1818 values that are not target indices"),
        "row": ({"Yte": dad_tables["Yte"][:, 0].ravel()}, "variable 'Yte' is a single row of 1818 values"),
    }
    fit = tmp_path / "w.npz"
    assert cli("bci", "fit", data_dir_file(dad_tables, tmp_path), "--decoder", "wiener", "--out", fit).returncode == 0
    for name, (changes, needle) in cases.items():
        path = _write(tmp_path / f"{name}.mat", dad_tables, **changes)
        one_line_error(cli("bci", "eval", path, "--decoder", "wiener", "--folds", "2"), "bci eval", needle)
        one_line_error(cli("bci", "replay", path, "--model", fit), "bci replay", needle)


def test_bci_errors_name_the_action_once(data_dir, tmp_path):
    """``spikeloop bci replay: [decoder] model: ...``, not "spikeloop bci: bci replay: ..." (the launch check's
    display name used to follow the command's prefix)."""
    missing = tmp_path / "none.npz"
    run = cli("bci", "replay", data_dir / "bci" / "chewie_demo.mat", "--model", missing)
    one_line_error(run, "bci replay", f"[decoder] model: file not found: {missing}")
    assert run.stderr.count("bci replay") == 1 and run.stderr.count("spikeloop ") == 1, run.stderr
    one_line_error(cli("bci", "eval", tmp_path / "none.mat", "--decoder", "kalman"), "bci eval", "none.mat: no such file")
    one_line_error(cli("bci", "run", tmp_path / "none.toml"), "bci run", "none.toml: launch file not found")


def data_dir_file(tables: dict, tmp_path: Path) -> Path:
    return _write(tmp_path / "ok.mat", tables)


def test_rates_to_counts_is_the_inverse_of_dividing_by_the_bin():
    """Independent check: counts / bin width (Hz) back to counts, exactly, for every count up to 40."""
    counts = np.random.default_rng(3).integers(0, 40, size=(500, 30)).astype(float)
    assert np.array_equal(rates_to_counts(counts / 0.05, 50_000), counts)
    slow = rates_to_counts(np.full((20, 1), 5.0), 50_000)  # 5 Hz in 50 ms bins: one spike every 4th bin
    assert slow.ravel().tolist() == [0, 0, 0, 1] * 5
    with pytest.raises(ValueError, match="negative rate"):
        rates_to_counts(-counts, 50_000)


def test_a_huge_count_is_refused_before_allocating():
    counts = np.zeros((10, 3))
    counts[4, 1] = 1e12
    with pytest.raises(ValueError, match="1e\\+12 spikes, more than 10,000,000 in one replay"):
        counts_to_spikes(counts, 50_000)


def test_bci_replay_of_a_rates_file_matches_the_counts_file(dad_tables, tmp_path):
    """The same block stored as rates (counts / 30 ms, not whole numbers) replays with --rates-to-spikes 30
    exactly as the counts do at 30 ms bins."""
    counts_file = _write(tmp_path / "counts.mat", dad_tables)
    rates = {k: (v / 0.03 if k.startswith("Y") else v) for k, v in dad_tables.items()}
    rates_file = _write(tmp_path / "rates.mat", rates)
    assert np.array_equal(load_dad(rates_file, bin_ms=30, rates=True).counts, load_dad(counts_file).counts)
    one_line_error(cli("bci", "replay", rates_file, "--model", tmp_path / "m.npz"), "bci replay",
                   "[decoder] model: file not found")
    assert cli("bci", "fit", counts_file, "--decoder", "wiener", "--bin-ms", "30", "--out", tmp_path / "m.npz").returncode == 0
    refused = cli("bci", "replay", rates_file, "--model", tmp_path / "m.npz")
    one_line_error(refused, "bci replay", "these look like rates: see --rates-to-spikes")
    reports = [json.loads(cli("bci", "replay", path, "--model", tmp_path / "m.npz", "--json", *extra).stdout)
               for path, extra in ((counts_file, ["--bin-ms", "30"]), (rates_file, ["--rates-to-spikes", "30"]))]
    assert reports[0]["r2"] == reports[1]["r2"] and reports[0]["bins"] == reports[1]["bins"] == 1818
    assert reports[1]["bin_ms"] == 30


# -- convert ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compression,declared", [("lz4", "LZ4"), ("zstd", "ZSTD"), ("none", "NONE")])
def test_convert_compresses_keeps_the_camera_name_and_dv_reads_it(data_dir, tmp_path, compression, declared):
    import dv_processing as dv

    from recordings.detect import open_recording

    source = data_dir / "events" / "dvxplorer_tonic.aedat4"
    out = tmp_path / "out.aedat4"
    run = cli("convert", source, out, "--compression", compression)
    assert run.returncode == 0, run.stderr
    with open_recording(source) as reader:
        expected = np.concatenate(list(reader.chunks()))
    with open_recording(out) as reader:
        assert reader.header.extra["camera"] == "DVXplorer_DXB00010"
        assert reader.header.extra["compression"] == declared
        ours = np.concatenate(list(reader.chunks()))
    recording = dv.io.MonoCameraRecording(str(out))  # the peer reads the same events
    peer = []
    while (batch := recording.getNextEventBatch()) is not None:
        peer.append(batch.numpy())
    peer = np.concatenate(peer)
    for field in ("timestamp", "x", "y", "polarity"):
        assert np.array_equal(ours[field], expected[field]) and np.array_equal(peer[field], expected[field])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.aedat4"]


def test_a_failed_convert_leaves_the_old_output_and_no_temporary(data_dir, tmp_path):
    cut = tmp_path / "cut.aedat4"
    cut.write_bytes((data_dir / "events" / "dvxplorer_tonic.aedat4").read_bytes()[:500_000])
    out = tmp_path / "out.aedat4"
    out.write_bytes(b"keep me")
    run = cli("convert", cut, out, "--strict", "--force", "--compression", "lz4")
    one_line_error(run, "convert", "at byte 494090")
    assert out.read_bytes() == b"keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["cut.aedat4", "out.aedat4"]


# -- launch ----------------------------------------------------------------------------------------------

def test_a_launch_whose_motor_port_fails_leaves_an_earlier_command_log_untouched(tmp_path):
    """Issue 14: a [sinks.log] listed before [sinks.motors] was opened (truncating the file) before the
    motor port failed and the launch exited 2 with "nothing was started"."""
    text = (ROOT / "launch" / "replay.toml").read_text().replace("../recordings/samples/moving_bars.aedat4", str(SAMPLE))
    not_a_port = tmp_path / "not-a-port"
    not_a_port.write_text("a regular file: opens, then refuses serial settings\n")
    log = tmp_path / "commands.csv"
    log.write_text("yesterday's commands\n")
    text = text.replace("[sinks.motors]", f'[sinks.log]\ntype = "command_log"\npath = "{log}"\n\n[sinks.motors]')
    text = text.replace('port = "emulated:dynamixel"', f'port = "{not_a_port}"')
    launch = tmp_path / "bad.toml"
    launch.write_text(text)
    run = cli("launch", launch, cwd=tmp_path)
    one_line_error(run, "launch", "[sinks.motors]: dynamixel: cannot open serial port")
    assert log.read_text() == "yesterday's commands\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "commands.csv", "not-a-port"]


# -- one command line ------------------------------------------------------------------------------------

def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subparsers(sub):
                    yield f"{name} {inner}", subsub


def test_the_same_flag_for_the_same_thing_everywhere():
    """Issue 14: --png vs --plot, --chunk-ms vs --chunk-us. Every command taking one takes both spellings."""
    from pipeline.app.cli import build_parser

    checked = 0
    for command in COMMANDS:
        for name, sub in _subparsers(build_parser(command)):
            flags = {flag for action in sub._actions for flag in action.option_strings}
            for pair in (("--png", "--plot"), ("--chunk-ms", "--chunk-us")):
                if flags & set(pair):
                    assert set(pair) <= flags, f"spikeloop {name}: has {sorted(flags & set(pair))}, not both {pair}"
                    checked += 1
    assert checked >= 6


@pytest.mark.parametrize("flag, value", [("--chunk-ms", "0.0001"), ("--chunk-ms", "inf"), ("--chunk-ms", "nan"),
                                         ("--chunk-ms", "1e12"), ("--chunk-us", "0")])
def test_replay_packet_lengths_outside_1us_to_1h_are_refused(flag, value):
    """--chunk-ms 0.0001 rounded to a 0 µs packet (ValueError traceback), inf overflowed, 1e12 reported
    a packet's length as the recording's sensor time."""
    one_line_error(cli("replay", SAMPLE, "--fast", flag, value), "replay",
                   f"{flag}: expected 1 µs to 1 h of sensor time per packet, got")


def test_replay_chunk_us_equals_chunk_ms():
    runs = [cli("replay", SAMPLE, "--fast", *args) for args in (["--chunk-us", "2000"], ["--chunk-ms", "2"])]
    assert all(run.returncode == 0 for run in runs)
    assert "26,411 events in 1,497 packets" in runs[0].stderr and "26,411 events in 1,497 packets" in runs[1].stderr


@pytest.mark.parametrize("args, needle", [
    (["--decoder", "wiener", "--history", "100000"], "history 100000 bins x 71 units x 1455 bins is a 77.0 GiB design "
                                                     "matrix, more than 1 GiB"),
    (["--decoder", "snn", "--neurons", "100000000"], "argument --neurons: expected an integer in [1, 4096]"),
    (["--decoder", "snn", "--steps", "100000000"], "argument --steps: expected an integer in [1, 1000]"),
    (["--decoder", "snn", "--members", "9"], "argument --members: expected an integer in [1, 8]"),
    (["--decoder", "snn", "--neurons", "4096", "--members", "2"],
     "--neurons 4096 x --members 2 = 8192 neurons in one population, more than 4096"),
    (["--decoder", "snn", "--steps", "0"], "argument --steps: expected an integer in [1, 1000]"),
])
def test_bci_sizes_that_would_allocate_gigabytes_are_refused(data_dir, args, needle):
    """Found probing issue 14's list again: these were numpy MemoryError tracebacks (77 GiB, 53 GiB)."""
    one_line_error(cli("bci", "eval", data_dir / "bci" / "chewie_demo.mat", *args), "bci eval", needle)


def test_bci_snn_only_sizes_are_ignored_by_other_decoders(data_dir):
    """``--decoder ridge --neurons 4096`` ran ridge (--neurons is snn-only); with --members (default 2) it was
    refused as 8192 snn neurons. --members is ignored by the other decoders as --neurons is."""
    runs = [cli("bci", "eval", data_dir / "bci" / "chewie_demo.mat", "--decoder", "ridge", "--json", *args)
            for args in ([], ["--neurons", "4096"], ["--neurons", "4096", "--members", "8"])]
    assert all(run.returncode == 0 for run in runs), [run.stderr for run in runs]
    assert len({json.dumps(json.loads(run.stdout)["r2"]) for run in runs}) == 1


def test_replay_start_at_infinity_is_refused():
    one_line_error(cli("replay", SAMPLE, "--fast", "--start", "inf"), "replay", "--start: expected a time >= 0 s, got inf")


@pytest.mark.parametrize("args, command, needle", [
    (["view", SAMPLE, "--png", "{tmp}/v.png", "--start", "inf"], "view", "--start: expected a time >= 0 s, got inf"),
    (["view", SAMPLE, "--png", "{tmp}/v.png", "--duration", "inf"], "view", "--duration: expected a time > 0 s, got inf"),
    (["motor", "--protocol", "dynamixel", "--port", "emulated:dynamixel", "--ids", "1", "--velocity", "nan"], "motor",
     "--velocity: expected finite numbers (rad/s), got [nan]"),
    (["motor", "--protocol", "dynamixel", "--port", "emulated:dynamixel", "--ids", "1", "--velocity", "1",
      "--duration", "nan"], "motor", "--duration must be a finite number >= 0"),
])
def test_non_finite_times_and_velocities_are_refused(tmp_path, args, command, needle):
    """Found probing issue 14's list again: view --start/--duration inf were OverflowError tracebacks; motor
    --velocity nan ran for a second sending nothing (exit 0) and --duration nan never ended."""
    run = cli(*[str(a).replace("{tmp}", str(tmp_path)) for a in args])
    one_line_error(run, command, needle)
    assert list(tmp_path.iterdir()) == []


def test_demo_duration_bound_includes_24_hours():
    from pipeline.app.commands.demo import MAX_DURATION_S, _duration

    assert _duration("86400") == MAX_DURATION_S == 24 * 3600
