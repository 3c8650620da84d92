"""numba step kernels of both backends: one call advances the whole network by one step.

Index space: input axons are ``[0, n_inputs)``, population neurons follow, in population order. A
"group" is the input port (group 0) or a population (group p + 1); ``groups[g] = (start, size, count)``
with ``active[start:start + count]`` the indices that spiked in group g this step (event lists).

Projection table ``proj`` (int64, one row per projection, columns below). Dense weights are stored
input-major (the row of pre axon ``i`` is contiguous, n_tgt long); CSR synapses of pre ``i`` are
``indptr[IDX_OFF + i] .. indptr[IDX_OFF + i + 1]`` (local), with post index, weight and delay at
``SYN_OFF``/``W_OFF`` plus that local position. Each projection owns a ring of RING_LEN slots of n_tgt
accumulators: a spike at step t adds its weights to slot (t + 1 + delay) % RING_LEN, and slot
t % RING_LEN is delivered to the target (and zeroed) at the start of step t.

Step order (Lava's): clear last step's spikes; load input spikes; deliver ring slots into a_in; update
every neuron (emit spikes); accumulate spiking sources' weight rows into the rings. Nothing allocates.
"""
from __future__ import annotations

import numpy as np
from numba import njit

KIND, SRC_GROUP, SRC_START, N_SRC, TGT_POP, TGT_START, N_TGT, W_OFF, IDX_OFF, SYN_OFF, RING_OFF, RING_LEN, \
    SHIFT, DELAY = range(14)
N_PROJ_COLUMNS = 14
DENSE, CSR = 0, 1

# neuron state rows (loihi int64; float backend float32 uses U, V, A_IN and a separate refractory counter)
U, V, A_IN, REFRACTORY_LEFT = range(4)
# loihi parameter rows: U_MULT = 4095 - du, V_MULT = 4096 - dv, THRESHOLD = vth << 6, BIAS = bias_mant << bias_exp
U_MULT, V_MULT, THRESHOLD, BIAS, REFRACTORY = range(5)

# counters columns (pipeline.snn.counters.FIELDS)
C_SYN, C_ACTIVE, C_INACTIVE, C_SPIKES = range(4)

UV_LIMIT = 1 << 23
# float backend: decaying states are flushed to 0 below this magnitude; without it they end as float32
# subnormals, whose arithmetic is ~100x slower on x86 (numba does not set flush-to-zero).
FLUSH_BELOW = np.float32(1e-30)


@njit(cache=True)
def _begin_step(inputs, spikes, active, groups, counters):
    """Clear last step's spikes, zero the last-step counters, load the input spikes (deduplicated).

    Returns -1, or the position in ``inputs`` of an index outside [0, groups[0, 1]).
    """
    n_inputs = groups[0, 1]
    for k in range(inputs.shape[0]):
        if inputs[k] < 0 or inputs[k] >= n_inputs:
            return k
    for g in range(groups.shape[0]):
        start = groups[g, 0]
        for k in range(groups[g, 2]):
            spikes[active[start + k]] = 0
        groups[g, 2] = 0
    counters[0, :, :] = 0
    count = 0
    for k in range(inputs.shape[0]):
        index = inputs[k]
        if spikes[index] == 0:
            spikes[index] = 1
            active[count] = index
            count += 1
    groups[0, 2] = count
    return -1


@njit(cache=True)
def _accumulate(t, spikes, active, groups, proj, weights, indptr, post, delays, ring, counters):
    """Add the weight rows of every source that spiked this step into the projections' rings."""
    for p in range(proj.shape[0]):
        g = proj[p, SRC_GROUP]
        start = groups[g, 0]
        count = groups[g, 2]
        if count == 0:
            continue
        n_tgt = proj[p, N_TGT]
        ring_len = proj[p, RING_LEN]
        ring_off = proj[p, RING_OFF]
        w_off = proj[p, W_OFF]
        src_start = proj[p, SRC_START]
        ops = 0
        if proj[p, KIND] == DENSE:
            slot = ring_off + ((t + 1 + proj[p, DELAY]) % ring_len) * n_tgt
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
            idx_off = proj[p, IDX_OFF]
            syn_off = proj[p, SYN_OFF]
            for k in range(count):
                row = active[start + k] - src_start
                first = indptr[idx_off + row]
                last = indptr[idx_off + row + 1]
                for s in range(first, last):
                    slot = (t + 1 + delays[syn_off + s]) % ring_len
                    ring[ring_off + slot * n_tgt + post[syn_off + s]] += weights[w_off + s]
                ops += last - first
        counters[0, proj[p, TGT_POP], C_SYN] += ops
        counters[1, proj[p, TGT_POP], C_SYN] += ops


