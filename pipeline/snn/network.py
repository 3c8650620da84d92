"""Spiking network description: LIF populations, projections, one input port.

A :class:`Network` is plain data. It holds

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

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

INPUT = "input"
MAX_DELAY = 62
FORMAT_VERSION = 1

_LOIHI_RANGES = {
    "du": (0, 4095),
    "dv": (0, 4095),
    "vth": (0, 2**17 - 1),
    "bias_mant": (-(2**12), 2**12 - 1),
    "bias_exp": (-8, 7),
    "refractory": (0, 255),
}


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


@dataclass
class LoihiLIF:
    """Loihi CUBA LIF integer parameters (scalars or (size,) arrays).

    du, dv: 12-bit decays of current u and voltage v (u *= (4095 - du) / 4096, v *= (4096 - dv) / 4096);
    vth: threshold mantissa (spike when v > vth << 6); bias = bias_mant << bias_exp, added to v every
    step; refractory: steps after a spike during which v stays 0 (Loihi 2; Lava's CPU LIF has none: 0).
    """

    du: object = 0
    dv: object = 0
    vth: object = 10
    bias_mant: object = 0
    bias_exp: object = 0
    refractory: object = 0

    def arrays(self, owner: str, size: int) -> dict[str, np.ndarray]:
        """Validated int64 (size,) arrays by parameter name; ValueError names owner and parameter."""
        return {name: _int_array(owner, name, getattr(self, name), size, *_LOIHI_RANGES[name]) for name in _LOIHI_RANGES}


@dataclass
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


@dataclass
class Population:
    """``size`` LIF compartments. u and v are readable from a runtime only where probed."""

    name: str
    size: int
    neuron: LoihiLIF | FloatLIF = field(default_factory=LoihiLIF)
    probe_u: bool = False
    probe_v: bool = False

    def validate(self) -> None:
        owner = f"population {self.name!r}"
        if not isinstance(self.name, str) or not self.name or self.name == INPUT:
            raise ValueError(f"{owner}: name must be a non-empty string other than {INPUT!r}")
        if int(self.size) != self.size or self.size < 1:
            raise _fail(owner, "size", f"must be a positive integer, got {self.size!r}")
        if not isinstance(self.neuron, (LoihiLIF, FloatLIF)):
            raise _fail(owner, "neuron", f"must be LoihiLIF or FloatLIF, got {type(self.neuron).__name__}")
        self.neuron.arrays(owner, int(self.size))


@dataclass(kw_only=True)
class Projection:
    """Common projection fields.

    weight_exp: the summed input of this projection is scaled by 2**weight_exp (Loihi -8..7);
    num_weight_bits: weight precision 1-8 (Lava's Dense truncation, see pipeline.snn.weights);
    delay: extra steps (0-62) on top of the one-step Dense hop, scalar or one per synapse
    (shape of ``weights``); learning: a rule object from pipeline.snn.learning.engine or None.
    """

    name: str
    source: str
    target: str
    weight_exp: int = 0
    num_weight_bits: int = 8
    delay: object = 0
    learning: object | None = None

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
        owner = self.owner()
        if int(self.weight_exp) != self.weight_exp or not -8 <= self.weight_exp <= 7:
            raise _fail(owner, "weight_exp", f"must be an integer in [-8, 7], got {self.weight_exp!r}")
        if int(self.num_weight_bits) != self.num_weight_bits or not 1 <= self.num_weight_bits <= 8:
            raise _fail(owner, "num_weight_bits", f"must be an integer in [1, 8], got {self.num_weight_bits!r}")
        delay = np.asarray(self.delay)
        if delay.dtype.kind not in "iu":
            raise _fail(owner, "delay", f"must be integer steps, got dtype {delay.dtype}")
        if delay.ndim and delay.shape != n_synapses_shape:
            raise _fail(owner, "delay", f"must be a scalar or have the weights' shape {n_synapses_shape}, got {delay.shape}")
        if delay.size and (delay.min() < 0 or delay.max() > MAX_DELAY):
            raise _fail(owner, "delay", f"must be in [0, {MAX_DELAY}] steps, got {int(delay.min() if delay.min() < 0 else delay.max())}")

    def max_delay(self) -> int:
        return int(np.max(self.delay)) if np.size(self.delay) else 0

    def validate(self, n_pre: int, n_post: int) -> None:
        raise NotImplementedError


def _check_weights(owner: str, weights: np.ndarray, shape: tuple[int, ...]) -> None:
    if weights.shape != shape:
        raise _fail(owner, "weights", f"must have shape {shape}, got {weights.shape}")
    if weights.dtype.kind not in "iuf":
        raise _fail(owner, "weights", f"must be numeric, got dtype {weights.dtype}")
    if weights.dtype.kind == "f" and not np.all(np.isfinite(weights)):
        raise _fail(owner, "weights", "contains NaN or inf")


@dataclass(kw_only=True)
class Dense(Projection):
    """All-to-all projection; weights (n_post, n_pre) like Lava's Dense."""

    weights: np.ndarray

    def validate(self, n_pre: int, n_post: int) -> None:
        self.weights = np.asarray(self.weights)
        _check_weights(self.owner(), self.weights, (n_post, n_pre))
        self._check_common(self.weights.shape)

    def synapses(self, n_pre, n_post):
        weights_io = np.ascontiguousarray(np.asarray(self.weights).T)
        indptr = np.arange(n_pre + 1, dtype=np.int64) * n_post
        post = np.tile(np.arange(n_post, dtype=np.int32), n_pre)
        delays = np.broadcast_to(np.asarray(self.delay), (n_post, n_pre)).T.astype(np.uint8).ravel()
        return indptr, post, weights_io.ravel(), delays

    def dense_weights(self, n_pre, n_post):
        return np.asarray(self.weights)


@dataclass(kw_only=True)
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

    def validate(self, n_pre: int, n_post: int) -> None:
        owner = self.owner()
        self.indptr = np.asarray(self.indptr)
        self.indices = np.asarray(self.indices)
        self.weights = np.asarray(self.weights)
        if self.indptr.shape != (n_pre + 1,) or self.indptr.dtype.kind not in "iu":
            raise _fail(owner, "indptr", f"must be an integer array of shape ({n_pre + 1},), got {self.indptr.dtype} {self.indptr.shape}")
        nnz = int(self.indptr[-1])
        if self.indptr[0] != 0 or np.any(np.diff(self.indptr) < 0):
            raise _fail(owner, "indptr", "must start at 0 and be non-decreasing")
        if self.indices.shape != (nnz,) or self.indices.dtype.kind not in "iu":
            raise _fail(owner, "indices", f"must be an integer array of shape ({nnz},), got {self.indices.dtype} {self.indices.shape}")
        if nnz and (self.indices.min() < 0 or self.indices.max() >= n_post):
            raise _fail(owner, "indices", f"must be post-neuron indices in [0, {n_post})")
        _check_weights(owner, self.weights, (nnz,))
        self._check_common((nnz,))

    def synapses(self, n_pre, n_post):
        nnz = int(self.indptr[-1])
        delays = np.broadcast_to(np.asarray(self.delay), (nnz,)).astype(np.uint8)
        return self.indptr.astype(np.int64), self.indices.astype(np.int32), self.weights, delays


@dataclass(kw_only=True)
class Conv2D(Projection):
    """2-D convolution over an event grid (cross-correlation, like torch.nn.Conv2d).

    kernel (out_channels, in_channels, kh, kw); in_shape (C, H, W) of the source; stride and padding
    (rows, cols). The target must have out_channels * OH * OW neurons, OH = (H + 2 ph - kh) // sh + 1.
    Synapses are stored explicitly, as Loihi's synaptic memory does. ``delay`` must be a scalar.
    """

    kernel: np.ndarray
    in_shape: tuple[int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    def out_shape(self) -> tuple[int, int, int]:
        c_out, _, kh, kw = np.shape(self.kernel)
        _, h, w = self.in_shape
        return (c_out, (h + 2 * self.padding[0] - kh) // self.stride[0] + 1,
                (w + 2 * self.padding[1] - kw) // self.stride[1] + 1)

    def validate(self, n_pre: int, n_post: int) -> None:
        owner = self.owner()
        self.kernel = np.asarray(self.kernel)
        if self.kernel.ndim != 4:
            raise _fail(owner, "kernel", f"must have shape (out_channels, in_channels, kh, kw), got {self.kernel.shape}")
        _check_weights(owner, self.kernel, self.kernel.shape)
        self.in_shape = tuple(int(s) for s in self.in_shape)
        self.stride = tuple(int(s) for s in self.stride)
        self.padding = tuple(int(s) for s in self.padding)
        if len(self.in_shape) != 3 or min(self.in_shape) < 1:
            raise _fail(owner, "in_shape", f"must be (C, H, W) positive, got {self.in_shape}")
        if int(np.prod(self.in_shape)) != n_pre:
            raise _fail(owner, "in_shape", f"{self.in_shape} has {int(np.prod(self.in_shape))} neurons but the source has {n_pre}")
        if self.kernel.shape[1] != self.in_shape[0]:
            raise _fail(owner, "kernel", f"has {self.kernel.shape[1]} input channels, in_shape has {self.in_shape[0]}")
        if len(self.stride) != 2 or min(self.stride) < 1:
            raise _fail(owner, "stride", f"must be two positive integers, got {self.stride}")
        if len(self.padding) != 2 or min(self.padding) < 0:
            raise _fail(owner, "padding", f"must be two non-negative integers, got {self.padding}")
        out = self.out_shape()
        if min(out) < 1 or int(np.prod(out)) != n_post:
            raise _fail(owner, "kernel", f"output grid {out} ({int(np.prod(out))} neurons) does not match the target's {n_post} neurons")
        if np.ndim(self.delay) != 0:
            raise _fail(owner, "delay", "must be a scalar for Conv2D")
        self._check_common(())

    def synapses(self, n_pre, n_post):
        c_out, c_in, kh, kw = self.kernel.shape
        _, h, w = self.in_shape
        _, oh, ow = self.out_shape()
        sh, sw = self.stride
        ph, pw = self.padding
        # Every (output position, kernel tap, channel pair) that lands inside the input grid.
        co, ci, ky, kx, oy, ox = np.meshgrid(np.arange(c_out), np.arange(c_in), np.arange(kh), np.arange(kw),
                                             np.arange(oh), np.arange(ow), indexing="ij")
        iy = oy * sh - ph + ky
        ix = ox * sw - pw + kx
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        pre = ((ci * h + iy) * w + ix)[inside]
        post = ((co * oh + oy) * ow + ox)[inside]
        weights = self.kernel[co[inside], ci[inside], ky[inside], kx[inside]]
        order = np.lexsort((post, pre))
        pre, post, weights = pre[order], post[order], weights[order]
        indptr = np.zeros(n_pre + 1, dtype=np.int64)
        np.cumsum(np.bincount(pre, minlength=n_pre), out=indptr[1:])
        delays = np.full(post.size, int(self.delay), dtype=np.uint8)
        return indptr, post.astype(np.int32), weights, delays


PROJECTION_KINDS = {"dense": Dense, "sparse": Sparse, "conv2d": Conv2D}


@dataclass
class Network:
    """Input port + populations + projections. ``output`` names the output population (default: last)."""

    n_inputs: int
    populations: list[Population] = field(default_factory=list)
    projections: list[Projection] = field(default_factory=list)
    output: str | None = None
    dt_ms: float = 1.0
    input_shape: tuple[int, int, int] | None = None

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

    def source_size(self, name: str) -> int:
        return int(self.n_inputs) if name == INPUT else int(self.population(name).size)

    @property
    def is_float(self) -> bool:
        """True when any population is FloatLIF (runnable on the float backend only)."""
        return any(isinstance(p.neuron, FloatLIF) for p in self.populations)

    def validate(self) -> None:
        """Check every parameter; ValueError names the population/projection and the parameter."""
        if int(self.n_inputs) != self.n_inputs or self.n_inputs < 0:
            raise ValueError(f"network: parameter 'n_inputs' must be a non-negative integer, got {self.n_inputs!r}")
        if not self.dt_ms > 0:
            raise ValueError(f"network: parameter 'dt_ms' must be > 0, got {self.dt_ms!r}")
        if not self.populations:
            raise ValueError("network: has no populations")
        names = [p.name for p in self.populations]
        if len(set(names)) != len(names):
            raise ValueError(f"network: population names must be unique, got {names}")
        for population in self.populations:
            population.validate()
        kinds = {type(p.neuron) for p in self.populations}
        if len(kinds) > 1:
            raise ValueError("network: populations mix LoihiLIF and FloatLIF; convert with pipeline.snn.convert.to_loihi")
        self.population(self.output_name)
        projection_names = [p.name for p in self.projections]
        if len(set(projection_names)) != len(projection_names):
            raise ValueError(f"network: projection names must be unique, got {projection_names}")
        for projection in self.projections:
            owner = projection.owner()
            if projection.source != INPUT and projection.source not in names:
                raise _fail(owner, "source", f"must be {INPUT!r} or a population name {names}, got {projection.source!r}")
            if projection.target not in names:
                raise _fail(owner, "target", f"must be a population name {names}, got {projection.target!r}")
            projection.validate(self.source_size(projection.source), self.source_size(projection.target))
            if not self.is_float and np.asarray(self.weights_of(projection)).dtype.kind == "f":
                if not np.all(self.weights_of(projection) == np.round(self.weights_of(projection))):
                    raise _fail(owner, "weights", "must be integers for a LoihiLIF network (convert float networks with to_loihi)")

    @staticmethod
    def weights_of(projection: Projection) -> np.ndarray:
        return projection.kernel if isinstance(projection, Conv2D) else projection.weights

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> None:
        """Write the whole description (parameters, weights, delays, learning rules) to one .npz."""
        self.validate()
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION),
            "n_inputs": np.array(int(self.n_inputs)),
            "dt_ms": np.array(float(self.dt_ms)),
            "output": np.array(self.output_name),
            "input_shape": np.array(self.input_shape if self.input_shape is not None else (), dtype=np.int64),
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
            if isinstance(projection, Dense):
                arrays[prefix + "weights"] = np.asarray(projection.weights)
            elif isinstance(projection, Sparse):
                arrays[prefix + "indptr"] = np.asarray(projection.indptr)
                arrays[prefix + "indices"] = np.asarray(projection.indices)
                arrays[prefix + "weights"] = np.asarray(projection.weights)
            else:
                arrays[prefix + "kernel"] = np.asarray(projection.kernel)
                arrays[prefix + "geometry"] = np.array([*projection.in_shape, *projection.stride, *projection.padding])
            if projection.learning is not None:
                arrays.update(_learning_arrays(prefix, projection))
        with open(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> Network:
        """Read a network written by :meth:`save` (no pickle); ValueError names the file and key."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls._from_arrays({key: data[key] for key in data.files}, path)
        except (OSError, ValueError) as error:
            if str(path) in str(error):
                raise
            raise ValueError(f"{path}: not a spikeloop network file ({error})") from error

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], path: Path) -> Network:
        def get(key: str) -> np.ndarray:
            if key not in arrays:
                raise ValueError(f"{path}: missing key {key!r}")
            return arrays[key]

        version = int(get("format_version"))
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: key 'format_version' is {version}, expected {FORMAT_VERSION}")
        populations = []
        for i, name in enumerate(get("population_names")):
            prefix = f"pop{i}_"
            kind = str(get(prefix + "kind"))
            if kind == "loihi":
                neuron = LoihiLIF(**{k: get(prefix + k) for k in _LOIHI_RANGES})
            elif kind == "float":
                neuron = FloatLIF(**{k: get(prefix + k) for k in ("tau_syn_ms", "tau_mem_ms", "threshold", "bias", "refractory_ms")})
            else:
                raise ValueError(f"{path}: key {prefix + 'kind'!r} is {kind!r}, expected 'loihi' or 'float'")
            probe_u, probe_v = (bool(b) for b in get(prefix + "probe"))
            populations.append(Population(str(name), int(get(prefix + "size")), neuron, probe_u, probe_v))
        projections = []
        for i, name in enumerate(get("projection_names")):
            prefix = f"proj{i}_"
            kind = str(get(prefix + "kind"))
            source, target = (str(s) for s in get(prefix + "ends"))
            delay = get(prefix + "delay")
            common = dict(name=str(name), source=source, target=target, weight_exp=int(get(prefix + "weight_exp")),
                          num_weight_bits=int(get(prefix + "num_weight_bits")),
                          delay=int(delay) if delay.ndim == 0 else delay,
                          learning=_learning_from_arrays(prefix, arrays, path))
            if kind == "dense":
                projections.append(Dense(weights=get(prefix + "weights"), **common))
            elif kind == "sparse":
                projections.append(Sparse(indptr=get(prefix + "indptr"), indices=get(prefix + "indices"),
                                          weights=get(prefix + "weights"), **common))
            elif kind == "conv2d":
                g = [int(x) for x in get(prefix + "geometry")]
                projections.append(Conv2D(kernel=get(prefix + "kernel"), in_shape=tuple(g[:3]), stride=tuple(g[3:5]),
                                          padding=tuple(g[5:7]), **common))
            else:
                raise ValueError(f"{path}: key {prefix + 'kind'!r} is {kind!r}, expected one of {sorted(PROJECTION_KINDS)}")
        input_shape = get("input_shape")
        network = cls(n_inputs=int(get("n_inputs")), populations=populations, projections=projections,
                      output=str(get("output")), dt_ms=float(get("dt_ms")),
                      input_shape=tuple(int(s) for s in input_shape) if input_shape.size else None)
        try:
            network.validate()
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
        return network


# Learning rules are saved through two methods the rule class provides:
# ``rule.to_arrays() -> dict[str, np.ndarray]`` and ``RuleClass.from_arrays(dict) -> rule``.
# Only classes from pipeline.snn modules are re-imported on load.
def _learning_arrays(prefix: str, projection: Projection) -> dict[str, np.ndarray]:
    rule = projection.learning
    if not hasattr(rule, "to_arrays"):
        raise ValueError(f"{projection.owner()}: learning rule {type(rule).__name__} has no to_arrays(); cannot save")
    cls = type(rule)
    arrays = {f"{prefix}learning_class": np.array(f"{cls.__module__}:{cls.__qualname__}")}
    for key, value in rule.to_arrays().items():
        arrays[f"{prefix}learning_{key}"] = np.asarray(value)
    return arrays


def _learning_from_arrays(prefix: str, arrays: dict[str, np.ndarray], path: Path):
    key = prefix + "learning_class"
    if key not in arrays:
        return None
    module_name, _, qualname = str(arrays[key]).partition(":")
    if not module_name.startswith("pipeline.snn."):
        raise ValueError(f"{path}: key {key!r} names {module_name!r}; only pipeline.snn learning rules load")
    rule_class = getattr(importlib.import_module(module_name), qualname)
    start = prefix + "learning_"
    fields = {k[len(start):]: v for k, v in arrays.items() if k.startswith(start) and k != key}
    return rule_class.from_arrays(fields)
