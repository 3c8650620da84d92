"""Errors quote the user's values as TOML (the language of launch files, training configs and ``--set``),
not as Python reprs: ``true`` not ``True``, ``"x"`` not ``'x'``, ``{ a = 1 }`` not ``{'a': 1}``.

The renderer (pipeline.core.schema.toml_value) is checked against Python's own TOML reader: what it writes
reads back as the same value. The CLI cases run the real commands on (copies of) shipped files.
"""
from __future__ import annotations

import datetime
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.schema import QUOTE_LIMIT, toml_value

ROOT = Path(__file__).resolve().parent.parent

VALUES = [
    True, False, 0, -7, 2**63 - 1, -(2**63),
    1.0, 0.1, -0.0, 1 / 3, 1e-5, 1e300, 5e-324, 2.0**53 + 2, float("inf"), float("-inf"),
    "", "x", "it's", 'say "hi"', "back\\slash", "tab\tnew\nline\r\x00\x1f\x7f", "é ü 😀", "\u2028\xa0\u200b",
    [], [1, "a"], [[1, 2], [3.5]], [True, {"a": 1}],
    {}, {"a": 1}, {"a b": {"c": [1.5, "d"]}, "": 0, "x.y": "z", "é": True},
    datetime.date(1979, 5, 27), datetime.time(7, 32), datetime.time(0, 0, 0, 999999),
    datetime.datetime(1979, 5, 27, 7, 32, 0, 999999),
    datetime.datetime(1979, 5, 27, 0, 32, tzinfo=datetime.timezone(datetime.timedelta(hours=-7))),
    datetime.datetime(2026, 12, 5, 6, 48, tzinfo=datetime.timezone.utc),
]


def read_back(text: str):
    return tomllib.loads(f"x = {text}")["x"]


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_rendered_values_read_back_as_the_same_value(value):
    text = toml_value(value, limit=None)
    assert read_back(text) == value, text
    assert text.isprintable(), text  # one line, nothing a terminal would act on


def test_floats_are_exact_and_written_as_toml_writes_them():
    assert [toml_value(v) for v in (float("inf"), float("-inf"), float("nan"))] == ["inf", "-inf", "nan"]
    assert math.isnan(read_back(toml_value(float("nan"))))
    assert toml_value(3.0) == "3.0" and isinstance(read_back("3.0"), float)  # "got 3.0" for an integer key
    assert toml_value(0.1) == "0.1" and toml_value(1 / 3) == "0.3333333333333333"


def test_python_forms_are_not_used():
    assert toml_value(True) == "true" and toml_value(False) == "false"
    assert toml_value("x") == '"x"'
    assert toml_value([1, "a"]) == '[1, "a"]'
    assert toml_value({"a": 1}) == "{ a = 1 }"
    assert toml_value(None) == "no value"  # TOML has no null; a Python caller's None
    assert toml_value(np.float32(0.1)) == "0.1" and toml_value(np.int64(3)) == "3"
    assert toml_value(np.bool_(True)) == "true" and toml_value(np.array([1.5, 2.0])) == "[1.5, 2.0]"


def test_long_values_are_cut_and_deep_ones_written_without_recursion():
    """A message quotes at most QUOTE_LIMIT characters of a value; nesting as deep as tomllib reads (and far
    deeper) is written without RecursionError."""
    text = toml_value(list(range(10**6)))
    assert len(text) == QUOTE_LIMIT + 3 and text.startswith("[0, 1, 2, ") and text.endswith("...")
    assert toml_value("x" * 10**6) == '"' + "x" * (QUOTE_LIMIT - 1) + "..."
    assert toml_value(nested(10**5)) == "[" * QUOTE_LIMIT + "..."
    deepest = read_back("[" * 400 + "]" * 400)
    assert read_back(toml_value(deepest, limit=None)) == deepest
    assert len(toml_value(list(range(50)))) < QUOTE_LIMIT and not toml_value(list(range(50))).endswith("...")


