"""Loihi sum-of-products learning rules: terms, a safe parser, and STDP as a ready rule.

A rule for a synaptic variable (``dw`` weight, ``dd`` delay tag ``tag_2``, ``dt`` tag ``tag_1``) is a
sum of products. Each product has

* one *dependency* that gates it per synapse and per learning epoch: ``x0`` (the pre-synaptic
  neuron spiked in the epoch), ``y0`` (the post-synaptic neuron spiked), or ``uk`` (every 2**k-th
  epoch),
* a scaling constant ``mantissa * 2**exponent`` (mantissa -8..7, exponent -7..8, as on Loihi),
* factors: traces ``x1 x2`` (pre) and ``y1 y2 y3`` (post), synaptic variables ``w d t``, further
  dependencies ``x0 y0`` (0/1), each optionally plus an integer constant, ``sgn(...)`` of a
  synaptic variable.

Traces are evaluated at the time the dependency names: at the pre spike time for ``x0``, the post
spike time for ``y0``, the end of the epoch for ``u``.

The string syntax is Lava's: ``"2^-2*x1*y0 - 2^-2*y1*x0"``, ``"(-2)*x0*y1 + 3*2^-1*y0*(x1+2)"``,
``"u0*sgn(w)*2^-3"``. Literals are integers, ``2^e`` or ``m*2^e``; every literal of a product is
folded into its scaling constant, as Lava does. Parsing is a small tokenizer + recursive descent
(no eval).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from pipeline.core.schema import toml_value

SYNAPTIC_NAMES = ("w", "d", "t")
DEPENDENCY_NAMES = ("x0", "y0", "u")
#: Factor variable codes used by the kernels (index = code).
FACTOR_CODES = ("x1", "x2", "y1", "y2", "y3", "w", "d", "t", "x0", "y0")
#: Bit width of each factor variable (Loihi: 7-bit traces, 9-bit signed synaptic variables,
#: 1-bit dependencies); a factor is clipped to [-2**width, 2**width - 1] before multiplying.
FACTOR_WIDTHS = np.array([7, 7, 7, 7, 7, 9, 9, 9, 1, 1], dtype=np.int64)
TARGETS = ("dw", "dd", "dt")
MANTISSA_RANGE = (-8, 7)
EXPONENT_RANGE = (-7, 8)
#: Loihi's trace impulse fraction has 8 bits (traces themselves are 7-bit, 0..127).
TRACE_FRACTION_BITS = 8


class RuleSyntaxError(ValueError):
    """A learning-rule string that cannot be parsed; the message names the position."""


@dataclass(frozen=True)
class Factor:
    """One factor of a product: ``var`` (+ ``const``), or ``sgn(var + const)`` if ``sgn``."""

    var: str
    const: int = 0
    sgn: bool = False

    def __post_init__(self) -> None:
        if self.var not in FACTOR_CODES:
            raise ValueError(f"unknown factor variable {self.var!r}; expected one of {FACTOR_CODES}")
        if self.sgn and self.var not in SYNAPTIC_NAMES:
            raise ValueError(f"sgn() applies to w, d or t only, not {self.var!r}")

    @property
    def code(self) -> int:
        return FACTOR_CODES.index(self.var)


@dataclass(frozen=True)
class Product:
    """``mantissa * 2**exponent * dependency * factor1 * factor2 ...``.

    ``decimate`` is k for a ``uk`` dependency (the product is active in epochs whose index is a
    multiple of 2**k), None otherwise.
    """

    dependency: str
    mantissa: int
    exponent: int
    factors: tuple[Factor, ...] = ()
    decimate: int | None = None

    def __post_init__(self) -> None:
        if self.dependency not in DEPENDENCY_NAMES:
            raise ValueError(f"unknown dependency {self.dependency!r}; expected x0, y0 or u")
        if (self.dependency == "u") != (self.decimate is not None):
            raise ValueError("a 'u' dependency needs a decimate exponent k (written uk), and only it")
        if not MANTISSA_RANGE[0] <= self.mantissa <= MANTISSA_RANGE[1]:
            raise ValueError(f"scaling mantissa {self.mantissa} outside {MANTISSA_RANGE}")
        if not EXPONENT_RANGE[0] <= self.exponent <= EXPONENT_RANGE[1]:
            raise ValueError(f"scaling exponent {self.exponent} outside {EXPONENT_RANGE}")

    @property
    def scale(self) -> float:
        return self.mantissa * 2.0 ** self.exponent


def _normalize_scale(mantissa: int, exponent: int, where: str) -> tuple[int, int]:
    """Fold an even mantissa into the exponent until it fits Loihi's 4-bit signed mantissa."""
    while abs(mantissa) > 7 and mantissa % 2 == 0 and exponent < 8:
        mantissa //= 2
        exponent += 1
    if not MANTISSA_RANGE[0] <= mantissa <= MANTISSA_RANGE[1]:
        raise RuleSyntaxError(f"{where}: scaling constant {mantissa}*2^{exponent} is not "
                              f"representable as m*2^e with m in {MANTISSA_RANGE}")
    if not EXPONENT_RANGE[0] <= exponent <= EXPONENT_RANGE[1]:
        raise RuleSyntaxError(f"{where}: scaling exponent {exponent} outside {EXPONENT_RANGE}")
    return mantissa, exponent


