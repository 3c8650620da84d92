"""NIR graphs (``.nir``, the ``nir`` package) -> :class:`pipeline.snn.Network` (float backend).

NIR is continuous-time and stores no dt; ``dt_ms`` sets the step and every time constant (seconds in
every file seen) becomes a per-step factor by forward Euler, the discretisation Norse and snnTorch use:

* LIF(tau, r, v_leak, v_threshold, v_reset=0): v <- (1 - dt/tau) v + (dt/tau)(v_leak + r I): a FloatLIF
  with tau_mem_ms chosen so exp(-dt/tau_mem_ms) = 1 - dt/tau, no synaptic filter, input weights times
  dt/tau * r and bias dt/tau * v_leak;
* CubaLIF(tau_syn, tau_mem, r, v_leak, v_threshold, v_reset, w_in): I <- (1 - dt/tau_syn) I +
  (dt/tau_syn) w_in x, then v as LIF with r I: u is held as (dt/tau_mem) r I, weights times
  (dt/tau_syn) w_in (dt/tau_mem) r;
* IF(r, v_threshold, v_reset): v <- v + r I, one unit of time per step (no dt, as every framework ran
  the NIR paper's CNN); LI / CubaLI: LIF / CubaLIF that never spike (threshold float32 max);
* Affine, Linear, Conv2d, SumPool2d, AvgPool2d, Flatten, Scale and Delay between two neuron nodes (or
  the input) compose into one projection: a Conv2D for a lone Conv2d, a Dense for a lone
  Affine/Linear, a Sparse matrix otherwise; Affine/Conv2d biases, carried through the rest of the
  chain, become the neuron's bias (times its input factor); Delay adds round(delay / dt) steps.

Every synapse adds this runtime's one-step hop (recurrent edges: snnTorch's previous-step feedback;
feed-forward layers: one step later than Norse/snnTorch, which add the input in the same step).
Projections from the input port carry graded payloads (integer counts, e.g. N-MNIST frames).
What this runtime cannot run (v_reset != 0, thresholds <= 0) is an error naming the node; what was
approximated is listed in the report, and so is what NIR itself cannot express (reset by subtraction,
multi-spike outputs: a model trained with them runs with reset to 0 and one spike per step).

Two more readings: a Threshold node is a memoryless neuron (spike when its input > threshold); an
Affine bias into a CubaLIF enters its current (I <- a I + k (W x + b)), whose steady part k b / (1 - a)
is carried as a voltage bias (exact once the current's start-up a**t has decayed; the report says so).
Rockpool writes r = (tau / dt) exp(-dt / tau) for its discrete v <- exp(-dt / tau) v + W x: where that
identity holds at the chosen dt, the neuron is run that way (exponential decay, input gain 1).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.interop.netx import HDF5_ERRORS, MAX_NEURONS, Imported, LayerRow, _first_line
from pipeline.snn.network import INPUT, Conv2D, Dense, FloatLIF, Network, Population, Sparse

NEURONS = ("IF", "LIF", "CubaLIF", "LI", "CubaLI", "Threshold")
LINEAR = ("Affine", "Linear", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "Scale", "Delay")
#: A neuron that never spikes (LI, CubaLI) gets this threshold (float32 max).
NEVER = float(np.finfo(np.float32).max)
#: A composed linear map ending in Affine/Linear at least this full becomes a Dense projection.
DENSE_FILL = 0.5
#: Input payloads are integer event counts up to 2**24 - 1.
INPUT_MESSAGE_BITS = 24
#: A Threshold node has no memory: its membrane time constant is this fraction of dt (exp(-1e6) == 0).
NO_MEMORY = 1e-6
#: Relative tolerance of Rockpool's signature r == (tau / dt) exp(-dt / tau) (float32 files).
ROCKPOOL_RTOL = 1e-5
#: What NIR v1 cannot express; every import report names it.
NIR_LIMITS = ("NIR resets v to v_reset (0 here): reset by subtraction (sinabs IAF, snnTorch reset_mechanism="
              "'subtract') and multi-spike outputs (sinabs MultiSpike) are not in the file, so a model trained "
              "with them runs with reset to 0 and at most one spike per neuron and step")


def _fail(path: Path, node: str, message: str) -> ValueError:
    return ValueError(f"{path}: node {node!r}: {message}")


def _guarded(path: Path, name: str, function, *args):
    """``function(*args)`` with any failure on malformed parameters as one ValueError naming the node."""
    try:
        return function(*args)
    except ValueError as error:
        if str(error).startswith(f"{path}:"):
            raise
        raise _fail(path, name, _first_line(error)) from None
    except (TypeError, KeyError, IndexError, AttributeError, ArithmeticError) as error:
        raise _fail(path, name, f"malformed parameters ({type(error).__name__}: {_first_line(error)})") from None


def _pool_then_conv(chain: tuple[str, ...], nodes, maps: dict, linear: _Map) -> tuple[str, Conv2D] | None:
    """A SumPool2d / AvgPool2d (kernel == stride, no padding, dividing the input) followed by a Conv2d
    (dilation 1) as one Conv2D on the unpooled grid: kernel repeated over each pooling window (divided
    by its area for AvgPool2d), stride and padding times the pooling factor. Returned only when its
    synapses equal the composed matrix exactly; None otherwise."""
    if len(chain) != 2 or type(nodes[chain[0]]).__name__ not in ("SumPool2d", "AvgPool2d") \
            or maps[chain[1]].single is None or maps[chain[1]].single[0] != "conv":
        return None
    pool, conv = nodes[chain[0]], maps[chain[1]].single[1]
    kh, kw = (int(k) for k in np.broadcast_to(np.asarray(pool.kernel_size).ravel(), (2,)))
    stride = tuple(int(k) for k in np.broadcast_to(np.asarray(pool.stride).ravel(), (2,)))
    grid = _shape(pool, "input")
    if stride != (kh, kw) or np.any(np.asarray(pool.padding) != 0) or conv.dilation != (1, 1) \
            or grid[1] % kh or grid[2] % kw:
        return None
    kernel = np.repeat(np.repeat(conv.kernel, kh, axis=2), kw, axis=3)
    if type(pool).__name__ == "AvgPool2d":
        kernel = kernel / (kh * kw)
    try:
        fused = Conv2D(name=conv.name, source=INPUT, target=conv.target, kernel=kernel, in_shape=grid,
                       stride=(conv.stride[0] * kh, conv.stride[1] * kw),
                       padding=(conv.padding[0] * kh, conv.padding[1] * kw), groups=conv.groups)
    except ValueError:
        return None
    n_in, n_out = linear.matrix.shape[1], linear.matrix.shape[0]
    if fused.out_shape() != conv.out_shape():
        return None
    from scipy import sparse

    indptr, post, weights, _ = fused.synapses(n_in, n_out)
    pre = np.repeat(np.arange(n_in), np.diff(indptr))
    difference = sparse.csr_matrix((weights, (post, pre)), shape=(n_out, n_in)) - linear.matrix
    scale = float(np.abs(linear.matrix.data).max()) if linear.matrix.nnz else 1.0
    if difference.nnz and float(np.abs(difference.data).max()) > 1e-12 * scale:
        return None
    return ("conv", fused)


def _pair(value, node: str, path: Path, name: str) -> tuple[int, int]:
    array = np.atleast_1d(np.asarray(value))
    if array.dtype.kind not in "iuf" or array.size not in (1, 2) or np.any(array != np.round(array)):
        raise _fail(path, node, f"{name} must be one or two integers, got {value!r}")
    return (int(array[0]), int(array[-1]))


def _shape(node, key: str) -> tuple[int, ...]:
    """The node's input or output type (without the batch axis); ValueError unless it is a bounded shape."""
    types = node.input_type if key == "input" else node.output_type
    try:
        shape = np.asarray(types[key]).ravel()
        dims = tuple(int(s) for s in shape)
    except (TypeError, KeyError, ValueError, IndexError) as error:
        raise ValueError(f"{key} type is not a shape ({_first_line(error)})") from None
    if not dims or min(dims) < 1 or int(np.prod(dims, dtype=object)) > MAX_NEURONS:
        raise ValueError(f"{key} type {list(dims)} must be positive sizes, at most {MAX_NEURONS} elements")
    return dims