scalars = (st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
           | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
           | st.dates() | st.times() | st.datetimes(timezones=st.none() | st.builds(
               datetime.timezone, st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: datetime.timedelta(minutes=m)))))
toml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(toml_values)
def test_any_toml_value_reads_back_as_itself(value):
    text = toml_value(value, limit=None)
    assert read_back(text) == value, text
    assert text.isprintable(), text


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.app.cli", *args], cwd=cwd, env=env, check=False,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(run: subprocess.CompletedProcess, expected: str) -> None:
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr, run.stderr
    assert expected in run.stderr, run.stderr


@pytest.fixture
def replay_copy(tmp_path):
    """launch/replay.toml copied to tmp_path, its recording path made absolute; returns a writer taking
    (old, new) line replacements."""
    text = (ROOT / "launch" / "replay.toml").read_text()
    recording = '"../recordings/samples/moving_bars.aedat4"'
    assert recording in text
    text = text.replace(recording, toml_value(str(ROOT / "recordings" / "samples" / "moving_bars.aedat4")))

    def write(old: str, new: str) -> Path:
        assert old in text
        path = tmp_path / "replay.toml"
        path.write_text(text.replace(old, new))
        return path

    return write


@pytest.mark.parametrize("old,new,expected", [
    ("window_us = 50000", "window_us = true", "[decoder] window_us: expected an integer, got true"),
    ("left = [1]", 'left = [1, "a"]', '[decoder] left[1]: must be an integer, got "a"'),
    ("target = [16, 12]", "target = { width = 16, height = 12 }",
     "[stages.pooling] target: must be [width, height], got { width = 16, height = 12 }"),
    ('mode = "paced"', "mode = 'turbo'", '[loop] mode: expected one of "live", "paced", "fast", got "turbo"'),
    ("vth = 48", "vth = -inf", "[network.params] vth: expected an integer in [0, 131071], got -inf"),
])
def test_launch_file_errors_quote_the_value_as_toml(replay_copy, old, new, expected):
    path = replay_copy(old, new)
    assert_one_line_error(cli("launch", str(path)), f"{path}: {expected}")


def test_launch_set_errors_quote_the_value_as_toml():
    run = cli("launch", "launch/replay.toml", "--set", "decoder.window_us=1.5e300")
    assert_one_line_error(run, "launch/replay.toml: [decoder] window_us: expected an integer, got 1.5e+300")
    run = cli("launch", "launch/replay.toml", "--set", f"decoder.window_us={'[' * 400}{']' * 400}")
    assert_one_line_error(run, "launch/replay.toml: [decoder] window_us: expected an integer, got [[[[")
    assert run.stderr.rstrip().endswith("[...") and len(run.stderr) < 2 * QUOTE_LIMIT


@pytest.mark.parametrize("config,assignment,expected", [
    ("train_yinyang.toml", "train.seed=true", "[train] seed: expected an integer in [0, 4294967295], got true"),
    ("train_yinyang.toml", "train.seed={ a = 'b' }",
     '[train] seed: expected an integer in [0, 4294967295], got { a = "b" }'),
    ("train_yinyang.toml", 'train.method="sgd"',
     '[train] method: expected one of: ann2snn, bptt, spiketime, stdp, got "sgd"'),
    ("train_yinyang.toml", "train.method=[1]",  # was TypeError: unhashable type, with a traceback
     "[train] method: expected one of: ann2snn, bptt, spiketime, stdp, got [1]"),
    ("train_nmnist_stdp.toml", 'input.polarity="both"', '[input] polarity: expected one of "split", "merge", got "both"'),
    ("train_nmnist_stdp.toml", 'stdp.rule="x0*q"', '[stdp] rule: rule "x0*q": unexpected character'),
])
def test_train_set_errors_quote_the_value_as_toml(tmp_path, config, assignment, expected):
    out = tmp_path / "model.npz"
    run = cli("train", f"launch/{config}", "--set", assignment, "--out", str(out))
    assert_one_line_error(run, f"launch/{config}: {expected}")
    assert not list(tmp_path.iterdir())