_TOKEN = re.compile(r"\s*(?:(\d+)|(sgn|x0|y0|u\d|x1|x2|y1|y2|y3|w|d|t)|([-+*^()]))")


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """Split a rule into (kind, text, position) tokens: kind is 'num', 'name' or 'op'."""
    tokens = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        m = _TOKEN.match(text, pos)
        if m is None:
            raise RuleSyntaxError(f"rule {toml_value(text)}: unexpected character {text[pos]!r} at position {pos}")
        kind = "num" if m.group(1) else ("name" if m.group(2) else "op")
        tokens.append((kind, m.group(m.lastindex), m.start(m.lastindex)))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent over: rule := ['+'|'-'] term (('+'|'-') term)*; term := atom ('*' atom)*."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _error(self, message: str) -> RuleSyntaxError:
        tok = self._peek()
        where = f"position {tok[2]}" if tok else "end of string"
        return RuleSyntaxError(f"rule {toml_value(self.text)}: {message} at {where}")

    def _take(self, value: str | None = None, kind: str | None = None) -> tuple[str, str, int]:
        tok = self._peek()
        if tok is None or (value is not None and tok[1] != value) or (kind is not None and tok[0] != kind):
            raise self._error(f"expected {value or kind}")
        self.i += 1
        return tok

    def parse(self) -> tuple[Product, ...]:
        if not self.tokens:
            raise RuleSyntaxError(f"rule {toml_value(self.text)} is empty")
        products = []
        sign = 1
        if self._peek()[1] in "+-":
            sign = -1 if self._take()[1] == "-" else 1
        products.append(self._term(sign))
        while self._peek() is not None:
            tok = self._peek()
            if tok[1] not in "+-":
                raise self._error("expected '+' or '-' between products")
            self.i += 1
            products.append(self._term(-1 if tok[1] == "-" else 1))
        return tuple(products)

    def _literal(self) -> tuple[int, int]:
        """NUMBER or 2^[+-]NUMBER -> (mantissa, exponent)."""
        _, digits, _ = self._take(kind="num")
        tok = self._peek()
        if tok is not None and tok[1] == "^":
            if digits != "2":
                raise self._error(f"only powers of 2 are allowed, not {digits}^")
            self.i += 1
            esign = 1
            if self._peek() is not None and self._peek()[1] in "+-":
                esign = -1 if self._take()[1] == "-" else 1
            return 1, esign * int(self._take(kind="num")[1])
        return int(digits), 0

    def _term(self, sign: int) -> Product:
        start = self._peek()
        if start is None:
            raise self._error("expected a product")
        mantissa, exponent = sign, 0
        dependency, decimate = None, None
        factors: list[Factor] = []
        while True:
            tok = self._peek()
            if tok is None:
                raise self._error("expected a factor")
            if tok[0] == "num":
                m, e = self._literal()
                mantissa, exponent = mantissa * m, exponent + e
            elif tok[1] == "sgn":
                self.i += 1
                self._take("(")
                var, const, s, lit = self._bracket_inner()
                if var is None or s < 0:
                    raise self._error("sgn() needs a non-negated w, d or t")
                factors.append(Factor(var, const, sgn=True))
            elif tok[1] == "(":
                self.i += 1
                var, const, s, lit = self._bracket_inner()
                if var is None:
                    mantissa, exponent = mantissa * lit[0], exponent + lit[1]
                else:
                    mantissa *= s
                    factors.append(Factor(var, s * const))
            elif tok[0] == "name":
                self.i += 1
                name = tok[1]
                if name in ("x0", "y0") or name.startswith("u"):
                    dep = "u" if name.startswith("u") else name
                    if dependency is None:
                        dependency = dep
                        decimate = int(name[1:]) if dep == "u" else None
                    elif dep == "u":
                        raise RuleSyntaxError(f"rule {toml_value(self.text)}: a second u dependency in one product "
                                              f"at position {tok[2]}")
                    else:
                        factors.append(Factor(dep))
                else:
                    factors.append(Factor(name))
            else:
                raise self._error(f"unexpected {tok[1]!r}")
            nxt = self._peek()
            if nxt is None or nxt[1] != "*":
                break
            self.i += 1
        where = f"rule {toml_value(self.text)}, product at position {start[2]}"
        if dependency is None:
            raise RuleSyntaxError(f"{where}: no dependency (x0, y0 or uk) in the product")
        mantissa, exponent = _normalize_scale(mantissa, exponent, where)
        return Product(dependency, mantissa, exponent, tuple(factors), decimate)

    def _bracket_inner(self) -> tuple[str | None, int, int, tuple[int, int]]:
        """Inside '(' ... ')': [sign] literal | [sign] var [(+|-) literal] | [sign] literal (+|-) var.

        Returns (var or None, signed constant, sign of the variable, (mantissa, exponent) of a lone
        literal). The caller moves a negative variable sign into the scaling constant:
        (-v + c) = -(v - c).
        """
        items: list[tuple[int, str, object]] = []
        sign = 1
        while True:
            tok = self._peek()
            if tok is None:
                raise self._error("missing ')'")
            if tok[1] in "+-":
                sign = -1 if tok[1] == "-" else 1
                self.i += 1
                tok = self._peek()
                if tok is None:
                    raise self._error("missing operand")
            if tok[0] == "num":
                m, e = self._literal()
                items.append((sign, "lit", (m, e)))
            elif tok[0] == "name" and tok[1] in FACTOR_CODES[:8]:
                self.i += 1
                items.append((sign, "var", tok[1]))
            else:
                raise self._error("expected a literal or a trace/synaptic variable inside brackets")
            sign = 1
            if self._peek() is None:
                raise self._error("missing ')'")
            if self._peek()[1] == ")":
                self.i += 1
                break
            if len(items) == 2 or self._peek()[1] not in "+-":
                raise self._error("brackets hold a literal, a variable, or variable +/- constant")
        if len(items) == 1:
            s, kind, value = items[0]
            if kind == "lit":
                return None, 0, 1, (s * value[0], value[1])
            return value, 0, s, (1, 0)
        kinds = {items[0][1], items[1][1]}
        if kinds != {"var", "lit"}:
            raise self._error("brackets hold one variable and one constant")
        var_item = items[0] if items[0][1] == "var" else items[1]
        lit_item = items[1] if items[0][1] == "var" else items[0]
        m, e = lit_item[2]
        if e < 0:
            raise self._error("a bracket constant must be an integer")
        return var_item[2], lit_item[0] * m * 2 ** e, var_item[0], (1, 0)