class _Map:
    """A linear map on flat C-order vectors: a scipy sparse (n_out, n_in) matrix, a bias in the output
    space, a delay in steps, and a Conv2D / Dense when the map is one node of that kind."""

    def __init__(self, matrix, bias, delay, single=None):
        self.matrix, self.bias, self.delay, self.single = matrix, bias, delay, single

    def then(self, other: _Map) -> _Map:
        return _Map(other.matrix @ self.matrix, other.matrix @ self.bias + other.bias, self.delay + other.delay)


def _node_map(name: str, node, path: Path, dt_ms: float) -> _Map:
    from scipy import sparse

    kind = type(node).__name__
    n_in = int(np.prod(_shape(node, "input")))
    n_out = int(np.prod(_shape(node, "output")))
    zeros = np.zeros(n_out)
    if kind in ("Affine", "Linear"):
        weight = np.asarray(node.weight, dtype=np.float64)
        if weight.ndim == 1:
            weight = weight[None, :]
        if weight.shape != (n_out, n_in):
            raise _fail(path, name, f"weight must be ({n_out}, {n_in}) for its input/output types, got {weight.shape}")
        bias = np.asarray(node.bias, dtype=np.float64).ravel() if kind == "Affine" else zeros
        if bias.shape != (n_out,):
            raise _fail(path, name, f"bias must have shape ({n_out},), got {bias.shape}")
        return _Map(sparse.csr_matrix(weight), bias, 0, ("dense", weight))
    if kind in ("Conv2d", "SumPool2d", "AvgPool2d"):
        in_shape = _shape(node, "input")
        if len(in_shape) != 3:
            raise _fail(path, name, f"expected a (C, H, W) input type, got {in_shape}")
        if kind == "Conv2d":
            kernel = np.asarray(node.weight, dtype=np.float64)
            if isinstance(node.padding, str):
                raise _fail(path, name, f"padding {node.padding!r} is not supported (give integers)")
            geometry = dict(stride=_pair(node.stride, name, path, "stride"), padding=_pair(node.padding, name, path, "padding"),
                            dilation=_pair(node.dilation, name, path, "dilation"), groups=int(np.asarray(node.groups)))
            bias = np.asarray(node.bias, dtype=np.float64).ravel()
        else:
            c = in_shape[0]
            kh, kw = _pair(node.kernel_size, name, path, "kernel_size")
            kernel = np.zeros((c, 1, kh, kw)) + (1.0 if kind == "SumPool2d" else 1.0 / (kh * kw))
            geometry = dict(stride=_pair(node.stride, name, path, "stride"), padding=_pair(node.padding, name, path, "padding"),
                            groups=c)
            bias = np.zeros(c)
        try:
            conv = Conv2D(name=name, source=INPUT, target=name, kernel=kernel, in_shape=in_shape, **geometry)
        except ValueError as error:
            raise _fail(path, name, str(error)) from None
        if int(np.prod(conv.out_shape())) != n_out:
            raise _fail(path, name, f"output type {_shape(node, 'output')} does not match the geometry's {conv.out_shape()}")
        if bias.size not in (0, conv.out_shape()[0]):
            raise _fail(path, name, f"bias must have one value per output channel, got {bias.size}")
        indptr, post, weights, _ = conv.synapses(n_in, n_out)
        pre = np.repeat(np.arange(n_in), np.diff(indptr))
        matrix = sparse.csr_matrix((weights, (post, pre)), shape=(n_out, n_in))
        full_bias = np.repeat(bias, n_out // conv.out_shape()[0]) if bias.size else zeros
        return _Map(matrix, full_bias, 0, ("conv", conv) if kind == "Conv2d" else None)
    if kind == "Flatten":
        if n_in != n_out:
            raise _fail(path, name, f"input {_shape(node, 'input')} and output {_shape(node, 'output')} sizes differ")
        return _Map(sparse.identity(n_in, format="csr"), zeros, 0)
    if kind == "Scale":
        scale = np.broadcast_to(np.asarray(node.scale, dtype=np.float64).ravel(), (n_in,))
        return _Map(sparse.diags(scale, format="csr"), zeros, 0)
    if kind == "Delay":
        steps = np.round(np.asarray(node.delay, dtype=np.float64) * 1000.0 / dt_ms)
        if steps.size and (np.ptp(steps) != 0):
            raise _fail(path, name, "per-neuron delays differ; only one delay per Delay node is supported")
        return _Map(sparse.identity(n_in, format="csr"), zeros, int(steps.ravel()[0]) if steps.size else 0)
    raise _fail(path, name, f"unknown node type {kind!r} (expected Input, Output, {', '.join(LINEAR + NEURONS)})")


def _rockpool(r: np.ndarray, tau: np.ndarray, dt_s: float) -> bool:
    """Rockpool's exporter writes r = (tau / dt) exp(-dt / tau) for the discrete update
    v <- exp(-dt / tau) v + I (its own dt); at that dt the identity holds to float32 precision."""
    return bool(np.allclose(r * dt_s / tau, np.exp(-dt_s / tau), rtol=ROCKPOOL_RTOL, atol=0.0))


def _neuron(name: str, node, size: int, dt_ms: float, path: Path) -> tuple[dict, np.ndarray, str]:
    """(FloatLIF fields, input factor (size,), description) for a NIR neuron node."""
    kind = type(node).__name__
    dt_s = dt_ms / 1000.0

    def param(key, default=None):
        value = getattr(node, key, None)
        if value is None:
            if default is None:
                raise _fail(path, name, f"missing parameter {key!r}")
            value = default
        array = np.broadcast_to(np.asarray(value, dtype=np.float64).ravel(), (size,)) if np.size(value) in (1, size) else None
        if array is None:
            raise _fail(path, name, f"parameter {key!r} must have 1 or {size} values, got {np.size(value)}")
        if not np.all(np.isfinite(array)):
            raise _fail(path, name, f"parameter {key!r} must be finite")
        return array

    def euler(tau, key):
        k = dt_s / tau
        if np.any(k >= 1) or np.any(k <= 0):
            raise _fail(path, name, f"{key} must be > dt ({dt_s} s) for forward Euler, got {float(tau.min())} s")
        with np.errstate(divide="ignore"):
            return k, -dt_ms / np.log1p(-k)

    if kind in ("IF", "LIF", "CubaLIF") and np.any(param("v_reset", 0.0) != 0):
        raise _fail(path, name, "v_reset != 0 cannot be run (this runtime resets v to 0)")
    if kind == "Threshold":
        threshold = param("threshold")
    elif kind in ("LI", "CubaLI"):
        threshold = np.full(size, NEVER)
    else:
        threshold = param("v_threshold")
    if np.any(threshold <= 0):
        raise _fail(path, name, f"{'threshold' if kind == 'Threshold' else 'v_threshold'} must be > 0 "
                                f"(this runtime spikes when v > threshold > 0), got {float(threshold.min())}")
    if kind == "Threshold":
        factor = np.ones(size)
        fields = dict(tau_syn_ms=0.0, tau_mem_ms=NO_MEMORY * dt_ms, threshold=threshold, bias=0.0)
        text = "Threshold: spike when input > threshold, no state (to_loihi: v keeps 1/4096 per step, dv=4095)"
    elif kind == "IF":
        factor = param("r")
        fields = dict(tau_syn_ms=0.0, tau_mem_ms=np.inf, threshold=threshold, bias=0.0)
        text = "IF v += r I per step (no dt)"
    elif kind in ("LIF", "LI"):
        tau, r = param("tau"), param("r")
        if np.any(tau <= 0):
            raise _fail(path, name, f"tau must be > 0 s, got {float(tau.min())}")
        if _rockpool(r, tau, dt_s):
            decay = np.exp(-dt_s / tau)
            factor = np.ones(size)
            fields = dict(tau_syn_ms=0.0, tau_mem_ms=tau * 1000.0, threshold=threshold,
                          bias=(1 - decay) * param("v_leak", 0.0))
            text = f"{kind} (Rockpool: r = tau/dt exp(-dt/tau)) v decay exp(-dt/tau) = {float(decay[0]):.6g}, input x1"
        else:
            k, tau_mem_ms = euler(tau, "tau")
            factor = k * r
            fields = dict(tau_syn_ms=0.0, tau_mem_ms=tau_mem_ms, threshold=threshold, bias=k * param("v_leak", 0.0))
            text = f"{kind} v decay 1-dt/tau = {float(1 - k[0]):.6g}"
    else:
        tau_syn, tau_mem, r = param("tau_syn"), param("tau_mem"), param("r")
        if np.any(tau_syn <= 0) or np.any(tau_mem <= 0):
            raise _fail(path, name, "tau_syn and tau_mem must be > 0 s")
        if _rockpool(r, tau_mem, dt_s):
            factor = np.ones(size)
            fields = dict(tau_syn_ms=tau_syn * 1000.0, tau_mem_ms=tau_mem * 1000.0, threshold=threshold,
                          bias=(1 - np.exp(-dt_s / tau_mem)) * param("v_leak", 0.0))
            text = (f"{kind} (Rockpool: r = tau_mem/dt exp(-dt/tau_mem)) I decay {float(np.exp(-dt_s / tau_syn[0])):.6g}, "
                    f"v decay {float(np.exp(-dt_s / tau_mem[0])):.6g}, input x1")
        else:
            k_syn, tau_syn_ms = euler(tau_syn, "tau_syn")
            k_mem, tau_mem_ms = euler(tau_mem, "tau_mem")
            factor = k_syn * param("w_in", 1.0) * k_mem * r
            fields = dict(tau_syn_ms=tau_syn_ms, tau_mem_ms=tau_mem_ms, threshold=threshold, bias=k_mem * param("v_leak", 0.0))
            text = f"{kind} I decay {float(1 - k_syn[0]):.6g}, v decay {float(1 - k_mem[0]):.6g}"
    return fields, factor, text


def read_nir(path: str | Path, dt_ms: float = 1.0) -> Imported:
    """Read a NIR file into a float-backend network (see the module docstring)."""
    try:
        import nir
    except ImportError as error:
        raise ValueError(f"{path}: reading NIR needs the 'nir' package (pip install 'spikeloop[interop]')") from error
    path = Path(path)
    _check_node_types(path)
    mismatch = None
    try:
        graph = nir.read(str(path))
    except Exception as error:  # the nir package raises anything from KeyError to h5py errors
        message = _first_line(error)
        mismatch = re.search(r"type mismatch: (.+)\.output: (.+) -> (.+)\.input: (.+)$", message)
        if mismatch is None:
            _locate_unreadable_node(path)
            raise ValueError(f"{path}: not a readable NIR graph ({type(error).__name__}: {message})") from None
        try:  # some exporters write a mismatching Output shape (Rockpool: [1, 1, 1]); the graph may still be sound
            graph = nir.read(str(path), type_check=False)
        except Exception as again:
            raise ValueError(f"{path}: not a readable NIR graph ({_first_line(again)})") from None
    try:
        return graph_to_network(graph, path, dt_ms)
    except ValueError as error:
        if mismatch is not None:  # the shape inconsistency the nir package found explains the failure best
            source, out, target, into = mismatch.groups()
            raise _fail(path, target, f"input type {into} does not match the output type {out} of node {source!r} "
                                      f"that feeds it (inconsistent shapes)") from None
        if str(error).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: {_first_line(error)}") from None


def _locate_unreadable_node(path: Path) -> None:
    """After the nir package failed on ``path``: read node by node with its own per-node reader and raise
    a ValueError naming the first node it cannot read and why; return when every node reads."""
    import h5py
    from nir.serialization import read_node

    try:
        with h5py.File(path, "r") as handle:
            for name, group in handle["node/nodes"].items():
                try:
                    read_node(group)
                except KeyError as error:
                    missing = re.search(r"object '([^']+)' doesn't exist", str(error))
                    raise _fail(path, name, f"missing parameter {missing.group(1) if missing else _first_line(error)!r}"
                                ) from None
                except AssertionError as error:
                    raise _fail(path, name, f"inconsistent parameters ({_first_line(error)})") from None
                except Exception as error:  # the nir package's node constructors raise anything
                    raise _fail(path, name, f"unreadable ({type(error).__name__}: {_first_line(error)})") from None
    except HDF5_ERRORS as error:
        if isinstance(error, ValueError) and str(error).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: not a readable NIR graph ({_first_line(error)})") from None


def _check_node_types(path: Path) -> None:
    """Name the first node whose type this importer does not know, before the nir package (which
    fails on those with a bare AssertionError) reads the file."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "node/nodes" not in handle:
                raise ValueError(f"{path}: /node/nodes: missing (not a NIR graph)")
            for name, group in handle["node/nodes"].items():
                if not isinstance(group, h5py.Group) or "type" not in group:
                    raise ValueError(f"{path}: /node/nodes/{name}/type: missing")
                kind = group["type"][()]
                kind = kind.decode("ascii", "replace") if isinstance(kind, bytes) else str(kind)
                if kind not in NEURONS + LINEAR + ("Input", "Output"):
                    raise _fail(path, name, f"unknown node type {kind!r} (expected Input, Output, "
                                            f"{', '.join(LINEAR + NEURONS)})")
    except HDF5_ERRORS as error:
        if isinstance(error, ValueError) and str(error).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: not a readable NIR graph ({_first_line(error)})") from None


def graph_to_network(graph, path: Path, dt_ms: float) -> Imported:
    nodes = graph.nodes
    kinds = {name: type(node).__name__ for name, node in nodes.items()}
    for name, kind in kinds.items():
        if kind not in NEURONS + LINEAR + ("Input", "Output"):
            raise _fail(path, name, f"unknown node type {kind!r} (expected Input, Output, {', '.join(LINEAR + NEURONS)})")
    inputs = [n for n, k in kinds.items() if k == "Input"]
    outputs = [n for n, k in kinds.items() if k == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise _fail(path, "graph", f"expected one Input and one Output node, got {inputs} and {outputs}")
    incoming: dict[str, list[str]] = {name: [] for name in nodes}
    for source, target in graph.edges:
        for end in (source, target):
            if end not in nodes:
                raise _fail(path, end, "named by an edge but not a node of the graph")
        incoming[target].append(source)
    neurons = [n for n in _order(graph, inputs[0]) if kinds[n] in NEURONS]
    maps: dict[str, _Map] = {}

    def paths_into(name: str, seen: tuple[str, ...]) -> list[tuple[str, _Map | None, tuple[str, ...]]]:
        """(source neuron or input, composed map or None for identity, linear nodes) of every path."""
        found = []
        for source in incoming[name]:
            if kinds[source] in NEURONS or kinds[source] == "Input":
                found.append((source, None, ()))
            elif kinds[source] in LINEAR:
                if source in seen:
                    raise _fail(path, source, "is part of a cycle with no neuron in it")
                if source not in maps:
                    maps[source] = _guarded(path, source, _node_map, source, nodes[source], path, dt_ms)
                for origin, before, chain in paths_into(source, seen + (source,)):
                    composed = maps[source] if before is None else before.then(maps[source])
                    found.append((origin, composed, chain + (source,)))
            else:
                raise _fail(path, source, f"an {kinds[source]} node cannot feed {name!r}")
        return found

    input_shape = _guarded(path, inputs[0], _shape, nodes[inputs[0]], "output")
    populations, projections, rows = [], [], []
    chains: dict[str, tuple[str, ...]] = {}  # projection name -> the linear nodes it was made of

    def add_neuron(name: str) -> None:
        node = nodes[name]
        size = int(np.prod(_shape(node, "output")))
        fields, factor, text = _neuron(name, node, size, dt_ms, path)
        bias = np.asarray(fields.pop("bias"), dtype=np.float64) * np.ones(size)
        notes = []
        first = len(projections)
        for index, (origin, linear, chain) in enumerate(paths_into(name, ())):
            source = INPUT if kinds[origin] == "Input" else origin
            graded = INPUT_MESSAGE_BITS if source == INPUT else 0
            common = dict(name=f"{'_'.join(chain) or origin}->{name}" if index == 0 else f"{'_'.join(chain) or origin}->{name}#{index}",
                          source=source, target=name, num_message_bits=graded)
            chains[common["name"]] = chain
            if linear is None:
                from scipy import sparse

                linear = _Map(sparse.identity(size, format="csr"), np.zeros(size), 0)
            if np.any(linear.bias != 0):
                if kinds[name] in ("CubaLIF", "CubaLI"):
                    # The bias enters the current: I <- a I + k (x + b) has the steady part k b / (1 - a);
                    # carried as a voltage bias it is exact once the current's start-up a**t has decayed.
                    a = np.exp(-dt_ms / np.asarray(fields["tau_syn_ms"], dtype=np.float64))
                    bias = bias + factor * linear.bias / (1.0 - a)
                    notes.append(f"bias of {chain[-1]!r} enters the current: run as its steady state k b/(1-a) "
                                 f"on v (exact after the start-up transient {float(np.max(a)):.3g}**t)")
                else:
                    bias = bias + factor * linear.bias
            common["delay"] = int(linear.delay)
            single = maps[chain[0]].single if len(chain) == 1 else _pool_then_conv(chain, nodes, maps, linear)
            if single is None and kinds[chain[-1]] in ("Affine", "Linear") and linear.matrix.nnz >= DENSE_FILL * \
                    linear.matrix.shape[0] * linear.matrix.shape[1]:
                single = ("dense", None)  # e.g. pool -> flatten -> affine: a full matrix runs best as Dense
            if single is not None and single[0] == "conv":
                conv = single[1]
                kernel = conv.kernel * factor.reshape(conv.out_shape())[:, :1, :1].reshape(-1, 1, 1, 1) \
                    if np.all(factor.reshape(conv.out_shape()) == factor.reshape(conv.out_shape())[:, :1, :1]) else None
                if kernel is not None:
                    projections.append(Conv2D(kernel=kernel, in_shape=conv.in_shape, stride=conv.stride,
                                              padding=conv.padding, dilation=conv.dilation, groups=conv.groups, **common))
                    continue
            scaled = linear.matrix.multiply(factor[:, None]).tocsr()
            if single is not None and single[0] == "dense":
                projections.append(Dense(weights=scaled.toarray(), **common))
            else:
                coo = scaled.tocoo()
                order = np.lexsort((coo.row, coo.col))
                indptr = np.zeros(scaled.shape[1] + 1, dtype=np.int64)
                np.cumsum(np.bincount(coo.col, minlength=scaled.shape[1]), out=indptr[1:])
                projections.append(Sparse(indptr=indptr, indices=coo.row[order].astype(np.int32),
                                          weights=coo.data[order], **common))
            if linear.delay:
                notes.append(f"delay {linear.delay} steps")
        notes[:0] = [f"in: {'+'.join(kinds[n] for n in chains[p.name]) or 'edge'} from {p.source} as {type(p).__name__}"
                     for p in projections[first:]]
        populations.append(Population(name, size, FloatLIF(**fields, bias=bias)))
        rows.append(LayerRow(len(rows), kinds[name], _shape(node, "output"), name, text, "; ".join(notes)))
    for name in neurons:
        _guarded(path, name, add_neuron, name)
    feeding = [s for s in incoming[outputs[0]]]
    if len(feeding) != 1 or kinds[feeding[0]] not in NEURONS:
        raise _fail(path, outputs[0], f"expected one neuron node feeding the Output, got {feeding}")
    try:
        network = Network(n_inputs=int(np.prod(input_shape)), populations=populations, projections=projections,
                          output=feeding[0], dt_ms=dt_ms, input_shape=input_shape if len(input_shape) == 3 else None)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return Imported(network, tuple(rows), str(path), (NIR_LIMITS,))


def _order(graph, start: str) -> list[str]:
    """Nodes in breadth-first order from ``start`` along the edges (the edge list has no order)."""
    outgoing: dict[str, list[str]] = {}
    for source, target in graph.edges:
        outgoing.setdefault(source, []).append(target)
    order, queue, seen = [], [start], {start}
    while queue:
        name = queue.pop(0)
        order.append(name)
        for target in sorted(outgoing.get(name, [])):
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return order
