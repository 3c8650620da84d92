"""Spiking network description: LIF populations, projections, one input port.

A :class:`Network` is a value: frozen dataclasses all the way down, arrays copied on construction and
held read-only, checked when constructed (a ValueError names the population or projection and the
parameter). Change one with :func:`dataclasses.replace` or the helpers
:meth:`Network.with_population` / :meth:`Network.with_projection`; a runtime built from a network
copies what it needs, so a changed network needs a new ``build()``. It holds

* ``n_inputs`` input axons (the input port; per step the caller names the active ones),
* :class:`Population` objects: CUBA LIF compartments described either with Loihi integer
  parameters (:class:`LoihiLIF`, runnable on both backends) or with float time constants
  (:class:`FloatLIF`, float backend only; :func:`pipeline.snn.convert.to_loihi` converts),
* projections (:class:`Dense`, :class:`Sparse`, :class:`Conv2D`) from ``"input"`` or a population to
  a population (source == target is a recurrent projection), with Loihi weight exponent, weight
  precision, synaptic delays (0-62 steps, scalar or per synapse) and an optional learning rule.

Step semantics (both backends, Lava's bit-accurate order): a spike of a source at step ``t`` reaches
the target's synaptic input at step ``t + 1 + delay``. Population order does not matter.

Weight matrices are given target-major like Lava's Dense: ``weights[post, pre]``. Neuron indices of a
2-D event grid of shape (C, H, W) are ``(c * H + y) * W + x``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.core.npz import NpzError, load_npz
from pipeline.snn.learning.rule import RULE_CLASSES
from pipeline.snn.model import InputSpec, Readout

INPUT = "input"
MAX_DELAY = 62
FORMAT_VERSION = 1
#: Most inputs a network file may declare (a runtime allocates per input): 2^24, 9x the grid of a 1280x720 event
#: camera with both polarities. A population's size is bounded by the per-neuron arrays the file stores.
MAX_FILE_INPUTS = 1 << 24
#: Most synapses a Conv2D may expand to (every output position x kernel tap x channel pair, before the taps
#: that fall outside the input are dropped): 2^25, the launch builders' synapse budget. A file states only the
#: kernel and the grid, so without it a few bytes could ask for terabytes when the network is built.
MAX_CONV_SYNAPSES = 1 << 25
LAYOUTS = ("chw", "xyc")

_LOIHI_RANGES = {
    "du": (0, 4095),
    "dv": (0, 4095),
    "vth": (0, 2**17 - 1),
    "bias_mant": (-(2**12), 2**12 - 1),
    "bias_exp": (-8, 7),
    "refractory": (0, 255),
}
_FLOAT_FIELDS = ("tau_syn_ms", "tau_mem_ms", "threshold", "bias", "refractory_ms")


def frozen_array(value, dtype=None) -> np.ndarray:
    """``value`` as a read-only array that owns its data (copied unless it is one already)."""
    array = np.asarray(value, dtype=dtype)
    if array.base is not None or (array is value and array.flags.writeable):
        array = array.copy()
    array.flags.writeable = False
    return array


def _frozen_value(value):
    """A scalar stays a scalar (a 0-d array becomes one); anything array-like becomes a frozen array."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    if np.ndim(value) == 0:
        return value
    return frozen_array(value)


def _freeze_fields(instance, names) -> None:
    for name in names:
        object.__setattr__(instance, name, _frozen_value(getattr(instance, name)))


def _fail(owner: str, parameter: str, message: str) -> ValueError:
    return ValueError(f"{owner}: parameter {parameter!r} {message}")


def _int_array(owner: str, parameter: str, value, size: int, low: int, high: int) -> np.ndarray:
    """``value`` (scalar or (size,)) as an int64 (size,) array, every element in [low, high]."""
    array = np.asarray(value)
    if array.dtype.kind not in "iub":
        if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            array = array.astype(np.int64)
        else:
            raise _fail(owner, parameter, f"must be an integer (scalar or ({size},) array), got dtype {array.dtype}")
    if array.ndim == 0:
        array = np.full(size, int(array), dtype=np.int64)
    elif array.shape != (size,):
        raise _fail(owner, parameter, f"must be a scalar or have shape ({size},), got shape {array.shape}")
    array = array.astype(np.int64)
    if array.size and (array.min() < low or array.max() > high):
        bad = array[(array < low) | (array > high)][0]
        raise _fail(owner, parameter, f"must be in [{low}, {high}], got {int(bad)}")
    return array


def _float_array(owner: str, parameter: str, value, size: int, low: float, allow_inf: bool = False) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(size, float(array))
    elif array.shape != (size,):
        raise _fail(owner, parameter, f"must be a scalar or have shape ({size},), got shape {array.shape}")
    finite_ok = np.isfinite(array) | (allow_inf & np.isposinf(array))
    if not np.all(finite_ok) or np.any(array < low):
        bad = array[~finite_ok | (array < low)][0]
        raise _fail(owner, parameter, f"must be >= {low}{' (inf allowed)' if allow_inf else ''} and not NaN, got {bad}")
    return array


