"""Argument checks shared by every configurable part: each error names the component, the parameter and
the accepted range, in the form ``"<component>: parameter '<name>' ..."`` that launch files rephrase with
file and section."""
from __future__ import annotations

import math
import numbers

from pipeline.core.schema import toml_value

#: Largest weight a vote table (a classifier's readout: output neuron -> its share of each class) may give: a
#: word's evidence, spike counts times votes summed over the outputs, then stays finite in float64 (a table
#: near 1e308 overflowed to inf, and the decision fell to the first class).
MAX_VOTE = 1e6


def check_int(stage: str, name: str, value, low: int | None = None, high: int | None = None) -> int:
    """Validate an integer parameter ``low <= value <= high``; the error names stage, parameter and range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{stage}: parameter '{name}' must be an integer, got {toml_value(value)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        raise ValueError(f"{stage}: parameter '{name}' = {value} is out of range (expected {lo} <= {name} <= {hi})")
    return value


def check_number(stage: str, name: str, value, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """Validate a real parameter in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{stage}: parameter '{name}' must be a number, got {toml_value(value)}")
    given, value = value, float(value)
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and value > high
    if bad_low or bad_high or not math.isfinite(value):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        op = "<" if low_open else "<="
        raise ValueError(f"{stage}: parameter '{name}' = {toml_value(given)} is out of range "
                         f"(expected {lo} {op} {name} <= {hi})")
    return value


def check_resolution(stage: str, width, height) -> tuple[int, int]:
    """Validate a sensor resolution (px): 1..32767 each (int16 coordinates)."""
    return check_int(stage, "width", width, 1, 32767), check_int(stage, "height", height, 1, 32767)
