"""Typed keys for launch files: each value is checked against a :class:`Key` and every rejection names
the file, the section, the key and what was expected, e.g.
``launch/replay.toml: [stages.noise] duration_us: expected a positive integer, got -5``. Values are quoted
as TOML (:func:`toml_value`: ``got true``, ``got "x"``), the way the user wrote them.
"""
from __future__ import annotations

import datetime
import inspect
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import tomllib

REQUIRED = object()


class LaunchError(ValueError):
    """A launch file (or an override) is invalid; the message names file, section and key."""


@dataclass(frozen=True)
class Key:
    """One launch-file key.

    kind: "int", "number", "str", "bool", "int_list", "number_list", "file" (a path to an existing file,
        relative to the launch file), "out_path" (a path to write, relative to the working directory) or
        "table_list" (a list of tables, e.g. ``[{type = "conv", channels = 8}, ...]``, checked by ``check``).
    default: the value when the key is absent (REQUIRED: the key must be given).
    low, high: inclusive bounds for numbers and list items (``low_open``: low is exclusive).
    choices: allowed string values.
    length: exact list length (0 = any non-empty length).
    help: one line with the unit.
    check: for "table_list": ``check(ctx, name, tables) -> value`` checks every table (raising
        ``ctx.fail``) and returns the checked value.
    """

    kind: str
    default: Any = REQUIRED
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple = ()
    length: int = 0
    help: str = ""
    check: Callable | None = None

    def expectation(self) -> str:
        if self.choices:
            return "one of " + ", ".join(toml_value(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a string"
        if self.kind == "file":
            return "a path to an existing file"
        if self.kind == "out_path":
            return "a file path to write"
        if self.kind == "table_list":
            return "a list of tables"
        noun = "integer" if self.kind in ("int", "int_list") else "number"
        if self.kind.endswith("_list"):
            count = f"a list of {self.length} " if self.length else "a non-empty list of "
            return f"{count}{noun}s{self._range_text()}"
        if self.low == 0 and self.high is None:
            if self.low_open:
                return f"a positive {noun}"
            return "an integer >= 0" if noun == "integer" else "a number >= 0"
        if self.low == 1 and self.high is None and noun == "integer":
            return "a positive integer"
        article = "an" if noun == "integer" else "a"
        return f"{article} {noun}{self._range_text()}"

    def _range_text(self) -> str:
        if self.low is None and self.high is None:
            return ""
        low = "-inf" if self.low is None else _num(self.low)
        high = "inf" if self.high is None else _num(self.high)
        left = "(" if self.low_open else "["
        return f" in {left}{low}, {high}]"


_NOUNS = {"int": ("an integer", "integers"), "float": ("a number", "numbers"), "bool": ("true or false", "booleans"),
          "str": ("a string", "strings"), "dict": ("a table", "tables")}


def annotation_expectation(annotation: str) -> str:
    """A parameter's Python annotation (as text: ``"int"``, ``"list[float] | None"``,
    ``"int | tuple[int, int] | None"``) in the words of :meth:`Key.expectation`: ``an integer``, ``a list of
    numbers``, ``an integer or a list of 2 integers``. ``X | None`` reads as X: None is a key left out,
    which TOML cannot write (:func:`default_text` says "optional"). ValueError for an annotation with no
    launch-file reading, so a new parameter typed that way fails ``spikeloop list``'s test, not a user."""
    choices = [part for part in _split_top(annotation, "|") if part != "None"]
    if not choices:
        raise ValueError(f"annotation {annotation!r} has no launch-file reading")
    return " or ".join(_annotation_words(part, annotation, plural=False) for part in choices)


def _split_top(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside brackets, parts stripped."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == separator and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def _annotation_words(text: str, whole: str, plural: bool) -> str:
    if text in _NOUNS:
        return _NOUNS[text][plural]
    if text == "list":
        return "lists" if plural else "a list"
    match = re.fullmatch(r"(list|tuple)\[(.*)\]", text)
    if match:
        items = _split_top(match[2], ",")
        article = "lists of " if plural else "a list of "
        if (match[1] == "list" and len(items) == 1) or (len(items) == 2 and items[1] == "..."):
            return article + _annotation_words(items[0], whole, plural=True)
        if match[1] == "tuple" and len(set(items)) == 1:
            return f"{article}{len(items)} " + _annotation_words(items[0], whole, plural=True)
    raise ValueError(f"annotation {whole!r} has no launch-file reading ({text!r})")


def default_text(default: Any, required: bool) -> str:
    """How ``spikeloop list`` states a key's default: ``required``, ``optional`` (the default is None: the
    key may be left out and has no value then) or ``default <TOML value>``."""
    if required:
        return "required"
    return "optional" if default is None else f"default {toml_value(default)}"


def key_text(expectation: str, default: str, help_text: str, unit: str = "") -> str:
    """One key as ``spikeloop list`` (and ``spikeloop motor --help``) describes it:
    ``<expectation> [(unit)], <default>[: help]``, e.g. ``an integer (px), default 0: ...``; ``default`` as
    :func:`default_text` writes it."""
    return f"{expectation}{f' ({unit})' if unit else ''}, {default}" + (f": {help_text}" if help_text else "")


def keyword_parameters(cls: type, skip: tuple[str, ...] = ()) -> dict[str, inspect.Parameter]:
    """The parameters of ``cls.__init__`` a launch-file table or ``--opt`` can set (a registry class: stage,
    decoder, motor driver): those passable by keyword, ``self`` and ``skip`` (what the caller fills itself, e.g.
    ``ids``) left out, in declaration order."""
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name: p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in ("self", *skip) and p.kind in named}


def signature_keys(cls: type, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """The keyword parameters of ``cls.__init__`` (a registry class: decoder, motor driver) as launch-file keys,
    ``{name: key_text(...)}``: the expectation from the annotation (:func:`annotation_expectation`), a
    parameter without a default ``required``, help (with its unit) from the class docstring's ``name: help``
    lines (:func:`parameter_help`). ``skip``: parameters the caller fills itself (e.g. ``ids``)."""
    helps = parameter_help(cls.__doc__)
    out = {}
    for name, p in keyword_parameters(cls, skip).items():
        kind = annotation_expectation(p.annotation if isinstance(p.annotation, str) else p.annotation.__name__)
        out[name] = key_text(kind, default_text(p.default, p.default is p.empty), helps.get(name, ""))
    return out


def parameter_mismatch(parameter: inspect.Parameter, value: Any) -> str | None:
    """``"expected <what>, got <TOML value>"`` when ``value`` does not fit a registry class's ``parameter``
    (stage, decoder, motor driver) by its annotation (``int``, ``float``, ``bool``, ``str``, ``list[...]``,
    ``X | None``: None cannot be written in TOML); an unannotated parameter (index lists, groups, names)
    takes a list. None when it fits: the class checks ranges itself; this refuses what it would silently
    coerce: ``true`` for a number (bool is an int in Python), ``""`` for an index list, a non-finite number."""
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        annotation = ""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    kinds = {part.strip() for part in text.split("|")} - {"None"} if text else set()
    if not kinds:
        expected, ok = "a list", isinstance(value, list)
    elif kinds == {"int"}:
        expected, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif kinds == {"float"}:
        expected = "a finite number"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kinds == {"bool"}:
        expected, ok = "true or false", isinstance(value, bool)
    elif kinds == {"str"}:
        expected, ok = "a non-empty string", isinstance(value, str) and bool(value)
    elif all(kind.startswith(("list", "tuple")) for kind in kinds):
        expected, ok = "a list", isinstance(value, list)
    else:
        return None
    return None if ok else f"expected {expected}, got {toml_value(value)}"


_PARAMETER_LINE = re.compile(r"(?P<names>[A-Za-z_]\w*(?:\s*/\s*[A-Za-z_]\w*)*): (?P<help>\S.*)")


def parameter_help(doc: str | None) -> dict[str, str]:
    """``{parameter: one line of help}`` from a docstring's parameter lines: a line ``name: help`` at the
    docstring's own indentation, continued on lines indented further (``a / b: help`` documents both); the
    continuation is joined into one line. Other lines are prose and are skipped."""
    out: dict[str, str] = {}
    current: list[str] | None = None
    for line in inspect.cleandoc(doc or "").splitlines():
        if current is not None and line[:1].isspace() and line.strip():
            current.append(line.strip())
            continue
        match = _PARAMETER_LINE.fullmatch(line)
        current = None
        if match:
            current = [match["help"].strip()]
            for name in re.split(r"\s*/\s*", match["names"]):
                out[name] = current
    return {name: " ".join(parts) for name, parts in out.items()}


def command_line_value(text: str) -> Any:
    """A value given on the command line (``--set``, ``--opt``) in TOML syntax, as a launch file writes it:
    ``4``, ``0x80``, ``6.5``, ``[7, 8]``, ``true``, ``"x"``; text that is not a TOML value is the string itself
    (``pwm``). ValueError for a value nested too deeply to read, or followed by more TOML (``2048\nx = 5``: the
    line after the value would be read as another key and dropped)."""
    try:
        document = tomllib.loads(f"v = {text.strip()}")
    except tomllib.TOMLDecodeError:
        return text.strip()
    except RecursionError:
        raise ValueError("value nested too deeply") from None
    if len(document) != 1:
        raise ValueError(f"expected one value, got more TOML after it: {printable(text.strip())}")
    return document["v"]


def printable(name: str) -> str:
    """A key or section name as a message shows it on one line: control characters (a TOML quoted key may
    hold a newline) escaped, as Python writes them."""
    text = str(name)
    return text if text.isprintable() else repr(text)[1:-1]


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
#: Characters of a value an error message quotes; a longer value is cut there and ends in "...".
QUOTE_LIMIT = 300


class _Members:
    """An array or table :func:`toml_value` is writing: its members still to come, and how it closes."""

    def __init__(self, members, table: bool):
        self.members, self.table, self.first = iter(members), table, True


def toml_value(value: Any, limit: int | None = QUOTE_LIMIT) -> str:
    """``value`` as a TOML file writes it, for messages that quote what the user wrote: ``true``, ``"x"``
    (escaped as a TOML basic string, one line), ``[1, "a"]``, ``{ a = 1 }``, floats exact (shortest
    round-trip digits; ``inf``, ``-inf``, ``nan``), dates and times in RFC 3339. numpy scalars and arrays
    are written as the numbers they hold; None (which TOML cannot write) as ``no value``; any other object
    (a Python caller's) as its repr. Text beyond ``limit`` characters (None: no limit) is cut and ends in
    ``...``; nesting of any depth is written without recursion, and only as much as the limit shows."""
    out: list[str] = []
    size = 0
    pending: list[Any] = [value]
    while pending and (limit is None or size <= limit):
        item = pending.pop()
        if isinstance(item, _Members):
            member = next(item.members, _Members)
            if member is _Members:
                text = ("{}" if item.first else " }") if item.table else "]"
            else:
                pending.append(item)
                if item.table:
                    key, member = member
                    text = ("{ " if item.first else ", ") + _toml_key(key, limit) + " = "
                else:
                    text = "" if item.first else ", "
                item.first = False
                pending.append(member)
        elif isinstance(item, Mapping):
            pending.append(_Members(item.items(), table=True))
            continue
        elif isinstance(item, (list, tuple)) or (isinstance(item, np.ndarray) and item.ndim > 0):
            pending.append(_Members(item, table=False))
            text = "["
        else:
            text = _toml_scalar(item, limit)
        out.append(text)
        size += len(text)
    text = "".join(out)
    return text if limit is None or (len(text) <= limit and not pending) else text[:limit] + "..."


def _toml_scalar(value: Any, limit: int | None) -> str:
    if value is None:
        return "no value"
    if isinstance(value, np.ndarray):  # 0-d
        value = value.item()
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, float):
        return float.__repr__(value)  # shortest digits that read back as the same float; inf, -inf, nan
    if isinstance(value, np.floating):
        return str(value)  # numpy's shortest digits at the value's own precision (float32 0.1 -> 0.1)
    if isinstance(value, str):
        return _toml_string(value if limit is None else value[:limit + 1])
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    return repr(value)


def _toml_string(text: str) -> str:
    """A TOML basic string: backslash, quote and every character that would not print on one line
    escaped (``\\n``, ``\\u00a0``)."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _toml_key(key: Any, limit: int | None) -> str:
    text = str(key) if limit is None else str(key)[:limit + 1]
    return text if _BARE_KEY.fullmatch(text) else _toml_string(text)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass
class Context:
    """Where a value came from: the launch file (for messages and relative paths) and the section name."""

    file: Path
    section: str
    display: str = ""

    def where(self, key: str | None = None) -> str:
        name = self.display or str(self.file)
        if key is None:
            return f"{name}: [{printable(self.section)}]"
        return f"{name}: [{printable(self.section)}] {printable(key)}"

    def fail(self, key: str | None, message: str) -> LaunchError:
        return LaunchError(f"{self.where(key)}: {message}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _in_range(spec: Key, value: float) -> bool:
    if spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low):
        return False
    return spec.high is None or value <= spec.high


def check_value(ctx: Context, name: str, spec: Key, value: Any) -> Any:
    """Return ``value`` converted to its kind, or raise LaunchError naming file, section, key and the
    expectation."""
    bad = ctx.fail(name, f"expected {spec.expectation()}, got {toml_value(value)}")
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind in ("str", "file", "out_path"):
        if not isinstance(value, str) or (kind != "str" and not value):
            raise bad
        if spec.choices and value not in spec.choices:
            raise bad
        if kind == "file":
            try:
                path = Path(value).expanduser()
                if not path.is_absolute():
                    path = (ctx.file.parent / path).resolve()
                found = path.is_file()
            except (OSError, ValueError, RuntimeError) as exc:  # too long a name, a NUL byte, ~nosuchuser
                raise ctx.fail(name, f"not a usable path ({exc})") from None
            if not found:
                raise ctx.fail(name, f"file not found: {path} (expected {spec.expectation()})")
            return path
        if kind == "out_path":
            try:
                if "\x00" in value:
                    raise ValueError("embedded null byte")
                return Path(value).expanduser()
            except (ValueError, RuntimeError) as exc:
                raise ctx.fail(name, f"not a usable path ({exc})") from None
        return value
    if kind in ("int", "number"):
        ok = _is_int(value) if kind == "int" else _is_number(value)
        if not ok or not _in_range(spec, value):
            raise bad
        return int(value) if kind == "int" else float(value)
    if kind in ("int_list", "number_list"):
        item_ok = _is_int if kind == "int_list" else _is_number
        if not isinstance(value, list) or not value or (spec.length and len(value) != spec.length):
            raise bad
        if not all(item_ok(v) and _in_range(spec, v) for v in value):
            raise bad
        return [int(v) if kind == "int_list" else float(v) for v in value]
    if kind == "table_list":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad
        return spec.check(ctx, name, value) if spec.check is not None else value
    raise AssertionError(f"unknown key kind {kind!r}")


def check_table(ctx: Context, table: Any, schema: Mapping[str, Key], ignore: tuple[str, ...] = ()) -> dict:
    """Check a whole table against ``schema``: unknown keys, missing required keys and every value.
    Keys in ``ignore`` (e.g. a ``type`` selector checked elsewhere) pass through untouched."""
    if not isinstance(table, dict):
        raise LaunchError(f"{ctx.where()}: expected a table, got {toml_value(table)}")
    unknown = [k for k in table if k not in schema and k not in ignore]
    if unknown:
        allowed = ", ".join(sorted(schema)) or "none"
        raise ctx.fail(unknown[0], f"unknown key (expected one of: {allowed})")
    out = {}
    for name, spec in schema.items():
        if name in table:
            out[name] = check_value(ctx, name, spec, table[name])
        elif spec.default is REQUIRED:
            raise ctx.fail(name, f"missing (expected {spec.expectation()})")
        else:
            out[name] = spec.default
    return out