@dataclass(frozen=True, eq=False)
class LoihiLIF:
    """Loihi CUBA LIF integer parameters (scalars or (size,) arrays; arrays are held read-only).

    du, dv: 12-bit decays of current u and voltage v (u *= (4095 - du) / 4096, v *= (4096 - dv) / 4096);
    vth: 17-bit threshold mantissa (spike when v > vth << 6); bias = bias_mant << bias_exp (13-bit
    signed mantissa, 3-bit signed exponent), added to v every step; refractory: steps (8 bits) after a
    spike during which v stays 0 (Loihi 2; Lava's CPU LIF has none: 0). Ranges are checked by the
    :class:`Population` that holds the parameters (its error names the population).
    """

    du: object = 0
    dv: object = 0
    vth: object = 10
    bias_mant: object = 0
    bias_exp: object = 0
    refractory: object = 0

    def __post_init__(self) -> None:
        _freeze_fields(self, _LOIHI_RANGES)

    def arrays(self, owner: str, size: int) -> dict[str, np.ndarray]:
        """Validated int64 (size,) arrays by parameter name; ValueError names owner and parameter."""
        return {name: _int_array(owner, name, getattr(self, name), size, *_LOIHI_RANGES[name]) for name in _LOIHI_RANGES}


@dataclass(frozen=True, eq=False)
class FloatLIF:
    """Float CUBA LIF: time constants in ms, threshold and bias in the units of the weights.

    Per step of dt ms: u = u * exp(-dt / tau_syn_ms) + sum of weights of spiking inputs;
    v = v * exp(-dt / tau_mem_ms) + u + bias; spike when v > threshold, then v = 0 and v is held at 0
    for refractory_ms. tau_syn_ms = 0 means no synaptic filtering; tau_mem_ms = inf means no leak.
    """

    tau_syn_ms: object = 5.0
    tau_mem_ms: object = 20.0
    threshold: object = 1.0
    bias: object = 0.0
    refractory_ms: object = 0.0

    def __post_init__(self) -> None:
        _freeze_fields(self, _FLOAT_FIELDS)

    def arrays(self, owner: str, size: int) -> dict[str, np.ndarray]:
        """Validated float64 (size,) arrays by parameter name."""
        arrays = {
            "tau_syn_ms": _float_array(owner, "tau_syn_ms", self.tau_syn_ms, size, 0.0, allow_inf=True),
            "tau_mem_ms": _float_array(owner, "tau_mem_ms", self.tau_mem_ms, size, 0.0, allow_inf=True),
            "threshold": _float_array(owner, "threshold", self.threshold, size, 0.0),
            "bias": _float_array(owner, "bias", self.bias, size, -np.inf),
            "refractory_ms": _float_array(owner, "refractory_ms", self.refractory_ms, size, 0.0),
        }
        if np.any(arrays["tau_mem_ms"] == 0):
            raise _fail(owner, "tau_mem_ms", "must be > 0 (inf for no leak), got 0")
        if np.any(arrays["threshold"] == 0):
            raise _fail(owner, "threshold", "must be > 0, got 0")
        return arrays


