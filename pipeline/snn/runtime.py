"""Runtimes: a Network compiled into flat arrays for one numba step kernel per backend.

``build(network, backend)`` returns a :class:`Runtime`. Per step (``dt_ms`` of network time) the
caller passes the active input axons and gets the output population's spikes::

    runtime = build(network, "loihi")
    runtime.warmup()                      # compile before any real-time clock starts
    spikes = runtime.step(np.array([3, 17], dtype=np.int32))   # uint8 (n_outputs,), valid until next step

Backends: ``loihi`` — integer state bit-exact with Lava's bit-accurate Dense + CUBA LIF
(see pipeline.snn.kernels); ``float`` — float32, same topology and step order. A LoihiLIF network
runs on ``float`` as the same dynamics without integer rounding: u in Loihi state units, a weight W
adds W * 2**(weight_exp + 6), decays (4095 - du) / 4096 and (4096 - dv) / 4096, threshold vth * 64,
bias bias_mant * 2**bias_exp. A FloatLIF network runs on ``float`` only.

Learning: for a Dense projection whose ``learning`` is set (a pipeline.snn.learning.engine.LearningRule),
build calls ``rule.attach(weights, pre_spikes, post_spikes, backend[, weight_scale])`` once: ``weights``
is a writable (n_pre, n_post) view of the weights the kernel uses (loihi: int16, unshifted, initial
values truncated as Lava's LearningDense does in the rule's sign mode; float: float32 holding
W * weight_scale), the spike arguments are uint8 views of the current step's spikes. The returned
learner's ``step(t) -> int`` runs after every step (its weight changes feed the next step's synaptic
input) and returns the synapses updated, counted as learning_updates; ``reset()`` runs on reset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.snn import kernels as K
from pipeline.snn.counters import Counters
from pipeline.snn.learning.engine import attach_rule
from pipeline.snn.learning.rule import LearningRule
from pipeline.snn.network import INPUT, Dense, LoihiLIF, Network
from pipeline.snn.weights import truncate_weights

BACKENDS = ("loihi", "float")


@dataclass
class _Layout:
    """Where each group (input port, populations) sits in the global neuron index space."""

    n_inputs: int
    starts: dict[str, int]
    pop_index: dict[str, int]

    def group(self, name: str) -> int:
        return 0 if name == INPUT else self.pop_index[name] + 1


def build(network: Network, backend: str = "loihi") -> Runtime:
    """Validate and compile ``network`` for ``backend`` ("loihi" or "float")."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    network.validate()
    if backend == "loihi" and network.is_float:
        raise ValueError("network has FloatLIF populations; the loihi backend needs LoihiLIF "
                         "(convert with pipeline.snn.convert.to_loihi)")
    return Runtime(network, backend)


