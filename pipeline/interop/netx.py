"""lava-dl netx ``.net`` (HDF5) -> :class:`pipeline.snn.Network`, bit-exact with Lava's fixed_pt run.

What netx builds (lava-dl ``netx.hdf5.Network``) and how it maps here:

* each ``conv`` / ``dense`` block is a synapse into a Lava CUBA LIF: population ``layer<i>`` (block
  index i) with du = iDecay - 1, dv = vDecay, vth = vThMant, bias_mant = the hdf5 bias (per neuron, or
  per channel for conv), bias_exp = 6. refDelay and the LOIHI-only keys are ignored, as netx does;
* an ``input`` block with a ``neuron`` group is a LIF with no synapse (driven by its bias: ``simulate
  --input-bias``); without one it only sets the input shape. Files without an input block feed the
  input port straight into block 0's synapse;
* ``dense``: netx's weight optimisation (sign mode, ``w << scale_bits``, weight_exp = -scale_bits,
  num_weight_bits) followed by Lava's Dense preparation (8-bit clip, low-bit truncation) is done here
  once; the Dense projection then carries those prepared integers (``prepare_weights=False``) and the
  exponent, so a = floor(sum(w' s) / 2**scale_bits) exactly as Lava computes it. Where preparation
  changes a weight the layer table says so;
* ``conv``: hdf5 kernel (Cout, Cin/groups, kH, kW[, 1]) as a cross-correlation Conv2D on (C, H, W),
  stride/padding/dilation in (H, W) order, weights as given (Lava's Conv ignores weight_exp and
  num_weight_bits);
* ``flatten``: the next dense reads the (C, H, W) grid in C order, which is the population order here.

Populations keep (C, H, W) order internally; the network's layout is "xyc", so ``simulate`` presents
conv layers as netx does, (X=W, Y=H, C). Every synapse adds Lava's one-step hop. Bad files raise
ValueError naming the file and the HDF5 path and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.snn.network import INPUT, Conv2D, Dense, LoihiLIF, Network, Population
from pipeline.snn.weights import INHIBITORY, MIXED, sign_mode

#: Largest weight array read from a file (elements); larger claims are refused before reading.
MAX_WEIGHTS = 1 << 27
#: Largest population a file may declare (neurons).
MAX_NEURONS = 1 << 24
NEURON_TYPES = ("CUBA", "LOIHI")
#: netx's bias exponent: the hdf5 bias is a mantissa shifted by 6 bits.
NETX_BIAS_EXP = 6


@dataclass(frozen=True)
class LayerRow:
    """One row of the import report: block index, netx type, hdf5 shape, population (or ""), neuron
    parameters as text, and what was approximated or ignored (and why)."""

    index: int
    kind: str
    shape: tuple[int, ...]
    population: str
    neuron: str
    notes: str = ""


@dataclass(frozen=True)
class Imported:
    """A network, the per-layer report of how it was made, and notes on the whole file (what its format
    cannot express)."""

    network: Network
    layers: tuple[LayerRow, ...] = field(default_factory=tuple)
    source: str = ""
    notes: tuple[str, ...] = ()

    def table(self) -> str:
        """The layer table as text, one line per block, then the file notes."""
        lines = [f"{'#':<3}{'type':<9}{'shape':<14}{'population':<12} {'neuron':<44}notes"]
        for row in self.layers:
            shape = "x".join(str(s) for s in row.shape)
            lines.append(f"{row.index:<3}{row.kind:<9}{shape:<14}{row.population or '-':<12} {row.neuron:<44}{row.notes}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


#: What h5py raises on a damaged file (on open, lookup or read).
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, IndexError)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class _File:
    """h5py access that turns every failure into one ValueError naming the file and the HDF5 path."""

    def __init__(self, handle, path: Path):
        self.handle, self.path = handle, path

    def fail(self, key: str, expected: str) -> ValueError:
        return ValueError(f"{self.path}: /{key}: {expected}")

    def has(self, key: str) -> bool:
        try:
            return key in self.handle
        except HDF5_ERRORS as error:  # a damaged file fails on lookup, not on open
            raise self.fail(key, f"unreadable ({_first_line(error)})") from None

    def dataset(self, key: str, max_size: int = MAX_WEIGHTS):
        import h5py

        if not self.has(key):
            raise self.fail(key, "missing")
        try:
            node = self.handle[key]
        except HDF5_ERRORS as error:
            raise self.fail(key, f"unreadable ({_first_line(error)})") from None
        if not isinstance(node, h5py.Dataset):
            raise self.fail(key, "expected a dataset, found a group")
        if node.size > max_size:
            raise self.fail(key, f"has {node.size} elements, expected at most {max_size}")
        try:
            return node[()]
        except HDF5_ERRORS as error:
            raise self.fail(key, f"unreadable ({_first_line(error)})") from None

    def text(self, key: str) -> str:
        value = self.dataset(key, 16)
        if isinstance(value, np.ndarray):
            if value.size != 1:
                raise self.fail(key, f"expected one string, got {value.size} values")
            value = value.ravel()[0]
        if isinstance(value, bytes):
            return value.decode("ascii", "replace")
        if isinstance(value, str):
            return value
        raise self.fail(key, f"expected a string, got {type(value).__name__}")

    def integer(self, key: str, low: int, high: int) -> int:
        value = np.asarray(self.dataset(key, 1))
        if value.size != 1:
            raise self.fail(key, f"expected one integer, got {value.size} values")
        if value.dtype.kind not in "iuf" or not np.isfinite(value).all() or value != np.round(value):
            raise self.fail(key, f"expected an integer, got {value!r}")
        number = int(value.ravel()[0])
        if not low <= number <= high:
            raise self.fail(key, f"expected an integer in [{low}, {high}], got {number}")
        return number

    def integers(self, key: str, count: int, low: int, high: int) -> tuple[int, ...]:
        value = np.asarray(self.dataset(key, 16))
        if value.dtype.kind not in "iu" or value.size != count:
            raise self.fail(key, f"expected {count} integers, got {value.dtype} {value.shape}")
        if value.min() < low or value.max() > high:
            raise self.fail(key, f"expected integers in [{low}, {high}], got {value.tolist()}")
        return tuple(int(v) for v in value.ravel())

    def int_array(self, key: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """An integer-valued float/int array (netx truncates with astype(int); we refuse fractions)."""
        value = np.asarray(self.dataset(key))
        if value.dtype.kind not in "iuf" or not np.isfinite(value).all():
            raise self.fail(key, f"expected finite numbers, got dtype {value.dtype}")
        if np.any(value != np.trunc(value)):
            raise self.fail(key, "expected integer values (netx truncates fractions; this file has some)")
        if value.size and np.abs(value).max() >= 2**31:
            raise self.fail(key, f"expected 32-bit integers, got a value of magnitude {float(np.abs(value).max()):.3g}")
        if shape is not None and value.size != int(np.prod(shape)):
            raise self.fail(key, f"expected {int(np.prod(shape))} values {shape}, got shape {value.shape}")
        return value.astype(np.int64).reshape(shape) if shape is not None else value.astype(np.int64)


def netx_weight_bits(weights: np.ndarray) -> tuple[np.ndarray, int, int]:
    """netx's ``optimize_weight_bits`` for integer weights: (w << scale_bits, num_weight_bits, weight_exp).

    Sign mode from min/max (mixed: both signs present); scale = min(127/max, -128/min) (mixed),
    -256/min (inhibitory) or 255/max (excitatory); scale_bits = floor(log2(scale)) + signed; n = the
    number of trailing zero bits all weights share (at most 8), minus signed;
    num_weight_bits = 8 - scale_bits - n; weight_exp = -scale_bits.
    """
    w = np.asarray(weights, dtype=np.int64)
    hi, lo = int(w.max()), int(w.min())
    if hi < 0:
        scale, signed = -256 / lo, 0
    elif lo >= 0:
        scale, signed = (255 / hi if hi else 1.0), 0
    else:
        scale, signed = min(127 / hi, -128 / lo), 1
    scale_bits = int(np.floor(np.log2(scale))) + signed
    n = 8
    while n > 0 and np.any(w % (1 << n)):
        n -= 1
    n -= signed
    shifted = w << scale_bits if scale_bits >= 0 else w >> -scale_bits
    return shifted, 8 - scale_bits - n, -scale_bits


def lava_dense_weights(weights: np.ndarray, num_weight_bits: int) -> np.ndarray:
    """Lava Dense's preparation: clip by sign mode (mixed [-256, 255], excitatory [0, 255], inhibitory
    [-255, 0]), then zero ``max(0, 8 - num_weight_bits + mixed)`` low bits (netx may pass 9 bits)."""
    w = np.asarray(weights, dtype=np.int64)
    mode = sign_mode(w)
    mixed = int(mode == MIXED)
    clipped = -np.clip(-w, 0, 255) if mode == INHIBITORY else np.clip(w, -256 * mixed, 255)
    n = max(0, 8 - int(num_weight_bits) + mixed)
    return (clipped >> n) << n


def _neuron(f: _File, base: str, size: int, bias: np.ndarray | None) -> tuple[LoihiLIF, str]:
    kind = f.text(f"{base}/neuron/type")
    if kind not in NEURON_TYPES:
        raise f.fail(f"{base}/neuron/type", f"expected one of {NEURON_TYPES}, got {kind!r}")
    i_decay = f.integer(f"{base}/neuron/iDecay", 1, 4096)
    v_decay = f.integer(f"{base}/neuron/vDecay", 0, 4095)
    vth = f.integer(f"{base}/neuron/vThMant", 0, 2**17 - 1)
    if f.has(f"{base}/neuron/gradedSpike") and bool(np.asarray(f.dataset(f"{base}/neuron/gradedSpike", 1))):
        raise f.fail(f"{base}/neuron/gradedSpike", "expected False (graded output spikes are not supported)")
    bias_mant = np.zeros(size, dtype=np.int64) if bias is None else bias
    if bias_mant.size and (bias_mant.min() < -(2**12) or bias_mant.max() > 2**12 - 1):
        worst = int(bias_mant.max() - (2**12 - 1)) if bias_mant.max() > 2**12 - 1 else int(-(2**12) - bias_mant.min())
        raise f.fail(f"{base}/bias", f"bias mantissas must fit 13 bits [-4096, 4095]; exceeded by {worst}")
    neuron = LoihiLIF(du=i_decay - 1, dv=v_decay, vth=vth, bias_mant=bias_mant, bias_exp=NETX_BIAS_EXP)
    text = f"{kind} iDecay={i_decay} vDecay={v_decay} vThMant={vth}"
    if bias is not None and bias.size:
        text += f" bias {int(bias.min())}..{int(bias.max())}"
    return neuron, text


def _shape(f: _File, key: str) -> tuple[int, ...]:
    value = np.asarray(f.dataset(key, 8))
    if value.dtype.kind not in "iu" or value.ndim != 1 or value.size not in (1, 3) or value.min() < 1:
        raise f.fail(key, f"expected (N,) or (C, H, W) positive integers, got {value.tolist()}")
    if int(np.prod(value)) > MAX_NEURONS:
        raise f.fail(key, f"declares {int(np.prod(value))} neurons, expected at most {MAX_NEURONS}")
    return tuple(int(v) for v in value)


def read_netx(path: str | Path, dt_ms: float = 1.0) -> Imported:
    """Read a lava-dl netx file; ValueError (one line: file, HDF5 path, what was expected) on bad input."""
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({str(error).splitlines()[0]})") from None
    with handle:
        f = _File(handle, path)
        if not f.has("layer"):
            raise f.fail("layer", "missing (a netx file holds /layer/0, /layer/1, ...)")
        try:
            group = handle["layer"]
            names = list(group.keys()) if isinstance(group, h5py.Group) else None
        except HDF5_ERRORS as error:
            raise f.fail("layer", f"unreadable ({_first_line(error)})") from None
        if names is None:
            raise f.fail("layer", "expected a group of blocks /layer/0, /layer/1, ..., found a dataset")
        if not names or any(not k.isdigit() for k in names) or sorted(int(k) for k in names) != list(range(len(names))):
            raise f.fail("layer", f"expected groups 0..N-1, got {names[:10]}")
        try:
            return _build(f, len(names), dt_ms)
        except ValueError as error:
            if str(error).startswith(f"{path}:"):
                raise
            raise ValueError(f"{path}: {_first_line(error)}") from None


def _build(f: _File, n_layers: int, dt_ms: float) -> Imported:
    populations: list[Population] = []
    projections = []
    rows: list[LayerRow] = []
    grid: tuple[int, ...] | None = None  # shape of what the previous block emits: (C, H, W) or (N,)
    source = INPUT
    n_inputs = 0
    input_shape = None
    for i in range(n_layers):
        base = f"layer/{i}"
        kind = f.text(f"{base}/type")
        name = f"layer{i}"
        if f.has(f"{base}/delay"):
            raise f.fail(f"{base}/delay", "axonal delays are not supported by this importer")
        if kind == "input":
            if i != 0:
                raise f.fail(f"{base}/type", "expected 'input' only as block 0")
            grid = _shape(f, f"{base}/shape")
            notes = ""
            if f.has(f"{base}/neuron"):
                neuron, text = _neuron(f, base, int(np.prod(grid)), None)
                populations.append(Population(name, int(np.prod(grid)), neuron))
                source = name
                if f.has(f"{base}/weight") or f.has(f"{base}/bias"):
                    notes = "input transform (weight, bias) stored by netx, never applied: drive with simulate --input-bias"
            else:
                text = "-"
                n_inputs = int(np.prod(grid))
                input_shape = grid if len(grid) == 3 else None
            rows.append(LayerRow(i, kind, grid, name if source == name else "", text, notes))
            continue
        if kind == "flatten":
            if grid is None:
                raise f.fail(f"{base}/type", "expected an input block before 'flatten'")
            grid = (int(np.prod(grid)),)
            rows.append(LayerRow(i, kind, grid, "", "-", "C-order (C, H, W) flatten"))
            continue
        if kind not in ("dense", "conv"):
            raise f.fail(f"{base}/type", f"expected input, dense, conv or flatten, got {kind!r} "
                                         "(netx itself raises NotImplementedError for pool/average/concat/convT)")
        shape = _shape(f, f"{base}/shape")
        size = int(np.prod(shape))
        weight = np.asarray(f.dataset(f"{base}/weight"))
        notes = ""
        if kind == "dense":
            n_in = f.integer(f"{base}/inFeatures", 1, MAX_NEURONS) if f.has(f"{base}/inFeatures") else (
                weight.shape[-1] if weight.ndim else 0)
            if grid is None:
                grid = (n_in,)
                n_inputs = n_in
            if int(np.prod(grid)) != n_in:
                raise f.fail(f"{base}/inFeatures", f"expected {int(np.prod(grid))} (what block {i - 1} emits), got {n_in}")
            if f.has(f"{base}/outFeatures") and f.integer(f"{base}/outFeatures", 1, MAX_NEURONS) != size:
                raise f.fail(f"{base}/outFeatures", f"expected {size} (the block's shape {shape})")
            w = f.int_array(f"{base}/weight", (size, n_in))
            optimized, bits, exp = netx_weight_bits(w)
            prepared = lava_dense_weights(optimized, bits)
            if not -8 <= exp <= 7:
                raise f.fail(f"{base}/weight", f"netx weight exponent {exp} is outside Loihi's [-8, 7]")
            changed = prepared != optimized
            if changed.any():
                notes = (f"Lava's 8-bit weight preparation changes {int(changed.sum())} weights by up to "
                         f"{int(np.abs(prepared - optimized).max())} (<< {-exp}); kept, as Lava computes")
            projections.append(Dense(name=f"{name}_dense", source=source, target=name, weights=prepared,
                                     weight_exp=exp, num_weight_bits=min(max(bits, 1), 8), prepare_weights=False))
            bias = f.int_array(f"{base}/bias", (size,)) if f.has(f"{base}/bias") else None
            synapse = f"weight_exp={exp} bits={bits}"
        else:
            if grid is None or len(grid) != 3:
                raise f.fail(f"{base}/type", "expected an input block with a (C, H, W) shape before a conv block")
            c_in = grid[0]
            groups = f.integer(f"{base}/groups", 1, c_in) if f.has(f"{base}/groups") else 1
            if len(shape) != 3:
                raise f.fail(f"{base}/shape", f"expected (C, H, W) for a conv block, got {shape}")
            if f.has(f"{base}/inChannels") and f.integer(f"{base}/inChannels", 1, MAX_NEURONS) != c_in:
                raise f.fail(f"{base}/inChannels", f"expected {c_in} (what block {i - 1} emits)")
            k = f.integers(f"{base}/kernelSize", 2, 1, 1024) if f.has(f"{base}/kernelSize") else None
            if weight.ndim not in (4, 5) or (weight.ndim == 5 and weight.shape[4] != 1):
                raise f.fail(f"{base}/weight", f"expected (Cout, Cin/groups, kH, kW[, 1]), got shape {weight.shape}")
            kernel = f.int_array(f"{base}/weight", weight.shape[:4])
            if k is not None and kernel.shape[2:] != k:
                raise f.fail(f"{base}/kernelSize", f"is {k}, the weight's kernel is {kernel.shape[2:]}")
            geometry = {key: (f.integers(f"{base}/{key}", 2, 0 if key == "padding" else 1, 1024)
                              if f.has(f"{base}/{key}") else default)
                        for key, default in (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1)))}
            try:
                conv = Conv2D(name=f"{name}_conv", source=source, target=name, kernel=kernel, in_shape=grid,
                              groups=groups, prepare_weights=False, **geometry)
            except ValueError as error:
                raise f.fail(f"{base}/weight", str(error)) from None
            if conv.out_shape() != shape:
                raise f.fail(f"{base}/shape", f"expected {conv.out_shape()} from the kernel and geometry, got {shape}")
            projections.append(conv)
            bias = None
            if f.has(f"{base}/bias"):
                per_channel = f.int_array(f"{base}/bias", (shape[0],))
                bias = np.repeat(per_channel, shape[1] * shape[2])
            synapse = f"stride={geometry['stride']} pad={geometry['padding']}"
            notes = "24-bit wrap of the conv sum not emulated (never reached by 8-bit kernels this size)" \
                if int(np.abs(kernel).sum(axis=(1, 2, 3)).max()) << 6 >= 2**23 else ""
        neuron, text = _neuron(f, base, size, bias)
        populations.append(Population(name, size, neuron))
        rows.append(LayerRow(i, kind, shape, name, f"{text} {synapse}", notes))
        source, grid = name, shape
    if not populations:
        raise f.fail("layer", "expected at least one block with neurons")
    try:
        network = Network(n_inputs=n_inputs, populations=populations, projections=projections, dt_ms=dt_ms,
                          input_shape=input_shape, layout="xyc")
    except ValueError as error:
        raise ValueError(f"{f.path}: {error}") from None
    return Imported(network, tuple(rows), str(f.path))