@dataclass(frozen=True, eq=False)
class Population:
    """``size`` LIF compartments. u and v are readable from a runtime only where probed."""

    name: str
    size: int
    neuron: LoihiLIF | FloatLIF = field(default_factory=LoihiLIF)
    probe_u: bool = False
    probe_v: bool = False

    def __post_init__(self) -> None:
        owner = f"population {self.name!r}"
        if not isinstance(self.name, str) or not self.name or self.name == INPUT:
            raise ValueError(f"{owner}: name must be a non-empty string other than {INPUT!r}")
        if isinstance(self.size, bool) or int(self.size) != self.size or self.size < 1:
            raise _fail(owner, "size", f"must be a positive integer, got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "probe_u", bool(self.probe_u))
        object.__setattr__(self, "probe_v", bool(self.probe_v))
        if not isinstance(self.neuron, (LoihiLIF, FloatLIF)):
            raise _fail(owner, "neuron", f"must be LoihiLIF or FloatLIF, got {type(self.neuron).__name__}")
        self.neuron.arrays(owner, self.size)


@dataclass(frozen=True, eq=False, kw_only=True)
class Projection:
    """Common projection fields (every kind is a frozen dataclass; arrays are held read-only).

    weight_exp: the summed input of this projection is scaled by 2**weight_exp (Loihi -8..7);
    num_weight_bits: weight precision 1-8 (Lava's Dense truncation, see pipeline.snn.weights);
    prepare_weights: False uses the integer weights exactly as given on the loihi backend (no 8-bit
    clip, no low-bit truncation; Lava's Conv and netx conv layers), only weight_exp applies;
    num_message_bits: 0 for binary spikes, 1-24 for graded input spikes (projections from the input
    port only): a spike with payload p adds p * weight (Lava's Dense num_message_bits);
    delay: extra steps (0-62) on top of the one-step Dense hop, scalar or one per synapse
    (shape of ``weights``); learning: a rule from pipeline.snn.learning.rule (saved with the network
    when its class is in ``RULE_CLASSES``), an object with ``attach()``, or None.

    A projection checks what it can on its own when constructed; the sizes of its source and target
    are checked by the :class:`Network` that holds it (:meth:`check_sizes`).
    """

    name: str
    source: str
    target: str
    weight_exp: int = 0
    num_weight_bits: int = 8
    delay: object = 0
    learning: object | None = None
    prepare_weights: bool = True
    num_message_bits: int = 0

    def synapses(self, n_pre: int, n_post: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Input-major CSR: indptr (n_pre + 1,) int64, post (nnz,) int32, weights (nnz,), delays (nnz,) uint8."""
        raise NotImplementedError

    def dense_weights(self, n_pre: int, n_post: int) -> np.ndarray:
        """The (n_post, n_pre) weight matrix this projection implies (zeros where no synapse)."""
        indptr, post, weights, _ = self.synapses(n_pre, n_post)
        matrix = np.zeros((n_post, n_pre), dtype=weights.dtype)
        pre = np.repeat(np.arange(n_pre), np.diff(indptr))
        np.add.at(matrix, (post, pre), weights)
        return matrix

    def owner(self) -> str:
        return f"projection {self.name!r}"

    def _check_common(self, n_synapses_shape: tuple[int, ...]) -> None:
        """Check and freeze the common fields; ``n_synapses_shape`` is the shape a per-synapse delay must have."""
        owner = self.owner()
        for name in ("name", "source", "target"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise _fail(owner, name, f"must be a non-empty string, got {getattr(self, name)!r}")
        if isinstance(self.weight_exp, bool) or int(self.weight_exp) != self.weight_exp or not -8 <= self.weight_exp <= 7:
            raise _fail(owner, "weight_exp", f"must be an integer in [-8, 7], got {self.weight_exp!r}")
        if int(self.num_weight_bits) != self.num_weight_bits or not 1 <= self.num_weight_bits <= 8:
            raise _fail(owner, "num_weight_bits", f"must be an integer in [1, 8], got {self.num_weight_bits!r}")
        object.__setattr__(self, "weight_exp", int(self.weight_exp))
        object.__setattr__(self, "num_weight_bits", int(self.num_weight_bits))
        object.__setattr__(self, "prepare_weights", bool(self.prepare_weights))
        if isinstance(self.num_message_bits, bool) or int(self.num_message_bits) != self.num_message_bits \
                or not 0 <= self.num_message_bits <= 24:
            raise _fail(owner, "num_message_bits", f"must be an integer in [0, 24], got {self.num_message_bits!r}")
        object.__setattr__(self, "num_message_bits", int(self.num_message_bits))
        if self.num_message_bits and self.source != INPUT:
            raise _fail(owner, "num_message_bits", f"graded spikes come only from {INPUT!r}, got source {self.source!r}")
        delay = np.asarray(self.delay)
        if delay.dtype.kind not in "iu":
            raise _fail(owner, "delay", f"must be integer steps, got dtype {delay.dtype}")
        if delay.ndim and delay.shape != n_synapses_shape:
            raise _fail(owner, "delay", f"must be a scalar or have the weights' shape {n_synapses_shape}, got {delay.shape}")
        if delay.size and (delay.min() < 0 or delay.max() > MAX_DELAY):
            raise _fail(owner, "delay", f"must be in [0, {MAX_DELAY}] steps, got {int(delay.min() if delay.min() < 0 else delay.max())}")
        object.__setattr__(self, "delay", int(delay) if delay.ndim == 0 else frozen_array(delay))

    def max_delay(self) -> int:
        return int(np.max(self.delay)) if np.size(self.delay) else 0

    def check_sizes(self, n_pre: int, n_post: int) -> None:
        """ValueError unless this projection fits a source of ``n_pre`` and a target of ``n_post`` neurons."""
        raise NotImplementedError


def _check_weights(owner: str, weights: np.ndarray, parameter: str = "weights") -> None:
    if weights.dtype.kind not in "iuf":
        raise _fail(owner, parameter, f"must be numeric, got dtype {weights.dtype}")
    if weights.dtype.kind == "f" and not np.all(np.isfinite(weights)):
        raise _fail(owner, parameter, "contains NaN or inf")


@dataclass(frozen=True, eq=False, kw_only=True)
class Dense(Projection):
    """All-to-all projection; weights (n_post, n_pre) like Lava's Dense."""

    weights: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", frozen_array(self.weights))
        if self.weights.ndim != 2:
            raise _fail(self.owner(), "weights", f"must be a (n_post, n_pre) matrix, got shape {self.weights.shape}")
        _check_weights(self.owner(), self.weights)
        self._check_common(self.weights.shape)

    def check_sizes(self, n_pre: int, n_post: int) -> None:
        if self.weights.shape != (n_post, n_pre):
            raise _fail(self.owner(), "weights", f"must have shape {(n_post, n_pre)}, got {self.weights.shape}")

    def synapses(self, n_pre, n_post):
        weights_io = np.ascontiguousarray(self.weights.T)
        indptr = np.arange(n_pre + 1, dtype=np.int64) * n_post
        post = np.tile(np.arange(n_post, dtype=np.int32), n_pre)
        delays = np.broadcast_to(np.asarray(self.delay), (n_post, n_pre)).T.astype(np.uint8).ravel()
        return indptr, post, weights_io.ravel(), delays

    def dense_weights(self, n_pre, n_post):
        return self.weights


@dataclass(frozen=True, eq=False, kw_only=True)
class Sparse(Projection):
    """Sparse projection in CSR over presynaptic neurons: the synapses of pre ``i`` are
    ``indices[indptr[i]:indptr[i+1]]`` (post neurons) with ``weights`` (and ``delay``) alike."""

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray

    @classmethod
    def from_dense(cls, weights: np.ndarray, **fields) -> Sparse:
        """Keep the nonzero entries of a (n_post, n_pre) matrix."""
        weights_io = np.asarray(weights).T
        pre, post = np.nonzero(weights_io)
        indptr = np.zeros(weights_io.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(pre, minlength=weights_io.shape[0]), out=indptr[1:])
        return cls(indptr=indptr, indices=post.astype(np.int32), weights=weights_io[pre, post], **fields)

    def __post_init__(self) -> None:
        owner = self.owner()
        for name in ("indptr", "indices", "weights"):
            object.__setattr__(self, name, frozen_array(getattr(self, name)))
        indptr, indices = self.indptr, self.indices
        if indptr.ndim != 1 or indptr.size < 1 or indptr.dtype.kind not in "iu":
            raise _fail(owner, "indptr", f"must be a 1-D integer array of n_pre + 1 offsets, got {indptr.dtype} {indptr.shape}")
        nnz = int(indptr[-1])
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise _fail(owner, "indptr", "must start at 0 and be non-decreasing")
        if indices.shape != (nnz,) or indices.dtype.kind not in "iu":
            raise _fail(owner, "indices", f"must be an integer array of shape ({nnz},), got {indices.dtype} {indices.shape}")
        if nnz and indices.min() < 0:
            raise _fail(owner, "indices", "must be non-negative post-neuron indices")
        if self.weights.shape != (nnz,):
            raise _fail(owner, "weights", f"must have shape ({nnz},), got {self.weights.shape}")
        _check_weights(owner, self.weights)
        self._check_common((nnz,))

    def check_sizes(self, n_pre: int, n_post: int) -> None:
        owner = self.owner()
        if self.indptr.shape != (n_pre + 1,):
            raise _fail(owner, "indptr", f"must have shape ({n_pre + 1},) for a source of {n_pre}, got {self.indptr.shape}")
        if self.indices.size and self.indices.max() >= n_post:
            raise _fail(owner, "indices", f"must be post-neuron indices in [0, {n_post})")

    def synapses(self, n_pre, n_post):
        nnz = int(self.indptr[-1])
        delays = np.broadcast_to(np.asarray(self.delay), (nnz,)).astype(np.uint8)
        return self.indptr.astype(np.int64), self.indices.astype(np.int32), self.weights, delays


@dataclass(frozen=True, eq=False, kw_only=True)
class Conv2D(Projection):
    """2-D convolution over an event grid (cross-correlation, like torch.nn.Conv2d).

    kernel (out_channels, in_channels / groups, kh, kw); in_shape (C, H, W) of the source; stride,
    padding and dilation (rows, cols); groups splits the channels as torch does. The target must have
    out_channels * OH * OW neurons, OH = (H + 2 ph - dh (kh - 1) - 1) // sh + 1. Synapses are stored
    explicitly, as Loihi's synaptic memory does. ``delay`` must be a scalar.
    """

    kernel: np.ndarray
    in_shape: tuple[int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        owner = self.owner()
        object.__setattr__(self, "kernel", frozen_array(self.kernel))
        for name in ("in_shape", "stride", "padding", "dilation"):
            object.__setattr__(self, name, tuple(int(s) for s in getattr(self, name)))
        if isinstance(self.groups, bool) or int(self.groups) != self.groups or self.groups < 1:
            raise _fail(owner, "groups", f"must be a positive integer, got {self.groups!r}")
        object.__setattr__(self, "groups", int(self.groups))
        if self.kernel.ndim != 4:
            raise _fail(owner, "kernel", f"must have shape (out_channels, in_channels / groups, kh, kw), got {self.kernel.shape}")
        _check_weights(owner, self.kernel, "kernel")
        if len(self.in_shape) != 3 or min(self.in_shape) < 1:
            raise _fail(owner, "in_shape", f"must be (C, H, W) positive, got {self.in_shape}")
        if self.in_shape[0] % self.groups or self.kernel.shape[0] % self.groups:
            raise _fail(owner, "groups", f"{self.groups} must divide the input channels {self.in_shape[0]} and "
                                         f"the output channels {self.kernel.shape[0]}")
        if self.kernel.shape[1] * self.groups != self.in_shape[0]:
            raise _fail(owner, "kernel", f"has {self.kernel.shape[1]} input channels per group, in_shape has "
                                         f"{self.in_shape[0]} in {self.groups} group(s)")
        if len(self.dilation) != 2 or min(self.dilation) < 1:
            raise _fail(owner, "dilation", f"must be two positive integers, got {self.dilation}")
        if len(self.stride) != 2 or min(self.stride) < 1:
            raise _fail(owner, "stride", f"must be two positive integers, got {self.stride}")
        if len(self.padding) != 2 or min(self.padding) < 0:
            raise _fail(owner, "padding", f"must be two non-negative integers, got {self.padding}")
        if min(self.out_shape()) < 1:
            raise _fail(owner, "kernel", f"gives an empty output grid {self.out_shape()} on in_shape {self.in_shape}")
        expanded = math.prod(self.kernel.shape) * math.prod(self.out_shape()[1:])
        if expanded > MAX_CONV_SYNAPSES:
            raise _fail(owner, "kernel", f"{self.kernel.shape} over an output grid {self.out_shape()} expands to "
                                         f"{expanded:,} synapses, more than {MAX_CONV_SYNAPSES:,}")
        if np.ndim(self.delay) != 0:
            raise _fail(owner, "delay", "must be a scalar for Conv2D")
        self._check_common(())

    def out_shape(self) -> tuple[int, int, int]:
        c_out, _, kh, kw = np.shape(self.kernel)
        _, h, w = self.in_shape
        dh, dw = self.dilation
        return (c_out, (h + 2 * self.padding[0] - dh * (kh - 1) - 1) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - dw * (kw - 1) - 1) // self.stride[1] + 1)

    def check_sizes(self, n_pre: int, n_post: int) -> None:
        owner = self.owner()
        if int(np.prod(self.in_shape)) != n_pre:
            raise _fail(owner, "in_shape", f"{self.in_shape} has {int(np.prod(self.in_shape))} neurons but the source has {n_pre}")
        out = self.out_shape()
        if int(np.prod(out)) != n_post:
            raise _fail(owner, "kernel", f"output grid {out} ({int(np.prod(out))} neurons) does not match the target's {n_post} neurons")

    def synapses(self, n_pre, n_post):
        c_out, c_group, kh, kw = self.kernel.shape
        _, h, w = self.in_shape
        _, oh, ow = self.out_shape()
        sh, sw = self.stride
        ph, pw = self.padding
        dh, dw = self.dilation
        # Every (output position, kernel tap, channel pair) that lands inside the input grid.
        co, ci, ky, kx, oy, ox = np.meshgrid(np.arange(c_out), np.arange(c_group), np.arange(kh), np.arange(kw),
                                             np.arange(oh), np.arange(ow), indexing="ij")
        iy = oy * sh - ph + dh * ky
        ix = ox * sw - pw + dw * kx
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        channel = co // (c_out // self.groups) * c_group + ci
        pre = ((channel * h + iy) * w + ix)[inside]
        post = ((co * oh + oy) * ow + ox)[inside]
        weights = self.kernel[co[inside], ci[inside], ky[inside], kx[inside]]
        order = np.lexsort((post, pre))
        pre, post, weights = pre[order], post[order], weights[order]
        indptr = np.zeros(n_pre + 1, dtype=np.int64)
        np.cumsum(np.bincount(pre, minlength=n_pre), out=indptr[1:])
        delays = np.full(post.size, int(self.delay), dtype=np.uint8)
        return indptr, post.astype(np.int32), weights, delays


PROJECTION_KINDS = {"dense": Dense, "sparse": Sparse, "conv2d": Conv2D}


@dataclass(frozen=True, eq=False)
class Network:
    """Input port + populations + projections. ``output`` names the output population (default: last).

    ``populations`` and ``projections`` are held as tuples (lists are accepted). Construction checks
    the whole description (:meth:`validate`).
    """

    n_inputs: int
    populations: tuple[Population, ...] = ()
    projections: tuple[Projection, ...] = ()
    output: str | None = None
    dt_ms: float = 1.0
    input_shape: tuple[int, int, int] | None = None
    #: How grid-shaped arrays (input spikes, traces of populations on a (C, H, W) grid) are presented
    #: outside the runtime: "chw" (C, H, W) or "xyc" (X=W, Y=H, C), lava-dl's layout. Neuron order
    #: inside the network is always (C, H, W).
    layout: str = "chw"
    #: How a recording becomes input, for classifiers (``spikeloop evaluate``, classify launch files).
    input_spec: InputSpec | None = None
    #: How the output population's activity becomes a class, for classifiers.
    readout: Readout | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "populations", tuple(self.populations))
        object.__setattr__(self, "projections", tuple(self.projections))
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        self.validate()

    @property
    def n_outputs(self) -> int:
        return self.population(self.output_name).size

    @property
    def output_name(self) -> str:
        if self.output is not None:
            return self.output
        if not self.populations:
            raise ValueError("network has no populations")
        return self.populations[-1].name

    def population(self, name: str) -> Population:
        for population in self.populations:
            if population.name == name:
                return population
        raise ValueError(f"no population named {name!r} (have {[p.name for p in self.populations]})")

    def projection(self, name: str) -> Projection:
        for projection in self.projections:
            if projection.name == name:
                return projection
        raise ValueError(f"no projection named {name!r} (have {[p.name for p in self.projections]})")

    def source_size(self, name: str) -> int:
        return int(self.n_inputs) if name == INPUT else int(self.population(name).size)

    @property
    def is_float(self) -> bool:
        """True when any population is FloatLIF (runnable on the float backend only)."""
        return any(isinstance(p.neuron, FloatLIF) for p in self.populations)

    # ------------------------------------------------------------------ changed copies
    def with_population(self, name: str, **changes) -> Network:
        """This network with population ``name`` replaced by ``dataclasses.replace(population, **changes)``."""
        target = self.population(name)
        return dataclasses.replace(self, populations=tuple(
            dataclasses.replace(p, **changes) if p is target else p for p in self.populations))

    def with_projection(self, name: str, **changes) -> Network:
        """This network with projection ``name`` replaced by ``dataclasses.replace(projection, **changes)``."""
        target = self.projection(name)
        return dataclasses.replace(self, projections=tuple(
            dataclasses.replace(p, **changes) if p is target else p for p in self.projections))

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check every parameter; ValueError names the population/projection and the parameter.

        Runs on construction (a Network that exists is valid); the parts check themselves first.
        """
        if isinstance(self.n_inputs, bool) or int(self.n_inputs) != self.n_inputs or self.n_inputs < 0:
            raise ValueError(f"network: parameter 'n_inputs' must be a non-negative integer, got {self.n_inputs!r}")
        if not 0 < self.dt_ms < math.inf:
            raise ValueError(f"network: parameter 'dt_ms' must be a finite number > 0, got {self.dt_ms!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"network: parameter 'layout' must be one of {LAYOUTS}, got {self.layout!r}")
        if not self.populations:
            raise ValueError("network: has no populations")
        for population in self.populations:
            if not isinstance(population, Population):
                raise ValueError(f"network: populations must be Population objects, got {type(population).__name__}")
        names = [p.name for p in self.populations]
        if len(set(names)) != len(names):
            raise ValueError(f"network: population names must be unique, got {names}")
        kinds = {type(p.neuron) for p in self.populations}
        if len(kinds) > 1:
            raise ValueError("network: populations mix LoihiLIF and FloatLIF; convert with pipeline.snn.convert.to_loihi")
        if self.output_name not in names:
            raise ValueError(f"network: parameter 'output' must name a population {names}, got {self.output_name!r}")
        if self.input_spec is not None and not isinstance(self.input_spec, InputSpec):
            raise ValueError(f"network: 'input_spec' must be an InputSpec, got {type(self.input_spec).__name__}")
        if self.readout is not None:
            if not isinstance(self.readout, Readout):
                raise ValueError(f"network: 'readout' must be a Readout, got {type(self.readout).__name__}")
            self.readout.check_outputs(self.n_outputs)
        for projection in self.projections:
            if not isinstance(projection, Projection):
                raise ValueError(f"network: projections must be Dense, Sparse or Conv2D, got {type(projection).__name__}")
        projection_names = [p.name for p in self.projections]
        if len(set(projection_names)) != len(projection_names):
            raise ValueError(f"network: projection names must be unique, got {projection_names}")
        for projection in self.projections:
            owner = projection.owner()
            if projection.source != INPUT and projection.source not in names:
                raise _fail(owner, "source", f"must be {INPUT!r} or a population name {names}, got {projection.source!r}")
            if projection.target not in names:
                raise _fail(owner, "target", f"must be a population name {names}, got {projection.target!r}")
            projection.check_sizes(self.source_size(projection.source), self.source_size(projection.target))
            weights = self.weights_of(projection)
            if not self.is_float and weights.dtype.kind == "f" and not np.all(weights == np.round(weights)):
                raise _fail(owner, "weights", "must be integers for a LoihiLIF network (convert float networks with to_loihi)")

    @staticmethod
    def weights_of(projection: Projection) -> np.ndarray:
        return projection.kernel if isinstance(projection, Conv2D) else projection.weights

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> None:
        """Write the whole description (parameters, weights, delays, learning rules) to one .npz."""
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION),
            "n_inputs": np.array(int(self.n_inputs)),
            "dt_ms": np.array(float(self.dt_ms)),
            "output": np.array(self.output_name),
            "input_shape": np.array(self.input_shape if self.input_shape is not None else (), dtype=np.int64),
            "layout": np.array(self.layout),
            "population_names": np.array([p.name for p in self.populations], dtype=str),
            "projection_names": np.array([p.name for p in self.projections], dtype=str),
        }
        for i, population in enumerate(self.populations):
            prefix = f"pop{i}_"
            kind = "loihi" if isinstance(population.neuron, LoihiLIF) else "float"
            arrays[prefix + "kind"] = np.array(kind)
            arrays[prefix + "size"] = np.array(int(population.size))
            arrays[prefix + "probe"] = np.array([population.probe_u, population.probe_v])
            for name, values in population.neuron.arrays(f"population {population.name!r}", population.size).items():
                arrays[prefix + name] = values
        for i, projection in enumerate(self.projections):
            prefix = f"proj{i}_"
            kind = next(k for k, cls in PROJECTION_KINDS.items() if type(projection) is cls)
            arrays[prefix + "kind"] = np.array(kind)
            arrays[prefix + "ends"] = np.array([projection.source, projection.target], dtype=str)
            arrays[prefix + "weight_exp"] = np.array(int(projection.weight_exp))
            arrays[prefix + "num_weight_bits"] = np.array(int(projection.num_weight_bits))
            arrays[prefix + "delay"] = np.asarray(projection.delay, dtype=np.int64)
            arrays[prefix + "prepare_weights"] = np.array(projection.prepare_weights)
            arrays[prefix + "num_message_bits"] = np.array(int(projection.num_message_bits))
            if isinstance(projection, Dense):
                arrays[prefix + "weights"] = projection.weights
            elif isinstance(projection, Sparse):
                arrays[prefix + "indptr"] = projection.indptr
                arrays[prefix + "indices"] = projection.indices
                arrays[prefix + "weights"] = projection.weights
            else:
                arrays[prefix + "kernel"] = projection.kernel
                arrays[prefix + "geometry"] = np.array([*projection.in_shape, *projection.stride, *projection.padding,
                                                        *projection.dilation, projection.groups])
            if projection.learning is not None:
                arrays.update(_learning_arrays(prefix, projection))
        if self.input_spec is not None:
            arrays.update(self.input_spec.to_arrays())
        if self.readout is not None:
            arrays.update(self.readout.to_arrays())
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Network:
        """Read a network written by :meth:`save` (no pickle, at most pipeline.core.npz.MAX_NPZ_BYTES of
        arrays); ValueError names the file and key."""
        path = Path(path)
        try:
            arrays = load_npz(path)
        except NpzError:
            raise
        except OSError as error:
            raise ValueError(f"{path}: cannot read ({error.strerror or error})") from None
        try:
            return cls._from_arrays(arrays, path)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as error:
            if isinstance(error, ValueError) and str(path) in str(error):
                raise
            raise ValueError(f"{path}: not a spikeloop network file ({type(error).__name__}: {error})") from None

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], path: Path) -> Network:
        def get(key: str) -> np.ndarray:
            if key not in arrays:
                raise ValueError(f"{path}: missing key {key!r}")
            return arrays[key]

        def scalar(key: str, kinds: str = "iu") -> np.ndarray:
            """``arrays[key]``, one value of a dtype kind in ``kinds`` ("iu": an integer, "U": text, ...)."""
            value = get(key)
            if value.ndim != 0 or value.dtype.kind not in kinds:
                what = {"iu": "one integer", "iuf": "one number", "U": "one text"}.get(kinds, "one value")
                raise ValueError(f"{path}: key {key!r} must be {what}, got {value.dtype} of shape {value.shape}")
            return value

        def vector(key: str, lengths: tuple[int, ...] | None, kinds: str) -> np.ndarray:
            """``arrays[key]``, a 1-D array (of one of ``lengths``, None: any) of a dtype kind in ``kinds``."""
            value = get(key)
            if value.ndim != 1 or (lengths is not None and value.size not in lengths) \
                    or (value.size and value.dtype.kind not in kinds):
                count = "a list of" if lengths is None else " or ".join(map(str, lengths))
                raise ValueError(f"{path}: key {key!r} must hold {count} values, got {value.dtype} of shape "
                                 f"{value.shape}")
            return value

        version = int(scalar("format_version"))
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: key 'format_version' is {version}, expected {FORMAT_VERSION}")
        n_inputs = int(scalar("n_inputs"))
        if not 0 <= n_inputs <= MAX_FILE_INPUTS:  # a runtime allocates per input; a Conv2D stores no per-input data
            raise ValueError(f"{path}: key 'n_inputs' is {n_inputs}, expected 0..{MAX_FILE_INPUTS}")
        try:
            populations = []
            for i, name in enumerate(vector("population_names", None, "U")):
                prefix = f"pop{i}_"
                kind = str(scalar(prefix + "kind", "U"))
                size = int(scalar(prefix + "size"))
                if kind not in ("loihi", "float"):
                    raise ValueError(f"{path}: key {prefix + 'kind'!r} is {kind!r}, expected 'loihi' or 'float'")
                parameters = {k: get(prefix + k) for k in (_LOIHI_RANGES if kind == "loihi" else _FLOAT_FIELDS)}
                for key, value in parameters.items():  # save() writes one value per neuron: a scalar would make
                    if size > 0 and value.shape != (size,):  # the declared size alone decide the allocation
                        raise ValueError(f"{path}: key {prefix + key!r} must hold {size} values (key "
                                         f"{prefix + 'size'!r}), got shape {value.shape}")
                neuron = (LoihiLIF if kind == "loihi" else FloatLIF)(**parameters)
                probe_u, probe_v = (bool(b) for b in vector(prefix + "probe", (2,), "b"))
                populations.append(Population(str(name), size, neuron, probe_u, probe_v))
            projections = []
            for i, name in enumerate(vector("projection_names", None, "U")):
                prefix = f"proj{i}_"
                kind = str(scalar(prefix + "kind", "U"))
                source, target = (str(s) for s in vector(prefix + "ends", (2,), "U"))
                delay = get(prefix + "delay")
                common = dict(name=str(name), source=source, target=target,
                              weight_exp=int(scalar(prefix + "weight_exp")),
                              num_weight_bits=int(scalar(prefix + "num_weight_bits")),
                              delay=int(delay) if delay.ndim == 0 else delay,
                              learning=_learning_from_arrays(prefix, arrays, path),
                              prepare_weights=bool(scalar(prefix + "prepare_weights", "b"))
                              if prefix + "prepare_weights" in arrays else True,
                              num_message_bits=int(scalar(prefix + "num_message_bits"))
                              if prefix + "num_message_bits" in arrays else 0)
                if kind == "dense":
                    projections.append(Dense(weights=get(prefix + "weights"), **common))
                elif kind == "sparse":
                    projections.append(Sparse(indptr=get(prefix + "indptr"), indices=get(prefix + "indices"),
                                              weights=get(prefix + "weights"), **common))
                elif kind == "conv2d":
                    g = [int(x) for x in vector(prefix + "geometry", (7, 10), "iu")]
                    extra = dict(dilation=tuple(g[7:9]), groups=g[9]) if len(g) == 10 else {}
                    projections.append(Conv2D(kernel=get(prefix + "kernel"), in_shape=tuple(g[:3]), stride=tuple(g[3:5]),
                                              padding=tuple(g[5:7]), **extra, **common))
                else:
                    raise ValueError(f"{path}: key {prefix + 'kind'!r} is {kind!r}, expected one of {sorted(PROJECTION_KINDS)}")
            input_shape = vector("input_shape", (0, 3), "iu")
            return cls(n_inputs=n_inputs, populations=populations, projections=projections,
                       output=str(scalar("output", "U")), dt_ms=float(scalar("dt_ms", "iuf")),
                       layout=str(scalar("layout", "U")) if "layout" in arrays else "chw",
                       input_spec=InputSpec.from_arrays(arrays), readout=Readout.from_arrays(arrays),
                       input_shape=tuple(int(s) for s in input_shape) if input_shape.size else None)
        except ValueError as error:
            if str(path) in str(error):
                raise
            raise ValueError(f"{path}: {error}") from error


# Learning rules are saved by class name (``proj<i>_learning_class``) through
# pipeline.snn.learning.rule.RULE_CLASSES, with ``rule.to_arrays()`` and ``RuleClass.from_arrays(dict)``.
# Files written before the registry name the class as "module:qualname" (pipeline.snn.learning_rule,
# then pipeline.snn.learning.rule); the qualname is looked up in the same registry, nothing is imported.
def _learning_arrays(prefix: str, projection: Projection) -> dict[str, np.ndarray]:
    rule = projection.learning
    name = type(rule).__name__
    if RULE_CLASSES.get(name) is not type(rule):
        raise ValueError(f"{projection.owner()}: learning rule {name} is not in pipeline.snn.learning.rule.RULE_CLASSES "
                         f"({sorted(RULE_CLASSES)}); cannot save it")
    arrays = {f"{prefix}learning_class": np.array(name)}
    for key, value in rule.to_arrays().items():
        arrays[f"{prefix}learning_{key}"] = np.asarray(value)
    return arrays


def _learning_from_arrays(prefix: str, arrays: dict[str, np.ndarray], path: Path):
    key = prefix + "learning_class"
    if key not in arrays:
        return None
    stored = str(arrays[key])
    module_name, _, qualname = stored.rpartition(":")
    if module_name and not module_name.startswith("pipeline.snn."):
        raise ValueError(f"{path}: key {key!r} names {module_name!r}; only pipeline.snn learning rules load")
    if qualname not in RULE_CLASSES:
        raise ValueError(f"{path}: key {key!r} is {stored!r}, expected one of {sorted(RULE_CLASSES)}")
    start = prefix + "learning_"
    fields = {k[len(start):]: v for k, v in arrays.items() if k.startswith(start) and k != key}
    return RULE_CLASSES[qualname].from_arrays(fields)
