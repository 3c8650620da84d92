"""numba step kernels of both backends: one call advances the whole network by one step.

The kernels take parameter and state NamedTuples of arrays (Norse's ``LIFParameters``/``LIFState``
style; numba unboxes them field by field): neuron constants (:class:`LoihiParams`,
:class:`FloatParams`) and neuron state (:class:`LoihiState`, :class:`FloatState`), each field an array
over all population neurons in population order; the spike event lists (:class:`Events`); and the
synapses with their delay rings (:class:`Synapses`), whose ``table`` is a record array with one row
per projection (:data:`PROJECTION_DTYPE`). Counters are pipeline.snn.counters' int64 array.

Index space: input axons are ``[0, n_inputs)``, population neurons follow, in population order. A
"group" is the input port (group 0) or a population (group p + 1); ``events.groups[g]`` holds its
``start``, ``size`` and ``count``, with ``events.active[start:start + count]`` the indices that spiked
in group g this step. State and parameter arrays index population neurons only (global index minus
n_inputs).

Synapse storage (``Synapses``): dense weights are stored input-major (the row of pre axon ``i`` is
contiguous, ``n_tgt`` long, at ``w_off + i * n_tgt``); CSR synapses of pre ``i`` are
``indptr[idx_off + i] .. indptr[idx_off + i + 1]`` (local), with post index, weight and delay at
``syn_off``/``w_off`` plus that local position. Each projection owns a ring of ``ring_len`` slots of
``n_tgt`` accumulators: a spike at step t adds its weights to slot (t + 1 + delay) % ring_len, and
slot t % ring_len is delivered to the target's a_in (and zeroed) at the start of step t.

Step order (Lava's): clear last step's spikes; load input spikes; deliver ring slots into a_in; update
every neuron (emit spikes); accumulate spiking sources' weight rows into the rings. Nothing allocates.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from pipeline.snn.counters import ACTIVE_UPDATES, INACTIVE_UPDATES, LAST, SPIKES, SYNAPTIC_OPS, TOTAL

#: One row per projection. kind: DENSE or CSR; src_group: event group of the source; src_start: global
#: index of the source's first neuron; n_src, n_tgt: sizes; tgt_pop: target population index (counters);
#: tgt_start: first target neuron in the state arrays; w_off, idx_off, syn_off: offsets into weights,
#: indptr and post/delays; ring_off, ring_len: the delay ring (ring_len slots of n_tgt); shift: the
#: left shift (negative: arithmetic right shift) applied to the delivered sum (loihi: weight_exp plus
#: the zeroed low weight bits; float: 0); delay: the dense projection's scalar delay in steps;
#: graded: 1 when each source spike adds payload * weight (events.payload) instead of the weight;
#: send_shift: for CSR projections with several delays and a negative shift (loihi), the shift applied
#: to each (target, delay, sending step) partial sum before it enters the ring (Lava's DelayDense and
#: DelaySparse); ``shift`` is then 0.
PROJECTION_DTYPE = np.dtype([(name, np.int64) for name in (
    "kind", "src_group", "src_start", "n_src", "tgt_pop", "tgt_start", "n_tgt", "w_off", "idx_off", "syn_off",
    "ring_off", "ring_len", "shift", "delay", "graded", "send_shift")])
#: One row per event group (input port, then each population): first global index, size, spikes this step.
GROUP_DTYPE = np.dtype([("start", np.int64), ("size", np.int64), ("count", np.int64)])
DENSE, CSR = 0, 1

#: u and v are 24-bit signed on Loihi: u wraps once past +-2**23, v saturates at +-(2**23 - 1).
UV_LIMIT = 1 << 23
#: Synaptic input enters u shifted up by 6 bits (weights are 8-bit mantissas of a 14-bit input scale).
A_IN_SHIFT = 6
#: du and dv are 12-bit: the decay multiplies by (4096 - d) / 4096, i.e. multiply then shift right 12.
DECAY_BITS = 12
# float backend: decaying states are flushed to 0 below this magnitude; without it they end as float32
# subnormals, whose arithmetic is ~100x slower on x86 (numba does not set flush-to-zero).
FLUSH_BELOW = np.float32(1e-30)


class LoihiParams(NamedTuple):
    """Loihi neuron constants, int64 (n_neurons,) each, derived once at build from LoihiLIF.

    u_mult = 4095 - du and v_mult = 4096 - dv (12-bit decays as multipliers over 2**12; Lava's
    off-by-one on u included); threshold = vth << 6 (state units); bias = bias_mant << bias_exp
    (arithmetic right shift for a negative exponent; state units, added to v each step);
    refractory: steps v is held at 0 after a spike.
    """

    u_mult: np.ndarray
    v_mult: np.ndarray
    threshold: np.ndarray
    bias: np.ndarray
    refractory: np.ndarray


class LoihiState(NamedTuple):
    """Loihi neuron state, int64 (n_neurons,) each: u, v (24-bit signed values), a_in (this step's
    synaptic input, summed over projections after each one's shift; unbounded, as in Lava), and
    refractory_left (steps)."""

    u: np.ndarray
    v: np.ndarray
    a_in: np.ndarray
    refractory_left: np.ndarray


class FloatParams(NamedTuple):
    """Float neuron constants (n_neurons,): u_decay, v_decay (per-step factors), threshold, bias
    (float32, the weights' units), refractory (int32 steps)."""

    u_decay: np.ndarray
    v_decay: np.ndarray
    threshold: np.ndarray
    bias: np.ndarray
    refractory: np.ndarray


class FloatState(NamedTuple):
    """Float neuron state (n_neurons,): u, v, a_in float32; refractory_left int32 steps."""

    u: np.ndarray
    v: np.ndarray
    a_in: np.ndarray
    refractory_left: np.ndarray


class Events(NamedTuple):
    """This step's spikes: spikes uint8 (n_total,) 0/1 per global index; active int32 (n_total,) the
    spiking indices of each group, listed from the group's start; groups GROUP_DTYPE (n_groups,);
    payload int32 (n_total,) the graded value of each input axon's spike (read by graded projections
    only; written by the runtime before the step)."""

    spikes: np.ndarray
    active: np.ndarray
    groups: np.ndarray
    payload: np.ndarray


class Synapses(NamedTuple):
    """All projections: table PROJECTION_DTYPE (n_projections,); weights (loihi: int8/int16/int32
    mantissas, float: float32); indptr int64, post int32, delays uint8 (CSR projections); ring (loihi
    int32, float float32) the delay rings; partial (like ring) the per-step partial sums of
    projections with a send_shift (zero between steps)."""

    table: np.ndarray
    weights: np.ndarray
    indptr: np.ndarray
    post: np.ndarray
    delays: np.ndarray
    ring: np.ndarray
    partial: np.ndarray


@njit(cache=True)
def set_payloads(inputs, payloads, payload, n_inputs):
    """Write the graded value payloads[k] of input spike inputs[k] into payload (n_total,) int32 for the
    indices inside [0, n_inputs) (the step reports the others); the last of a duplicated index counts."""
    for k in range(inputs.shape[0]):
        i = inputs[k]
        if 0 <= i < n_inputs:
            payload[i] = payloads[k]


@njit(cache=True)
def _begin_step(inputs, events, counters):
    """Clear last step's spikes, zero the last-step counters, load the input spikes (deduplicated).

    Returns -1, or the position in ``inputs`` of an index outside [0, n_inputs) (nothing changed then).
    """
    spikes, active, groups = events.spikes, events.active, events.groups
    n_inputs = groups[0].size
    for k in range(inputs.shape[0]):
        if inputs[k] < 0 or inputs[k] >= n_inputs:
            return k
    for g in range(groups.shape[0]):
        start = groups[g].start
        for k in range(groups[g].count):
            spikes[active[start + k]] = 0
        groups[g].count = 0
    counters[LAST, :, :] = 0
    count = 0
    for k in range(inputs.shape[0]):
        index = inputs[k]
        if spikes[index] == 0:
            spikes[index] = 1
            active[count] = index
            count += 1
    groups[0].count = count
    return -1


@njit(cache=True)
def _deliver(t, a_in, synapses):
    """a_in[target] += ring slot t of every projection, shifted by the projection's shift; the slot is zeroed.

    loihi: a_in += int64(slot) << shift (>> -shift for a negative shift, floor); float: shift is 0.
    """
    ring = synapses.ring
    for p in range(synapses.table.shape[0]):
        row = synapses.table[p]
        n_tgt = row.n_tgt
        slot = row.ring_off + (t % row.ring_len) * n_tgt
        target = a_in[row.tgt_start:row.tgt_start + n_tgt]
        acc = ring[slot:slot + n_tgt]
        shift = row.shift
        if shift > 0:
            for j in range(n_tgt):
                target[j] += np.int64(acc[j]) << shift
                acc[j] = 0
        elif shift < 0:
            for j in range(n_tgt):
                target[j] += np.int64(acc[j]) >> -shift
                acc[j] = 0
        else:
            for j in range(n_tgt):
                target[j] += acc[j]
                acc[j] = 0


@njit(cache=True)
def _accumulate_graded(t, row, start, count, events, synapses, target):
    """Graded projection (input port source): each spiking axon adds payload * weight into ``target``
    (the ring, or ``partial`` with a send_shift). Returns the synaptic operations."""
    active, payload = events.active, events.payload
    weights = synapses.weights
    n_tgt = row.n_tgt
    ops = 0
    if row.kind == DENSE:
        slot = row.ring_off + ((t + 1 + row.delay) % row.ring_len) * n_tgt
        acc = target[slot:slot + n_tgt]
        k = 0
        # Four rows per pass, as the binary Dense path; each row's product is added and stored on its own
        # (in the target's type), so sums round and wrap exactly as one row at a time.
        while k + 4 <= count:
            i0, i1, i2, i3 = active[start + k], active[start + k + 1], active[start + k + 2], active[start + k + 3]
            p0, p1, p2, p3 = payload[i0], payload[i1], payload[i2], payload[i3]
            r0 = row.w_off + (i0 - row.src_start) * n_tgt
            r1 = row.w_off + (i1 - row.src_start) * n_tgt
            r2 = row.w_off + (i2 - row.src_start) * n_tgt
            r3 = row.w_off + (i3 - row.src_start) * n_tgt
            w0 = weights[r0:r0 + n_tgt]
            w1 = weights[r1:r1 + n_tgt]
            w2 = weights[r2:r2 + n_tgt]
            w3 = weights[r3:r3 + n_tgt]
            for j in range(n_tgt):
                acc[j] += w0[j] * p0
                acc[j] += w1[j] * p1
                acc[j] += w2[j] * p2
                acc[j] += w3[j] * p3
            k += 4
        while k < count:
            index = active[start + k]
            p = payload[index]
            r0 = row.w_off + (index - row.src_start) * n_tgt
            w0 = weights[r0:r0 + n_tgt]
            for j in range(n_tgt):
                acc[j] += w0[j] * p
            k += 1
        ops = count * n_tgt
    else:
        indptr, post, delays = synapses.indptr, synapses.post, synapses.delays
        for k in range(count):
            index = active[start + k]
            p = payload[index]
            pre = index - row.src_start
            first = indptr[row.idx_off + pre]
            last = indptr[row.idx_off + pre + 1]
            for s in range(first, last):
                slot = (t + 1 + delays[row.syn_off + s]) % row.ring_len
                target[row.ring_off + slot * n_tgt + post[row.syn_off + s]] += weights[row.w_off + s] * p
            ops += last - first
    return ops


@njit(cache=True)
def _flush_partial(row, synapses):
    """Move a send_shift projection's partial sums into its ring, each shifted (floor) on its own."""
    partial, ring = synapses.partial, synapses.ring
    divisor = np.int64(1) << -row.send_shift  # floor division by 2**k is the arithmetic shift right
    for i in range(row.ring_off, row.ring_off + row.ring_len * row.n_tgt):
        if partial[i] != 0:
            ring[i] += partial[i] // divisor
            partial[i] = 0


@njit(cache=True)
def _accumulate(t, events, synapses, counters):
    """Add the weight rows of every source that spiked this step into the projections' rings."""
    active, groups = events.active, events.groups
    weights, ring = synapses.weights, synapses.ring
    for p in range(synapses.table.shape[0]):
        row = synapses.table[p]
        start = groups[row.src_group].start
        count = groups[row.src_group].count
        if count == 0:
            continue
        n_tgt = row.n_tgt
        ring_len = row.ring_len
        w_off = row.w_off
        src_start = row.src_start
        ops = 0
        if row.graded:
            ops = _accumulate_graded(t, row, start, count, events, synapses,
                                     synapses.partial if row.send_shift < 0 else ring)
            if row.send_shift < 0:
                _flush_partial(row, synapses)
        elif row.kind == DENSE:
            slot = row.ring_off + ((t + 1 + row.delay) % ring_len) * n_tgt
            acc = ring[slot:slot + n_tgt]
            rows = active[start:start + count]
            k = 0
            # Four rows per pass: one accumulator load/store per four rows and four read streams in
            # flight; the additions keep the one-row-at-a-time order, so float sums round the same.
            while k + 4 <= count:
                r0 = w_off + (rows[k] - src_start) * n_tgt
                r1 = w_off + (rows[k + 1] - src_start) * n_tgt
                r2 = w_off + (rows[k + 2] - src_start) * n_tgt
                r3 = w_off + (rows[k + 3] - src_start) * n_tgt
                w0 = weights[r0:r0 + n_tgt]
                w1 = weights[r1:r1 + n_tgt]
                w2 = weights[r2:r2 + n_tgt]
                w3 = weights[r3:r3 + n_tgt]
                for j in range(n_tgt):
                    acc[j] = acc[j] + w0[j] + w1[j] + w2[j] + w3[j]
                k += 4
            while k < count:
                r0 = w_off + (rows[k] - src_start) * n_tgt
                w0 = weights[r0:r0 + n_tgt]
                for j in range(n_tgt):
                    acc[j] += w0[j]
                k += 1
            ops = count * n_tgt
        else:
            indptr, post, delays = synapses.indptr, synapses.post, synapses.delays
            ring_off = row.ring_off
            # With a send_shift, sums collect in ``partial`` and enter the ring shifted, per delay slot.
            target = synapses.partial if row.send_shift < 0 else ring
            for k in range(count):
                pre = active[start + k] - src_start
                first = indptr[row.idx_off + pre]
                last = indptr[row.idx_off + pre + 1]
                for s in range(first, last):
                    slot = (t + 1 + delays[row.syn_off + s]) % ring_len
                    target[ring_off + slot * n_tgt + post[row.syn_off + s]] += weights[w_off + s]
                ops += last - first
            if row.send_shift < 0:
                _flush_partial(row, synapses)
        counters[LAST, row.tgt_pop, SYNAPTIC_OPS] += ops
        counters[TOTAL, row.tgt_pop, SYNAPTIC_OPS] += ops


@njit(cache=True)
def lif_loihi(state, params, lo, hi, spikes):
    """Bit-accurate CUBA LIF update of neurons [lo, hi) (one population; Lava's PyLifModelBitAcc).

    Integers throughout; per neuron, with a_in this step's synaptic input::

        u' = sign(u * u_mult) * (|u * u_mult| >> 12) + (a_in << 6),  then wrapped once into 24 bits
             (u' > 2**23: u' - 2**24; u' <= -2**23: u' + 2**24)
        v' = sign(v * v_mult) * (|v * v_mult| >> 12) + u' + bias,    saturated to +-(2**23 - 1)
        spike = v' > threshold and not refractory;  v' = 0 on a spike or while refractory
        refractory_left = refractory on a spike, else one less while > 0;  a_in = 0

    Writes state in place and spikes[0:hi - lo] (0/1); branch-free, so it vectorizes. Returns the
    number of neurons whose u, v, input or bias was nonzero (active updates).
    """
    u = state.u[lo:hi]
    v = state.v[lo:hi]
    a_in = state.a_in[lo:hi]
    refractory_left = state.refractory_left[lo:hi]
    u_mult = params.u_mult[lo:hi]
    v_mult = params.v_mult[lo:hi]
    threshold = params.threshold[lo:hi]
    bias = params.bias[lo:hi]
    refractory = params.refractory[lo:hi]
    n_active = 0
    for i in range(u.shape[0]):
        u0 = u[i]
        v0 = v[i]
        a = a_in[i]
        b = bias[i]
        n_active += ((u0 | v0 | a | b) != 0)
        x = u0 * u_mult[i]
        q = np.abs(x) >> DECAY_BITS
        u1 = (q if x >= 0 else -q) + (a << A_IN_SHIFT)
        u1 = u1 - 2 * UV_LIMIT if u1 > UV_LIMIT else (u1 + 2 * UV_LIMIT if u1 <= -UV_LIMIT else u1)
        y = v0 * v_mult[i]
        r = np.abs(y) >> DECAY_BITS
        v1 = (r if y >= 0 else -r) + u1 + b
        v1 = min(max(v1, -(UV_LIMIT - 1)), UV_LIMIT - 1)
        left = refractory_left[i]
        resting = left > 0
        spike = (not resting) & (v1 > threshold[i])
        u[i] = u1
        v[i] = 0 if (resting | spike) else v1
        refractory_left[i] = refractory[i] if spike else left - resting
        spikes[i] = spike
        a_in[i] = 0
    return n_active


@njit(cache=True)
def lif_float(state, params, lo, hi, spikes):
    """float32 CUBA LIF update of neurons [lo, hi), same order as :func:`lif_loihi`::

        u' = u * u_decay + a_in                 (flushed to 0 below FLUSH_BELOW in magnitude)
        v' = v * v_decay + u' + bias            (flushed likewise)
        spike = v' > threshold and not refractory;  v' = 0 on a spike or while refractory
        refractory_left = refractory on a spike, else one less while > 0;  a_in = 0

    Returns the number of active updates (nonzero u, v, input or bias).
    """
    u = state.u[lo:hi]
    v = state.v[lo:hi]
    a_in = state.a_in[lo:hi]
    refractory_left = state.refractory_left[lo:hi]
    u_decay = params.u_decay[lo:hi]
    v_decay = params.v_decay[lo:hi]
    threshold = params.threshold[lo:hi]
    bias = params.bias[lo:hi]
    refractory = params.refractory[lo:hi]
    n_active = 0
    for i in range(u.shape[0]):
        u0 = u[i]
        v0 = v[i]
        a = a_in[i]
        b = bias[i]
        n_active += ((u0 != 0) | (v0 != 0) | (a != 0) | (b != 0))
        u1 = u0 * u_decay[i] + a
        u1 = u1 if abs(u1) >= FLUSH_BELOW else np.float32(0.0)
        v1 = v0 * v_decay[i] + u1 + b
        v1 = v1 if abs(v1) >= FLUSH_BELOW else np.float32(0.0)
        left = refractory_left[i]
        resting = left > 0
        spike = (not resting) & (v1 > threshold[i])
        u[i] = u1
        v[i] = np.float32(0.0) if (resting | spike) else v1
        refractory_left[i] = refractory[i] if spike else left - resting
        spikes[i] = spike
        a_in[i] = 0
    return n_active


@njit(cache=True)
def _collect(g, n_active, events, counters):
    """List group g's spiking neurons in ``active`` and count its neuron updates and spikes."""
    spikes, active, groups = events.spikes, events.active, events.groups
    start = groups[g].start
    size = groups[g].size
    count = 0
    for i in range(start, start + size):
        if spikes[i]:
            active[start + count] = i
            count += 1
    groups[g].count = count
    pop = g - 1
    counters[LAST, pop, ACTIVE_UPDATES] = n_active
    counters[LAST, pop, INACTIVE_UPDATES] = size - n_active
    counters[LAST, pop, SPIKES] = count
    counters[TOTAL, pop, ACTIVE_UPDATES] += n_active
    counters[TOTAL, pop, INACTIVE_UPDATES] += size - n_active
    counters[TOTAL, pop, SPIKES] += count


@njit(cache=True)
def step_loihi(inputs, t, state, params, events, synapses, counters):
    """One bit-accurate step of every population: inputs int32 (k,) active input axons, t the step
    number; state LoihiState, params LoihiParams, events Events, synapses Synapses (ring int32),
    counters int64 (2, n_populations, len(FIELDS)).

    Returns -1, or the position of an out-of-range input index (nothing else was changed then).
    """
    bad = _begin_step(inputs, events, counters)
    if bad >= 0:
        return bad
    _deliver(t, state.a_in, synapses)
    groups = events.groups
    n_inputs = groups[0].size
    for g in range(1, groups.shape[0]):
        start = groups[g].start
        lo = start - n_inputs
        n_active = lif_loihi(state, params, lo, lo + groups[g].size, events.spikes[start:start + groups[g].size])
        _collect(g, n_active, events, counters)
    _accumulate(t, events, synapses, counters)
    return -1


@njit(cache=True)
def step_float(inputs, t, state, params, events, synapses, counters):
    """One float32 step, same order and arguments as :func:`step_loihi` (FloatState, FloatParams,
    ring float32)."""
    bad = _begin_step(inputs, events, counters)
    if bad >= 0:
        return bad
    _deliver(t, state.a_in, synapses)
    groups = events.groups
    n_inputs = groups[0].size
    for g in range(1, groups.shape[0]):
        start = groups[g].start
        lo = start - n_inputs
        n_active = lif_float(state, params, lo, lo + groups[g].size, events.spikes[start:start + groups[g].size])
        _collect(g, n_active, events, counters)
    _accumulate(t, events, synapses, counters)
    return -1
