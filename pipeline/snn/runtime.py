"""Runtimes: a Network compiled into flat arrays for one numba step kernel per backend.

``build(network, backend)`` returns a :class:`Runtime`: it copies what the kernel needs from the
(frozen) description and loads or compiles the step kernel, so a runtime never changes with anything
done to descriptions afterwards (build again for a changed network). Per step (``dt_ms`` of network
time) the caller passes the active input axons and gets the output population's spikes::

    runtime = build(network, "loihi")     # kernel compiled (or loaded from numba's cache) here
    runtime.warmup()                      # one throw-away step with and without input, then reset
    spikes = runtime.step(np.array([3, 17], dtype=np.int32))   # uint8 (n_outputs,), valid until next step

Backends: ``loihi`` — integer state bit-exact with Lava's bit-accurate Dense + CUBA LIF
(see pipeline.snn.kernels); ``float`` — float32, same topology and step order. A LoihiLIF network
runs on ``float`` as the same dynamics without integer rounding: u in Loihi state units, a weight W
adds W * 2**(weight_exp + 6), decays (4095 - du) / 4096 and (4096 - dv) / 4096, threshold vth * 64,
bias bias_mant * 2**bias_exp. A FloatLIF network runs on ``float`` only.

Learning: a Dense projection with a scalar delay may carry ``learning``. A
pipeline.snn.learning.rule.LearningRule is attached through pipeline.snn.learning.engine.attach_rule;
any other object must offer ``attach(weights, pre_spikes, post_spikes, backend[, weight_scale])``,
called once at build. ``weights`` is a writable (n_pre, n_post) view of the runtime's own copy of
the weights (loihi: int16, unshifted, initial values truncated as Lava's LearningDense does in the
rule's sign mode; float: float32 holding W * weight_scale), the spike arguments are uint8 views of
the current step's spikes. The returned learner's ``step(t) -> int`` runs after every step (its weight
changes feed the next step's synaptic input) and returns the synapses updated, counted as
learning_updates; ``reset()`` runs on reset. Learning changes the runtime's weights, never the
description's.
"""
from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from pipeline.snn import kernels as K
from pipeline.snn.counters import Counters
from pipeline.snn.learning.engine import attach_rule, learning_dense_weights
from pipeline.snn.learning.rule import LearningRule
from pipeline.snn.network import INPUT, Dense, LoihiLIF, Network
from pipeline.snn.weights import truncate_weights

BACKENDS = ("loihi", "float")


class Placement(NamedTuple):
    """Where a population sits in a runtime: population index, first global neuron index (input axons
    come first), size, and whether u / v may be read."""

    index: int
    start: int
    size: int
    probe_u: bool
    probe_v: bool