@njit(cache=True)
def _update_loihi(u, v, a_in, refractory_left, u_mult, v_mult, threshold, bias, refractory, spikes):
    """Bit-accurate CUBA LIF update of one population (branch-free, so it vectorizes).

    Writes u, v (after reset), refractory_left, spikes (0/1) in place, zeroes a_in; returns the number of
    neurons whose u, v, input or bias was nonzero (active updates).
    """
    n_active = 0
    for i in range(u.shape[0]):
        u0 = u[i]
        v0 = v[i]
        a = a_in[i]
        b = bias[i]
        n_active += ((u0 | v0 | a | b) != 0)
        x = u0 * u_mult[i]
        q = np.abs(x) >> 12
        u1 = (q if x >= 0 else -q) + (a << 6)
        u1 = u1 - 2 * UV_LIMIT if u1 > UV_LIMIT else (u1 + 2 * UV_LIMIT if u1 <= -UV_LIMIT else u1)
        y = v0 * v_mult[i]
        r = np.abs(y) >> 12
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
def _update_float(u, v, a_in, refractory_left, u_mult, v_mult, threshold, bias, refractory, spikes):
    """float32 CUBA LIF update of one population, same order as _update_loihi (u, v flushed to 0 below
    FLUSH_BELOW)."""
    n_active = 0
    for i in range(u.shape[0]):
        u0 = u[i]
        v0 = v[i]
        a = a_in[i]
        b = bias[i]
        n_active += ((u0 != 0) | (v0 != 0) | (a != 0) | (b != 0))
        u1 = u0 * u_mult[i] + a
        u1 = u1 if abs(u1) >= FLUSH_BELOW else np.float32(0.0)
        v1 = v0 * v_mult[i] + u1 + b
        v1 = v1 if abs(v1) >= FLUSH_BELOW else np.float32(0.0)
        left = refractory_left[i]
        resting = left > 0
        spike = (not resting) & (v1 > threshold[i])
        u[i] = u1
        v[i] = np.float32(0.0) if (resting | spike) else v1
        refractory_left[i] = np.int32(refractory[i]) if spike else left - resting
        spikes[i] = spike
        a_in[i] = 0
    return n_active


@njit(cache=True)
def _collect(g, n_active, spikes, active, groups, counters):
    """List group g's spiking neurons in ``active`` and count its neuron updates and spikes."""
    start = groups[g, 0]
    size = groups[g, 1]
    count = 0
    for i in range(start, start + size):
        if spikes[i]:
            active[start + count] = i
            count += 1
    groups[g, 2] = count
    pop = g - 1
    counters[0, pop, C_ACTIVE] = n_active
    counters[0, pop, C_INACTIVE] = size - n_active
    counters[0, pop, C_SPIKES] = count
    counters[1, pop, C_ACTIVE] += n_active
    counters[1, pop, C_INACTIVE] += size - n_active
    counters[1, pop, C_SPIKES] += count


@njit(cache=True)
def step_loihi(inputs, t, state, params, spikes, active, groups, proj, weights, indptr, post, delays, ring,
               counters):
    """One bit-accurate step. state int64 (4, n_neurons); params int64 (5, n_neurons); ring int32.

    Returns -1, or the position of an out-of-range input index (nothing else was changed then).
    """
    bad = _begin_step(inputs, spikes, active, groups, counters)
    if bad >= 0:
        return bad
    n_inputs = groups[0, 1]
    for p in range(proj.shape[0]):
        n_tgt = proj[p, N_TGT]
        slot = proj[p, RING_OFF] + (t % proj[p, RING_LEN]) * n_tgt
        tgt = proj[p, TGT_START]
        a_in = state[A_IN, tgt:tgt + n_tgt]
        acc = ring[slot:slot + n_tgt]
        shift = proj[p, SHIFT]
        if shift >= 0:
            for j in range(n_tgt):
                a_in[j] += np.int64(acc[j]) << shift
                acc[j] = 0
        else:
            for j in range(n_tgt):
                a_in[j] += np.int64(acc[j]) >> -shift
                acc[j] = 0
    for g in range(1, groups.shape[0]):
        lo = groups[g, 0] - n_inputs
        hi = lo + groups[g, 1]
        n_active = _update_loihi(state[U, lo:hi], state[V, lo:hi], state[A_IN, lo:hi], state[REFRACTORY_LEFT, lo:hi],
                                 params[U_MULT, lo:hi], params[V_MULT, lo:hi], params[THRESHOLD, lo:hi],
                                 params[BIAS, lo:hi], params[REFRACTORY, lo:hi], spikes[lo + n_inputs:hi + n_inputs])
        _collect(g, n_active, spikes, active, groups, counters)
    _accumulate(t, spikes, active, groups, proj, weights, indptr, post, delays, ring, counters)
    return -1


@njit(cache=True)
def step_float(inputs, t, state, params, refractory_left, spikes, active, groups, proj, weights, indptr, post,
               delays, ring, counters):
    """One float32 step, same order as step_loihi. state float32 (3, n): u, v, a_in; params float32
    (5, n): u decay factor, v decay factor, threshold, bias, refractory steps; refractory_left int32 (n,)."""
    bad = _begin_step(inputs, spikes, active, groups, counters)
    if bad >= 0:
        return bad
    n_inputs = groups[0, 1]
    for p in range(proj.shape[0]):
        n_tgt = proj[p, N_TGT]
        slot = proj[p, RING_OFF] + (t % proj[p, RING_LEN]) * n_tgt
        tgt = proj[p, TGT_START]
        a_in = state[A_IN, tgt:tgt + n_tgt]
        acc = ring[slot:slot + n_tgt]
        for j in range(n_tgt):
            a_in[j] += acc[j]
            acc[j] = 0.0
    for g in range(1, groups.shape[0]):
        lo = groups[g, 0] - n_inputs
        hi = lo + groups[g, 1]
        n_active = _update_float(state[U, lo:hi], state[V, lo:hi], state[A_IN, lo:hi], refractory_left[lo:hi],
                                 params[U_MULT, lo:hi], params[V_MULT, lo:hi], params[THRESHOLD, lo:hi],
                                 params[BIAS, lo:hi], params[REFRACTORY, lo:hi], spikes[lo + n_inputs:hi + n_inputs])
        _collect(g, n_active, spikes, active, groups, counters)
    _accumulate(t, spikes, active, groups, proj, weights, indptr, post, delays, ring, counters)
    return -1