def parse_rule(text: str) -> tuple[Product, ...]:
    """Parse a Lava-syntax sum-of-products string into Products (raises RuleSyntaxError)."""
    return _Parser(text).parse()


def literal_from_float(value: float) -> tuple[int, int]:
    """Lava's float -> (mantissa, exponent): mantissa = max(int(|v|), 1), exponent = round(log2(rest)).

    This is how Lava's STDPLoihi turns learning_rate, A_plus, A_minus into literals (so 1.5 becomes
    2 and 0.3 becomes 2^-2, exactly as Lava does).
    """
    if value == 0:
        return 0, 0
    sign = 1 if value > 0 else -1
    mag = abs(float(value))
    mantissa = max(int(mag), 1)
    rest = mag / mantissa
    exponent = 0 if rest == 1 else int(np.round(np.log2(rest)))
    return sign * mantissa, exponent


@dataclass(frozen=True)
class TraceConfig:
    """Impulse (added on a spike, may be fractional: 8 fraction bits) and decay time constant
    tau (steps; 0 = the trace does not persist across steps)."""

    impulse: float = 0.0
    tau: float = 0.0

    def __post_init__(self) -> None:
        if self.impulse < 0 or self.tau < 0:
            raise ValueError(f"trace impulse and tau must be >= 0, got {self.impulse}, {self.tau}")

    @property
    def impulse_int(self) -> int:
        return int(math.floor(self.impulse))

    @property
    def impulse_frac(self) -> int:
        return int(np.round((self.impulse - math.floor(self.impulse)) * 2 ** TRACE_FRACTION_BITS))