def build(network: Network, backend: str = "loihi") -> Runtime:
    """Compile ``network`` for ``backend`` ("loihi" or "float"): copy what the kernel needs and load
    (or compile) the step kernel for these array types."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if not isinstance(network, Network):
        raise ValueError(f"build needs a pipeline.snn.Network, got {type(network).__name__}")
    if backend == "loihi" and network.is_float:
        raise ValueError("network has FloatLIF populations; the loihi backend needs LoihiLIF "
                         "(convert with pipeline.snn.convert.to_loihi)")
    return Runtime(network, backend)


class Runtime:
    """A compiled network. See the module docstring for the step contract.

    Everything the kernel reads is copied from the description at build (Lava's process/model split):
    ``state`` (LoihiState / FloatState), ``params`` (LoihiParams / FloatParams), ``events`` and
    ``synapses`` (pipeline.snn.kernels). ``network`` is the (frozen) description it was built from,
    kept for inspection (core mapping, energy); the runtime never reads it after build.
    """

    def __init__(self, network: Network, backend: str):
        self.network = network
        self.backend = backend
        self.dt_ms = float(network.dt_ms)
        self.n_inputs = int(network.n_inputs)
        self.output_name = network.output_name
        offset = self.n_inputs
        self.populations: dict[str, Placement] = {}
        for i, population in enumerate(network.populations):
            self.populations[population.name] = Placement(i, offset, population.size, population.probe_u,
                                                          population.probe_v)
            offset += population.size
        n_total = offset
        n_neurons = n_total - self.n_inputs
        groups = np.zeros(1 + len(network.populations), dtype=K.GROUP_DTYPE)
        groups[0] = (0, self.n_inputs, 0)
        for placement in self.populations.values():
            groups[placement.index + 1] = (placement.start, placement.size, 0)
        self.events = K.Events(np.zeros(max(n_total, 1), dtype=np.uint8), np.zeros(max(n_total, 1), dtype=np.int32),
                               groups, np.ones(max(n_total, 1), dtype=np.int32))
        self.graded = any(p.num_message_bits for p in network.projections)
        self.counters = Counters(list(self.populations))
        if backend == "loihi":
            self.params = self._loihi_params(network, n_neurons)
            self.state = K.LoihiState(*(np.zeros(n_neurons, dtype=np.int64) for _ in K.LoihiState._fields))
            kernel = K.step_loihi
        else:
            self.params = self._float_params(network, n_neurons)
            self.state = K.FloatState(np.zeros(n_neurons, np.float32), np.zeros(n_neurons, np.float32),
                                      np.zeros(n_neurons, np.float32), np.zeros(n_neurons, np.int32))
            kernel = K.step_float
        self.synapses = self._compile_projections(network)
        out = self.populations[self.output_name]
        self._output = self.events.spikes[out.start:out.start + out.size]
        self._args = (self.state, self.params, self.events, self.synapses, self.counters.array)
        # The kernel's entry point for exactly these argument types: calling it skips numba's per-call
        # type dispatch, which for NamedTuple arguments costs several µs (step() guarantees the types;
        # the input indices may have any stride).
        self._step = kernel.compile((numba.types.Array(numba.int32, 1, "A"), numba.int64,
                                     *(numba.typeof(a) for a in self._args)))
        self.t = 0
        self._learners = []
        for p, projection in enumerate(network.projections):
            if projection.learning is not None:
                self._learners.append((self._attach_learning(p, projection), self.populations[projection.target].index))

    # ------------------------------------------------------------------ compile
    def _population_blocks(self, network: Network):
        """(population, slice of the neuron arrays) in network order."""
        for population in network.populations:
            lo = self.populations[population.name].start - self.n_inputs
            yield population, slice(lo, lo + population.size)

    def _loihi_params(self, network: Network, n_neurons: int) -> K.LoihiParams:
        params = K.LoihiParams(*(np.zeros(n_neurons, dtype=np.int64) for _ in K.LoihiParams._fields))
        for population, block in self._population_blocks(network):
            a = population.neuron.arrays(f"population {population.name!r}", population.size)
            params.u_mult[block] = 4095 - a["du"]
            params.v_mult[block] = 4096 - a["dv"]
            params.threshold[block] = a["vth"] << 6
            exp = a["bias_exp"]
            params.bias[block] = np.where(exp >= 0, a["bias_mant"] << np.maximum(exp, 0),
                                          a["bias_mant"] >> np.maximum(-exp, 0))
            params.refractory[block] = a["refractory"]
        return params

    def _float_params(self, network: Network, n_neurons: int) -> K.FloatParams:
        dt = self.dt_ms
        params = K.FloatParams(np.zeros(n_neurons, np.float32), np.zeros(n_neurons, np.float32),
                               np.zeros(n_neurons, np.float32), np.zeros(n_neurons, np.float32),
                               np.zeros(n_neurons, np.int32))
        for population, block in self._population_blocks(network):
            a = population.neuron.arrays(f"population {population.name!r}", population.size)
            if isinstance(population.neuron, LoihiLIF):
                params.u_decay[block] = (4095 - a["du"]) / 4096.0
                params.v_decay[block] = (4096 - a["dv"]) / 4096.0
                params.threshold[block] = a["vth"] * 64.0
                params.bias[block] = a["bias_mant"] * np.exp2(a["bias_exp"].astype(np.float64))
                params.refractory[block] = a["refractory"]
            else:
                with np.errstate(divide="ignore"):
                    params.u_decay[block] = np.exp(-dt / a["tau_syn_ms"])
                    params.v_decay[block] = np.exp(-dt / a["tau_mem_ms"])
                params.threshold[block] = a["threshold"]
                params.bias[block] = a["bias"]
                params.refractory[block] = np.round(a["refractory_ms"] / dt)
        return params

    def _stored_weights(self, network: Network, projection, values: np.ndarray, learning: bool) -> tuple[np.ndarray, int]:
        """(values as stored in the blob, total shift applied at delivery) for this backend."""
        if not projection.prepare_weights:
            if self.backend == "float" and not network.is_float:
                return (values * 2.0 ** (projection.weight_exp + 6)).astype(np.float32), 0
            return (values.astype(np.float32), 0) if self.backend == "float" else (values, int(projection.weight_exp))
        if self.backend == "float":
            if network.is_float:
                return values.astype(np.float32), 0
            effective, _ = truncate_weights(values, projection.num_weight_bits)
            return (effective * 2.0 ** (projection.weight_exp + 6)).astype(np.float32), 0
        if learning:
            sign_mode = getattr(projection.learning, "sign_mode", "mixed")
            return learning_dense_weights(values, sign_mode, projection.num_weight_bits), int(projection.weight_exp)
        effective, n = truncate_weights(values, projection.num_weight_bits)
        return effective >> n, int(projection.weight_exp) + n

    def _compile_projections(self, network: Network) -> K.Synapses:
        table = np.zeros(len(network.projections), dtype=K.PROJECTION_DTYPE)
        weight_parts, indptr_parts, post_parts, delay_parts = [], [], [], []
        w_off = idx_off = syn_off = ring_off = 0
        for row, projection in zip(table, network.projections):
            n_pre = network.source_size(projection.source)
            n_post = network.source_size(projection.target)
            learning = projection.learning is not None
            dense = isinstance(projection, Dense) and (np.ndim(projection.delay) == 0 or learning)
            if learning and not (isinstance(projection, Dense) and np.ndim(projection.delay) == 0):
                raise ValueError(f"{projection.owner()}: learning needs a Dense projection with a scalar delay")
            if dense:
                values = np.ascontiguousarray(projection.weights.T).ravel()
                stored, shift = self._stored_weights(network, projection, values, learning)
                indptr = np.zeros(0, dtype=np.int64)
                post = np.zeros(0, dtype=np.int32)
                delays = np.zeros(0, dtype=np.uint8)
            else:
                indptr, post, values, delays = projection.synapses(n_pre, n_post)
                stored, shift = self._stored_weights(network, projection, values, learning)
            source = None if projection.source == INPUT else self.populations[projection.source]
            target = self.populations[projection.target]
            ring_len = projection.max_delay() + 2
            row["kind"] = K.DENSE if dense else K.CSR
            row["src_group"] = 0 if source is None else source.index + 1
            row["src_start"] = 0 if source is None else source.start
            row["n_src"] = n_pre
            row["tgt_pop"] = target.index
            row["tgt_start"] = target.start - self.n_inputs
            row["n_tgt"] = n_post
            row["w_off"] = w_off
            row["idx_off"] = idx_off
            row["syn_off"] = syn_off
            row["ring_off"] = ring_off
            row["ring_len"] = ring_len
            row["shift"] = shift
            row["delay"] = int(np.max(projection.delay)) if dense else 0
            row["graded"] = int(projection.num_message_bits > 0)
            if not dense and shift < 0 and np.unique(delays).size > 1:
                # Lava's DelayDense/DelaySparse shift each delay's partial sum on its own.
                row["send_shift"], row["shift"] = shift, 0
            weight_parts.append(stored)
            indptr_parts.append(indptr)
            post_parts.append(post)
            delay_parts.append(delays)
            w_off += stored.size
            idx_off += indptr.size
            syn_off += post.size
            ring_off += ring_len * n_post
        if self.backend == "float":
            dtype = np.float32
        else:
            dtype = _narrowest_int(weight_parts, any(p.learning is not None for p in network.projections))
        weights = np.concatenate([w.astype(dtype) for w in weight_parts]) if weight_parts else np.zeros(1, dtype)
        ring_dtype = np.float32 if self.backend == "float" else np.int32
        partial_size = ring_off if np.any(table["send_shift"] < 0) else 1
        return K.Synapses(table, weights, np.concatenate(indptr_parts + [np.zeros(1, np.int64)]),
                          np.concatenate(post_parts + [np.zeros(1, np.int32)]),
                          np.concatenate(delay_parts + [np.zeros(1, np.uint8)]),
                          np.zeros(max(ring_off, 1), dtype=ring_dtype), np.zeros(max(partial_size, 1), dtype=ring_dtype))

    def _attach_learning(self, p: int, projection):
        row = self.synapses.table[p]
        n_pre, n_post = int(row["n_src"]), int(row["n_tgt"])
        w_off = int(row["w_off"])
        weights = self.synapses.weights[w_off:w_off + n_pre * n_post].reshape(n_pre, n_post)
        pre_start = int(row["src_start"])
        post_start = self.populations[projection.target].start
        pre = self.events.spikes[pre_start:pre_start + n_pre]
        post = self.events.spikes[post_start:post_start + n_post]
        rule = projection.learning
        scale = 1.0 if self.backend == "loihi" or self.network.is_float else 2.0 ** (projection.weight_exp + 6)
        if isinstance(rule, LearningRule):
            if self.backend == "float":
                return attach_rule(rule, weights, pre, post, "float", weight_scale=scale)
            return attach_rule(rule, weights, pre, post, "loihi")
        if not hasattr(rule, "attach"):
            raise ValueError(f"{projection.owner()}: learning must be a pipeline.snn.learning.rule.LearningRule (or "
                             f"an object with attach()), got {type(rule).__name__}")
        if self.backend == "float":
            return rule.attach(weights, pre, post, "float", weight_scale=scale)
        return rule.attach(weights, pre, post, "loihi")

    # ------------------------------------------------------------------ running
    def step(self, input_indices: np.ndarray, payloads: np.ndarray | None = None) -> np.ndarray:
        """Advance one step with ``input_indices`` (int32 (k,), duplicates allowed) active.

        ``payloads`` (k,) integers: the graded value of each listed spike, read by projections with
        num_message_bits > 0 (default 1; for a duplicated index the last payload counts). Returns the
        output population's spikes, uint8 (n_outputs,), a view valid until the next step.
        """
        if type(input_indices) is not np.ndarray or input_indices.dtype != np.int32 or input_indices.ndim != 1:
            input_indices = _as_indices(input_indices)
        if self.graded:
            self._set_payloads(input_indices, payloads)
        bad = self._step(input_indices, self.t, *self._args)
        if bad >= 0:
            raise ValueError(f"input index {int(input_indices[bad])} at position {bad} is outside "
                             f"[0, {self.n_inputs}) (network.n_inputs)")
        for learner, pop in self._learners:
            updates = learner.step(self.t)
            if updates:
                self.counters.add_learning_updates(pop, updates)
        self.t += 1
        self.counters.steps += 1
        return self._output

    def _set_payloads(self, input_indices: np.ndarray, payloads) -> None:
        if type(payloads) is np.ndarray and payloads.dtype.kind in "iu" and payloads.shape == input_indices.shape:
            K.set_payloads(input_indices, payloads, self.events.payload, self.n_inputs)   # the fast path (~1 µs)
            return
        if payloads is None:
            payloads = 1
        elif np.shape(payloads) != input_indices.shape:
            raise ValueError(f"payloads must have the shape of the input indices {input_indices.shape}, "
                             f"got {np.shape(payloads)}")
        valid = (input_indices >= 0) & (input_indices < self.n_inputs)
        self.events.payload[input_indices[valid]] = np.broadcast_to(payloads, input_indices.shape)[valid]

    def warmup(self) -> None:
        """Run the (already compiled) step kernel once with and once without input, then reset."""
        self.step(np.zeros(0, dtype=np.int32))
        if self.n_inputs:
            self.step(np.zeros(1, dtype=np.int32))
        self.reset()

    def reset(self) -> None:
        """Zero all state, rings, spikes, counters and the step number (weights are kept)."""
        for array in self.state:
            array[:] = 0
        self.synapses.ring[:] = 0
        self.synapses.partial[:] = 0
        self.events.spikes[:] = 0
        self.events.groups["count"] = 0
        self.counters.reset()
        self.t = 0
        for learner, _ in self._learners:
            if hasattr(learner, "reset"):
                learner.reset()

    # ------------------------------------------------------------------ probes
    @property
    def weights(self) -> np.ndarray:
        """The weights the kernel reads, all projections concatenated (see pipeline.snn.kernels.Synapses)."""
        return self.synapses.weights

    @property
    def input_spikes(self) -> int:
        """Distinct input axons that spiked in the last step."""
        return int(self.events.groups[0]["count"])

    def _placement(self, population: str) -> Placement:
        if population not in self.populations:
            raise ValueError(f"no population named {population!r} (have {list(self.populations)})")
        return self.populations[population]

    def spikes_of(self, population: str) -> np.ndarray:
        """uint8 (size,) spikes of ``population`` this step (a view)."""
        placement = self._placement(population)
        return self.events.spikes[placement.start:placement.start + placement.size]

    def u(self, population: str) -> np.ndarray:
        """Current u of a population built with probe_u=True (a view, Loihi units or float)."""
        placement = self._placement(population)
        if not placement.probe_u:
            raise ValueError(f"population {population!r} is not probed (probe_u=False)")
        lo = placement.start - self.n_inputs
        return self.state.u[lo:lo + placement.size]

    def v(self, population: str) -> np.ndarray:
        """Voltage v of a population built with probe_v=True (a view; 0 on a spike step)."""
        placement = self._placement(population)
        if not placement.probe_v:
            raise ValueError(f"population {population!r} is not probed (probe_v=False)")
        lo = placement.start - self.n_inputs
        return self.state.v[lo:lo + placement.size]

    def thresholds(self, population: str) -> np.ndarray:
        """Writable view of the population's firing thresholds (n,), state units (loihi: int64 vth << 6;
        float: float32 vth * 64 or FloatLIF threshold). Writes take effect at the next step and survive
        ``reset`` (homeostasis: pipeline.snn.learning.homeostasis)."""
        placement = self._placement(population)
        lo = placement.start - self.n_inputs
        return self.params.threshold[lo:lo + placement.size]

    def dense_view(self, projection: str) -> np.ndarray:
        """Writable (n_pre, n_post) view of a dense projection's stored weights (loihi: integer mantissas as
        the kernel reads them, float: float32). Writes take effect at the next step (e.g. weight
        normalisation between presentations: pipeline.snn.learning.normalization)."""
        names = [p.name for p in self.network.projections]
        if projection not in names:
            raise ValueError(f"no projection named {projection!r} (have {names})")
        row = self.synapses.table[names.index(projection)]
        if row["kind"] != K.DENSE:
            raise ValueError(f"projection {projection!r} is stored sparse; only dense projections have a dense view")
        n_pre, n_post, w_off = int(row["n_src"]), int(row["n_tgt"]), int(row["w_off"])
        return self.synapses.weights[w_off:w_off + n_pre * n_post].reshape(n_pre, n_post)

    def learner(self, projection: str):
        """The learner attached to a learning projection (what its rule's attach returned)."""
        names = [p.name for p in self.network.projections if p.learning is not None]
        if projection not in names:
            raise ValueError(f"no learning projection named {projection!r} (have {names})")
        return self._learners[names.index(projection)][0]

    def learned_weights(self, projection: str) -> np.ndarray:
        """The current weights of a learning projection as a (n_post, n_pre) copy in the description's
        units (integer mantissas with the projection's weight_exp on loihi), ready for ``Dense(weights=...)``."""
        view = self.dense_view(projection)
        described = self.network.projection(projection)
        if described.learning is None:
            raise ValueError(f"projection {projection!r} has no learning rule; its weights are the description's")
        weights = view.T.copy()
        if self.backend == "float" and not self.network.is_float:
            weights = weights / 2.0 ** (described.weight_exp + 6)
        return weights

    def weight_row_bytes(self) -> int:
        """Bytes of one weight of this runtime's storage (1 int8, 2 int16, 4 float32)."""
        return self.synapses.weights.itemsize


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