class Runtime:
    """A compiled network. See the module docstring for the step contract."""

    def __init__(self, network: Network, backend: str):
        self.network = network
        self.backend = backend
        self.dt_ms = float(network.dt_ms)
        n_inputs = int(network.n_inputs)
        starts, pop_index, offset = {}, {}, n_inputs
        for i, population in enumerate(network.populations):
            starts[population.name] = offset
            pop_index[population.name] = i
            offset += int(population.size)
        self._layout = _Layout(n_inputs, starts, pop_index)
        n_total = offset
        n_neurons = n_total - n_inputs
        self.groups = np.zeros((1 + len(network.populations), 3), dtype=np.int64)
        self.groups[0] = (0, n_inputs, 0)
        for population in network.populations:
            self.groups[self._layout.group(population.name)] = (starts[population.name], population.size, 0)
        self.spikes = np.zeros(max(n_total, 1), dtype=np.uint8)
        self.active = np.zeros(max(n_total, 1), dtype=np.int32)
        self.counters = Counters([p.name for p in network.populations])
        if backend == "loihi":
            self.state = np.zeros((4, n_neurons), dtype=np.int64)
            self.params = self._loihi_params(n_neurons)
            self._refractory_left = None
        else:
            self.state = np.zeros((3, n_neurons), dtype=np.float32)
            self.params = self._float_params(n_neurons)
            self._refractory_left = np.zeros(n_neurons, dtype=np.int32)
        self._compile_projections()
        out = network.population(network.output_name)
        out_start = starts[out.name]
        self._output = self.spikes[out_start:out_start + out.size]
        if backend == "loihi":
            self._kernel = K.step_loihi
            self._args = (self.state, self.params, self.spikes, self.active, self.groups, self.proj, self.weights,
                          self.indptr, self.post, self.delays, self.ring, self.counters.array)
        else:
            self._kernel = K.step_float
            self._args = (self.state, self.params, self._refractory_left, self.spikes, self.active, self.groups,
                          self.proj, self.weights, self.indptr, self.post, self.delays, self.ring, self.counters.array)
        self.t = 0
        self._learners = []
        for p, projection in enumerate(network.projections):
            if projection.learning is not None:
                self._learners.append((self._attach_learning(p, projection), pop_index[projection.target]))

    # ------------------------------------------------------------------ compile
    def _pop_arrays(self, n_neurons: int, columns: int, dtype, fill) -> np.ndarray:
        params = np.zeros((columns, n_neurons), dtype=dtype)
        for population in self.network.populations:
            lo = self._layout.starts[population.name] - self._layout.n_inputs
            fill(params[:, lo:lo + population.size], population)
        return params

    def _loihi_params(self, n_neurons: int) -> np.ndarray:
        def fill(block, population):
            a = population.neuron.arrays(f"population {population.name!r}", population.size)
            block[K.U_MULT] = 4095 - a["du"]
            block[K.V_MULT] = 4096 - a["dv"]
            block[K.THRESHOLD] = a["vth"] << 6
            exp = a["bias_exp"]
            block[K.BIAS] = np.where(exp >= 0, a["bias_mant"] << np.maximum(exp, 0), a["bias_mant"] >> np.maximum(-exp, 0))
            block[K.REFRACTORY] = a["refractory"]
        return self._pop_arrays(n_neurons, 5, np.int64, fill)

    def _float_params(self, n_neurons: int) -> np.ndarray:
        dt = self.dt_ms

        def fill(block, population):
            owner = f"population {population.name!r}"
            if isinstance(population.neuron, LoihiLIF):
                a = population.neuron.arrays(owner, population.size)
                block[K.U_MULT] = (4095 - a["du"]) / 4096.0
                block[K.V_MULT] = (4096 - a["dv"]) / 4096.0
                block[K.THRESHOLD] = a["vth"] * 64.0
                block[K.BIAS] = a["bias_mant"] * np.exp2(a["bias_exp"].astype(np.float64))
                block[K.REFRACTORY] = a["refractory"]
            else:
                a = population.neuron.arrays(owner, population.size)
                with np.errstate(divide="ignore"):
                    block[K.U_MULT] = np.exp(-dt / a["tau_syn_ms"])
                    block[K.V_MULT] = np.exp(-dt / a["tau_mem_ms"])
                block[K.THRESHOLD] = a["threshold"]
                block[K.BIAS] = a["bias"]
                block[K.REFRACTORY] = np.round(a["refractory_ms"] / dt)
        return self._pop_arrays(n_neurons, 5, np.float32, fill)

    def _stored_weights(self, projection, values: np.ndarray, learning: bool) -> tuple[np.ndarray, int]:
        """(values as stored in the blob, total shift applied at delivery) for this backend."""
        if self.backend == "float":
            if self.network.is_float:
                return values.astype(np.float32), 0
            effective, _ = truncate_weights(values, projection.num_weight_bits)
            return (effective * 2.0 ** (projection.weight_exp + 6)).astype(np.float32), 0
        if learning:
            from pipeline.snn.learning.engine import learning_dense_weights

            sign_mode = getattr(projection.learning, "sign_mode", "mixed")
            return learning_dense_weights(values, sign_mode, projection.num_weight_bits), int(projection.weight_exp)
        effective, n = truncate_weights(values, projection.num_weight_bits)
        return effective >> n, int(projection.weight_exp) + n

    def _compile_projections(self) -> None:
        network, layout = self.network, self._layout
        rows, weight_parts, indptr_parts, post_parts, delay_parts = [], [], [], [], []
        w_off = idx_off = syn_off = ring_off = 0
        for projection in network.projections:
            n_pre = network.source_size(projection.source)
            n_post = network.source_size(projection.target)
            learning = projection.learning is not None
            dense = isinstance(projection, Dense) and (np.ndim(projection.delay) == 0 or learning)
            if learning and not (isinstance(projection, Dense) and np.ndim(projection.delay) == 0):
                raise ValueError(f"{projection.owner()}: learning needs a Dense projection with a scalar delay")
            if dense:
                values = np.ascontiguousarray(np.asarray(projection.weights).T).ravel()
                stored, shift = self._stored_weights(projection, values, learning)
                indptr = np.zeros(0, dtype=np.int64)
                post = np.zeros(0, dtype=np.int32)
                delays = np.zeros(0, dtype=np.uint8)
            else:
                indptr, post, values, delays = projection.synapses(n_pre, n_post)
                stored, shift = self._stored_weights(projection, values, learning)
            ring_len = projection.max_delay() + 2
            row = np.zeros(K.N_PROJ_COLUMNS, dtype=np.int64)
            row[K.KIND] = K.DENSE if dense else K.CSR
            row[K.SRC_GROUP] = layout.group(projection.source)
            row[K.SRC_START] = 0 if projection.source == INPUT else layout.starts[projection.source]
            row[K.N_SRC] = n_pre
            row[K.TGT_POP] = layout.pop_index[projection.target]
            row[K.TGT_START] = layout.starts[projection.target] - layout.n_inputs
            row[K.N_TGT] = n_post
            row[K.W_OFF] = w_off
            row[K.IDX_OFF] = idx_off
            row[K.SYN_OFF] = syn_off
            row[K.RING_OFF] = ring_off
            row[K.RING_LEN] = ring_len
            row[K.SHIFT] = shift
            row[K.DELAY] = int(np.max(projection.delay)) if dense else 0
            rows.append(row)
            weight_parts.append(stored)
            indptr_parts.append(indptr)
            post_parts.append(post)
            delay_parts.append(delays)
            w_off += stored.size
            idx_off += indptr.size
            syn_off += post.size
            ring_off += ring_len * n_post
        self.proj = np.array(rows, dtype=np.int64).reshape(len(rows), K.N_PROJ_COLUMNS)
        if self.backend == "float":
            dtype = np.float32
        else:
            dtype = _narrowest_int(weight_parts, any(p.learning is not None for p in network.projections))
        self.weights = np.concatenate([w.astype(dtype) for w in weight_parts]) if weight_parts else np.zeros(1, dtype)
        self.indptr = np.concatenate(indptr_parts + [np.zeros(1, np.int64)])
        self.post = np.concatenate(post_parts + [np.zeros(1, np.int32)])
        self.delays = np.concatenate(delay_parts + [np.zeros(1, np.uint8)])
        self.ring = np.zeros(max(ring_off, 1), dtype=np.float32 if self.backend == "float" else np.int32)

    def _attach_learning(self, p: int, projection):
        row = self.proj[p]
        n_pre, n_post = int(row[K.N_SRC]), int(row[K.N_TGT])
        weights = self.weights[row[K.W_OFF]:row[K.W_OFF] + n_pre * n_post].reshape(n_pre, n_post)
        pre_start = int(row[K.SRC_START])
        post_start = self._layout.starts[projection.target]
        pre = self.spikes[pre_start:pre_start + n_pre]
        post = self.spikes[post_start:post_start + n_post]
        rule = projection.learning
        if self.backend == "float":
            scale = 1.0 if self.network.is_float else 2.0 ** (projection.weight_exp + 6)
            if isinstance(rule, LearningRule):
                return attach_rule(rule, weights, pre, post, "float", weight_scale=scale)
        elif isinstance(rule, LearningRule):
            return attach_rule(rule, weights, pre, post, "loihi")
        if not hasattr(rule, "attach"):
            raise ValueError(f"{projection.owner()}: learning must be a pipeline.snn.learning.rule.LearningRule (or "
                             f"an object with attach()), got {type(rule).__name__}")
        if self.backend == "float":
            return rule.attach(weights, pre, post, "float", weight_scale=scale)
        return rule.attach(weights, pre, post, "loihi")

    # ------------------------------------------------------------------ running
    def step(self, input_indices: np.ndarray) -> np.ndarray:
        """Advance one step with ``input_indices`` (int32 (k,), duplicates allowed) active.

        Returns the output population's spikes, uint8 (n_outputs,), a view valid until the next step.
        """
        if type(input_indices) is not np.ndarray or input_indices.dtype != np.int32 or input_indices.ndim != 1:
            input_indices = _as_indices(input_indices)
        bad = self._kernel(input_indices, self.t, *self._args)
        if bad >= 0:
            raise ValueError(f"input index {int(input_indices[bad])} at position {bad} is outside "
                             f"[0, {self._layout.n_inputs}) (network.n_inputs)")
        for learner, pop in self._learners:
            updates = learner.step(self.t)
            if updates:
                self.counters.add_learning_updates(pop, updates)
        self.t += 1
        self.counters.steps += 1
        return self._output

    def warmup(self) -> None:
        """Compile (or load from cache) the step kernel, then reset to the initial state."""
        self.step(np.zeros(0, dtype=np.int32))
        if self._layout.n_inputs:
            self.step(np.zeros(1, dtype=np.int32))
        self.reset()

    def reset(self) -> None:
        """Zero all state, rings, spikes, counters and the step number (weights are kept)."""
        self.state[:] = 0
        self.ring[:] = 0
        self.spikes[:] = 0
        self.groups[:, 2] = 0
        if self._refractory_left is not None:
            self._refractory_left[:] = 0
        self.counters.reset()
        self.t = 0
        for learner, _ in self._learners:
            if hasattr(learner, "reset"):
                learner.reset()

    # ------------------------------------------------------------------ probes
    def spikes_of(self, population: str) -> np.ndarray:
        """uint8 (size,) spikes of ``population`` this step (a view)."""
        start = self._layout.starts[self.network.population(population).name]
        return self.spikes[start:start + self.network.population(population).size]

    def u(self, population: str) -> np.ndarray:
        """Current u of a population built with probe_u=True (a view, Loihi units or float)."""
        return self._probe(population, K.U, "probe_u")

    def v(self, population: str) -> np.ndarray:
        """Voltage v of a population built with probe_v=True (a view; 0 on a spike step)."""
        return self._probe(population, K.V, "probe_v")

    def _probe(self, name: str, row: int, flag: str) -> np.ndarray:
        population = self.network.population(name)
        if not getattr(population, flag):
            raise ValueError(f"population {name!r} is not probed ({flag}=False)")
        lo = self._layout.starts[name] - self._layout.n_inputs
        return self.state[row, lo:lo + population.size]

    def weight_row_bytes(self) -> int:
        """Bytes of one weight of this runtime's storage (1 int8, 2 int16, 4 float32)."""
        return self.weights.itemsize


def _as_indices(values) -> np.ndarray:
    """Input indices as a 1-D int32 array (the kernel's signature); ValueError for anything else."""
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros(0, dtype=np.int32)
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise ValueError(f"input indices must be a 1-D integer array, got {array.dtype} with shape {array.shape}")
    if array.min() < 0 or array.max() >= 2**31:
        bad = int(array[(array < 0) | (array >= 2**31)][0])
        raise ValueError(f"input index {bad} is outside [0, n_inputs)")
    return array.astype(np.int32)


def _narrowest_int(parts: list[np.ndarray], needs_int16: bool):
    lo = min((int(p.min()) for p in parts if p.size), default=0)
    hi = max((int(p.max()) for p in parts if p.size), default=0)
    if not needs_int16 and -128 <= lo and hi <= 127:
        return np.int8
    if -(2**15) <= lo and hi < 2**15:
        return np.int16
    return np.int32