@dataclass(frozen=True)
class LearningRule:
    """A Loihi learning rule: product series per target, trace configuration, epoch, seed.

    ``t_epoch`` is the learning epoch in steps (1..63 on Loihi); ``rng_seed`` seeds the
    stochastic rounding exactly as Lava's bit-approximate model does (None: a random seed).
    ``sign_mode`` bounds the learned weights: 'mixed' (-256..255, Lava LearningDense's default),
    'excitatory' (0..255) or 'inhibitory' (-255..0).

    A network projection with ``learning=rule`` is learned by the runtime through ``attach`` (see
    pipeline.snn.learning.engine); ``to_arrays``/``from_arrays`` store the rule in a network .npz.
    """

    dw: tuple[Product, ...] = ()
    dd: tuple[Product, ...] = ()
    dt: tuple[Product, ...] = ()
    x1: TraceConfig = TraceConfig()
    x2: TraceConfig = TraceConfig()
    y1: TraceConfig = TraceConfig()
    y2: TraceConfig = TraceConfig()
    y3: TraceConfig = TraceConfig()
    t_epoch: int = 1
    rng_seed: int | None = None
    sign_mode: str = "mixed"

    def __post_init__(self) -> None:
        if not (self.dw or self.dd or self.dt):
            raise ValueError("a learning rule needs at least one of dw, dd, dt")
        if not 1 <= int(self.t_epoch) <= 63:
            raise ValueError(f"t_epoch must be 1..63 steps (Loihi's epoch counter), got {self.t_epoch}")
        if self.sign_mode not in ("mixed", "excitatory", "inhibitory"):
            raise ValueError(f"sign_mode must be 'mixed', 'excitatory' or 'inhibitory', got {self.sign_mode!r}")
        decimates = {p.decimate for p in self.products() if p.decimate is not None}
        if len(decimates) > 1:
            raise ValueError(f"all uk dependencies must use the same k, got {sorted(decimates)}")

    @classmethod
    def from_strings(cls, dw: str | None = None, dd: str | None = None, dt: str | None = None,
                     x1_impulse: float = 0.0, x1_tau: float = 0.0, x2_impulse: float = 0.0,
                     x2_tau: float = 0.0, y1_impulse: float = 0.0, y1_tau: float = 0.0,
                     y2_impulse: float = 0.0, y2_tau: float = 0.0, y3_impulse: float = 0.0,
                     y3_tau: float = 0.0, t_epoch: int = 1, rng_seed: int | None = None,
                     sign_mode: str = "mixed") -> "LearningRule":
        """Build a rule from Lava-syntax strings (Lava's LoihiLearningRule arguments)."""
        return cls(dw=parse_rule(dw) if dw else (), dd=parse_rule(dd) if dd else (),
                   dt=parse_rule(dt) if dt else (),
                   x1=TraceConfig(x1_impulse, x1_tau), x2=TraceConfig(x2_impulse, x2_tau),
                   y1=TraceConfig(y1_impulse, y1_tau), y2=TraceConfig(y2_impulse, y2_tau),
                   y3=TraceConfig(y3_impulse, y3_tau), t_epoch=t_epoch, rng_seed=rng_seed,
                   sign_mode=sign_mode)

    def products(self) -> tuple[Product, ...]:
        return self.dw + self.dd + self.dt

    @property
    def decimate(self) -> int | None:
        for p in self.products():
            if p.decimate is not None:
                return p.decimate
        return None

    @property
    def x_traces(self) -> tuple[TraceConfig, TraceConfig]:
        return self.x1, self.x2

    @property
    def y_traces(self) -> tuple[TraceConfig, TraceConfig, TraceConfig]:
        return self.y1, self.y2, self.y3

    def uses_tags(self) -> bool:
        """True if the rule learns or reads the tags d / t (they then need per-synapse storage)."""
        return bool(self.dd or self.dt) or any(f.var in ("d", "t") for p in self.products() for f in p.factors)

    # ------------------------------------------------------------------ network file storage
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (no pickle) for Network.save: one row per product, one per factor."""
        rows, factors = [], []
        for target in TARGETS:
            for p in getattr(self, target):
                rows.append((TARGETS.index(target), DEPENDENCY_NAMES.index(p.dependency), p.mantissa, p.exponent,
                             -1 if p.decimate is None else p.decimate, len(p.factors)))
                factors.extend((f.code, f.const, int(f.sgn)) for f in p.factors)
        traces = [(c.impulse, c.tau) for c in (self.x1, self.x2, self.y1, self.y2, self.y3)]
        return {"products": np.array(rows, np.int64).reshape(-1, 6),
                "factors": np.array(factors, np.int64).reshape(-1, 3),
                "traces": np.array(traces, np.float64),
                "t_epoch": np.array(int(self.t_epoch)),
                "rng_seed": np.array(-1 if self.rng_seed is None else int(self.rng_seed), np.int64),
                "sign_mode": np.array(self.sign_mode)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "LearningRule":
        """Inverse of to_arrays; ValueError names the missing or malformed key."""
        for key in ("products", "factors", "traces", "t_epoch", "rng_seed", "sign_mode"):
            if key not in arrays:
                raise ValueError(f"learning rule arrays: missing key {key!r}")
        rows = np.asarray(arrays["products"]).reshape(-1, 6)
        factors = np.asarray(arrays["factors"]).reshape(-1, 3)
        traces = np.asarray(arrays["traces"], np.float64)
        if traces.shape != (5, 2) or int(rows[:, 5].sum()) != len(factors):
            raise ValueError("learning rule arrays: 'traces' must be (5, 2) and 'factors' match the products")
        by_target: dict[str, list[Product]] = {t: [] for t in TARGETS}
        f = 0
        for target, dep, mantissa, exponent, decimate, n_factors in rows.tolist():
            fs = tuple(Factor(FACTOR_CODES[c], int(k), bool(sg)) for c, k, sg in factors[f:f + n_factors].tolist())
            f += n_factors
            by_target[TARGETS[target]].append(Product(DEPENDENCY_NAMES[dep], mantissa, exponent, fs,
                                                      None if decimate < 0 else decimate))
        seed = int(arrays["rng_seed"])
        return cls(dw=tuple(by_target["dw"]), dd=tuple(by_target["dd"]), dt=tuple(by_target["dt"]),
                   x1=TraceConfig(*traces[0]), x2=TraceConfig(*traces[1]), y1=TraceConfig(*traces[2]),
                   y2=TraceConfig(*traces[3]), y3=TraceConfig(*traces[4]), t_epoch=int(arrays["t_epoch"]),
                   rng_seed=None if seed < 0 else seed, sign_mode=str(arrays["sign_mode"]))


def stdp_loihi(learning_rate: float, A_plus: float, A_minus: float, tau_plus: float, tau_minus: float,
               t_epoch: int = 1, rng_seed: int | None = None, x1_impulse: float = 16,
               y1_impulse: float = 16) -> LearningRule:
    """Pair-based STDP exactly as Lava's ``STDPLoihi``.

    ``dw = lr * A_minus * x0 * y1 + lr * A_plus * y0 * x1`` with x1 (tau_plus) the pre trace and y1
    (tau_minus) the post trace; A_minus < 0 gives depression when the post neuron fired first.
    Constants are turned into m*2^e literals the way Lava does (see literal_from_float).
    """
    lr, ap, am = (literal_from_float(v) for v in (learning_rate, A_plus, A_minus))
    products = []
    for (a_m, a_e), dep, trace in ((am, "x0", "y1"), (ap, "y0", "x1")):
        where = f"STDPLoihi term {dep}*{trace}"
        m, e = _normalize_scale(lr[0] * a_m, lr[1] + a_e, where)
        products.append(Product(dep, m, e, (Factor(trace),)))
    return LearningRule(dw=tuple(products), x1=TraceConfig(x1_impulse, tau_plus),
                        y1=TraceConfig(y1_impulse, tau_minus), t_epoch=t_epoch, rng_seed=rng_seed)


#: Learning-rule classes a network file may name (``Network.save`` stores the class name, ``Network.load``
#: looks it up here). A new rule class (with ``to_arrays`` and ``from_arrays``) is added here
#: under its class name.
RULE_CLASSES: dict[str, type] = {"LearningRule": LearningRule}
