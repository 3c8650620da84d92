"""numba kernels of surrogate-gradient BPTT for CUBA LIF layers: forward (float or loihi-integer) and backward.

A layer is a population of ``n`` CUBA LIF neurons fed by one feed-forward projection (``n_in`` sources,
input-major weights ``W[i, j]`` from source i to neuron j) and optionally a recurrent one from its own
spikes. Step semantics are the runtime's (pipeline.snn.kernels): a source spike at step t enters the
target's synaptic input at step t + 1, so at step t a layer reads its sources' events of step t - 1.

Events of a batch (CSR, one row per (sample, step)): ``indptr`` int64 (B, T + 1) global positions into
``index`` int32 (source neuron) and ``count`` (events in the step; 1 for spikes); step t of sample b is
``indptr[b, t]:indptr[b, t + 1]``.

Forward, float (pipeline.snn.kernels.lif_float, threshold 1)::

    u' = u * decay_u + a        v' = v * decay_v + u'        spike = v' > 1,  v = 0 after a spike

Forward, loihi (pipeline.snn.kernels.lif_loihi bit for bit, with the runtime's Dense delivery): a = sum of
stored integer weights (times count) shifted by ``shift`` (left, or arithmetic right = floor), then
u' = trunc(u * u_mult / 2**12) + (a << 6) wrapped into 24 bits, v' = trunc(v * v_mult / 2**12) + u'
saturated to 24 bits, spike = v' > threshold. Both write ``vnorm`` = v' / threshold (pre-reset) and
the spikes; the backward is the same for both modes (straight-through for the integer rounding: the
loihi layer is differentiated as the float layer with decays u_mult / 4096, v_mult / 4096 and weights
W * 2**shift * 64 / threshold, all in threshold units).

Backward (reverse time, reset not differentiated, float32): with gS the loss gradient w.r.t. this layer's
spikes and gV w.r.t. v' directly::

    g' = gS[t] * surrogate(vnorm[t] - 1) + gV[t] + gv * (1 - spike[t])
    gu = decay_u * gu + g'      ga[t] = gu      gv = decay_v * g'

gS[t] is the given gradient plus, from the layer this one feeds (effective weights W_next, input-major),
W_next ga_next[t + 1], plus, from a recurrent projection R, R ga[t + 1] (both summed as rows of the
target-major transposes, skipping zero gradients). Surrogates of x = v'/threshold - 1
with slope k: fast sigmoid 1 / (1 + k|x|)^2, arctan 1 / (1 + (pi/2 k x)^2), triangle max(0, 1 - k|x|).

Weight gradient (event-driven: only source events touch it): dW[i, :] = sum of count * ga[t + 1, :] over
the events (i, count) at step t. The events are regrouped by source (:func:`by_source`) and each row of dW
is summed by one thread in (sample, step) order, so the result does not depend on the thread count or
timing.

Parallel work (both cores): the forward and backward take samples, the weight gradient takes rows of dW,
from a shared counter (dynamic scheduling: a thread that the OS preempts delays only the sample it holds,
the other thread takes the rest), inside one parallel region per kernel call.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

# (OMP_WAIT_POLICY=PASSIVE for numba's OpenMP pool: pipeline/train/__init__.py.)

FAST_SIGMOID, ARCTAN, TRIANGLE = 0, 1, 2
SURROGATES = {"fast_sigmoid": FAST_SIGMOID, "arctan": ARCTAN, "triangle": TRIANGLE}
UV_LIMIT = 1 << 23       # 24-bit u and v (pipeline.snn.kernels)
DECAY_BITS = 12
A_IN_SHIFT = 6
FLUSH_BELOW = np.float32(1e-30)
#: rows of dW per work item of the weight gradient
ROWS_PER_ITEM = 16


@intrinsic
def _take(typingctx, counter):
    """Atomically increment counter[0] (int64 array) and return its previous value (the next work item)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        one = context.get_constant(types.int64, 1)
        return builder.atomic_rmw("add", array.data, one, "monotonic")
    return types.int64(counter), codegen


def workers(n_items: int) -> int:
    """Threads for a kernel call over n_items work items: numba's current thread count, at most n_items (the
    kernels take it as an argument: calling numba.get_num_threads inside a kernel would stop it caching)."""
    return max(1, min(numba.get_num_threads(), n_items))


@njit(cache=True, inline="always", error_model="numpy")
def _surrogate_row(kind, slope, vnorm_row, out):
    """out[j] = surrogate(vnorm_row[j] - 1) (float32), the branch on kind outside the loop."""
    one = np.float32(1.0)
    if kind == FAST_SIGMOID:
        for j in range(out.size):
            d = one + slope * abs(vnorm_row[j] - one)
            out[j] = one / (d * d)
    elif kind == ARCTAN:
        c = np.float32(0.5 * np.pi) * slope
        for j in range(out.size):
            z = c * (vnorm_row[j] - one)
            out[j] = one / (one + z * z)
    else:
        for j in range(out.size):
            out[j] = max(np.float32(0.0), one - slope * abs(vnorm_row[j] - one))


@njit(cache=True, inline="always")
def emit_spikes(b, t, n, spikes_row, out_indptr, out_index):
    """List the spiking neurons of (b, t) after position out_indptr[b, t]; set out_indptr[b, t + 1]."""
    pos = out_indptr[b, t]
    for j in range(n):
        if spikes_row[j]:
            out_index[pos] = j
            pos += 1
    out_indptr[b, t + 1] = pos


@njit(cache=True)
def _gather(acc, lo, hi, index, count, weights):
    """acc += count[k] * weights[index[k]] for the events k in lo..hi (a count of 1 adds the row as is)."""
    for k in range(lo, hi):
        row = weights[index[k]]
        c = count[k]
        if c == 1:
            for j in range(acc.size):
                acc[j] += row[j]
        else:
            for j in range(acc.size):
                acc[j] += row[j] * c


@njit(cache=True)
def _gather_spikes(acc, lo, hi, index, weights):
    """acc += weights[index[k]] for the spike events k in lo..hi."""
    for k in range(lo, hi):
        row = weights[index[k]]
        for j in range(acc.size):
            acc[j] += row[j]


@njit(cache=True)
def _lif_float_step(a, u, v, decay_u, decay_v, vnorm_row, spikes_row):
    """One float LIF step of a layer (u, v updated in place; v' and spikes written)."""
    for j in range(a.size):
        u1 = u[j] * decay_u[j] + a[j]
        u1 = u1 if abs(u1) >= FLUSH_BELOW else np.float32(0.0)
        v1 = v[j] * decay_v[j] + u1
        v1 = v1 if abs(v1) >= FLUSH_BELOW else np.float32(0.0)
        spike = v1 > 1.0
        u[j] = u1
        v[j] = np.float32(0.0) if spike else v1
        vnorm_row[j] = v1
        spikes_row[j] = spike


@njit(cache=True)
def _forward_float_sample(b, indptr, index, count, weights, recurrent, decay_u, decay_v, vnorm, spikes,
                          out_indptr, out_index):
    n_steps, n = vnorm.shape[1], vnorm.shape[2]
    has_rec = recurrent.shape[0] == n
    u = np.zeros(n, np.float32)
    v = np.zeros(n, np.float32)
    a = np.zeros(n, np.float32)
    r = np.zeros(n, np.float32)
    out_indptr[b, 0] = b * n_steps * n
    for t in range(n_steps):
        a[:] = 0
        if t >= 1:
            _gather(a, indptr[b, t - 1], indptr[b, t], index, count, weights)
            if has_rec:
                r[:] = 0
                _gather_spikes(r, out_indptr[b, t - 1], out_indptr[b, t], out_index, recurrent)
                for j in range(n):
                    a[j] += r[j]
        _lif_float_step(a, u, v, decay_u, decay_v, vnorm[b, t], spikes[b, t])
        emit_spikes(b, t, n, spikes[b, t], out_indptr, out_index)


@njit(cache=True, parallel=True)
def forward_float(indptr, index, count, weights, recurrent, decay_u, decay_v, vnorm, spikes, out_indptr, out_index,
                  n_workers):
    """Float forward of one layer over a batch. weights float32 (n_in, n); recurrent float32 (n, n)
    input-major or (0, 0); decay_u, decay_v float32 (n,). Writes vnorm float32 (B, T, n), spikes uint8
    (B, T, n) and the spike events (out_indptr (B, T + 1) int64, out_index int32 (B * T * n,)). n_workers:
    threads (:func:`workers` of B)."""
    n_batch = vnorm.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(n_workers):
        b = _take(counter)
        while b < n_batch:
            _forward_float_sample(b, indptr, index, count, weights, recurrent, decay_u, decay_v, vnorm, spikes,
                                  out_indptr, out_index)
            b = _take(counter)
    return 0


@njit(cache=True, error_model="numpy")
def _lif_loihi_step(s, r, has_rec, in_scale, rec_scale, u, v, u_mult, v_mult, threshold, vnorm_row, spikes_row):
    """One loihi LIF step of a layer from the int32 input sums s (and r, recurrent), bit-exact. The integer
    state is held in float64, where every value here (< 2**46) is exact: products, the power-of-two scalings
    (in_scale = 2**shift; a right shift is the floor of the scaled value) and floor(|x| / 2**12) are the
    integer operations' results, and the loop vectorizes (AVX2 has no 64-bit integer multiply)."""
    limit = np.float64(UV_LIMIT)
    decay_scale = np.float64(1.0 / (1 << DECAY_BITS))
    in_gain = np.float64(1 << A_IN_SHIFT)
    for j in range(s.size):
        a = np.floor(np.float64(s[j]) * in_scale)
        if has_rec:
            a += np.floor(np.float64(r[j]) * rec_scale)
        x = u[j] * u_mult[j]
        q = np.floor(abs(x) * decay_scale)
        u1 = (q if x >= 0 else -q) + a * in_gain
        u1 = u1 - 2 * limit if u1 > limit else (u1 + 2 * limit if u1 <= -limit else u1)
        y = v[j] * v_mult[j]
        q = np.floor(abs(y) * decay_scale)
        v1 = (q if y >= 0 else -q) + u1
        v1 = min(max(v1, -(limit - 1)), limit - 1)
        spike = v1 > threshold[j]
        u[j] = u1
        v[j] = 0.0 if spike else v1
        vnorm_row[j] = v1 / threshold[j]
        spikes_row[j] = spike


@njit(cache=True)
def _forward_loihi_sample(b, indptr, index, count, weights, shift, recurrent, rec_shift, u_mult, v_mult, threshold,
                          vnorm, spikes, out_indptr, out_index):
    n_steps, n = vnorm.shape[1], vnorm.shape[2]
    has_rec = recurrent.shape[0] == n
    u = np.zeros(n, np.float64)   # integer values (see _lif_loihi_step)
    v = np.zeros(n, np.float64)
    u_mult_f, v_mult_f, threshold_f = u_mult.astype(np.float64), v_mult.astype(np.float64), threshold.astype(np.float64)
    in_scale, rec_scale = 2.0 ** shift, 2.0 ** rec_shift
    s = np.zeros(n, np.int32)     # the runtime's ring slots are int32 too
    r = np.zeros(n, np.int32)
    out_indptr[b, 0] = b * n_steps * n
    for t in range(n_steps):
        s[:] = 0
        r[:] = 0
        if t >= 1:
            _gather(s, indptr[b, t - 1], indptr[b, t], index, count, weights)
            if has_rec:
                _gather_spikes(r, out_indptr[b, t - 1], out_indptr[b, t], out_index, recurrent)
        _lif_loihi_step(s, r, has_rec, in_scale, rec_scale, u, v, u_mult_f, v_mult_f, threshold_f, vnorm[b, t],
                        spikes[b, t])
        emit_spikes(b, t, n, spikes[b, t], out_indptr, out_index)


@njit(cache=True, parallel=True)
def forward_loihi(indptr, index, count, weights, shift, recurrent, rec_shift, u_mult, v_mult, threshold,
                  vnorm, spikes, out_indptr, out_index, n_workers):
    """Loihi-integer forward of one layer (bit-exact with the loihi runtime). weights int8/int16/int32 (n_in, n)
    stored mantissas (the narrowest type that holds them: less memory per event) (after Lava's truncation, as the runtime stores them), shift the projection's
    delivery shift; recurrent int32 (n, n) or (0, 0) with rec_shift; u_mult, v_mult, threshold int64 (n,)
    (pipeline.snn.kernels.LoihiParams). Writes vnorm = v' / threshold, spikes and spike events."""
    n_batch = vnorm.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(n_workers):
        b = _take(counter)
        while b < n_batch:
            _forward_loihi_sample(b, indptr, index, count, weights, shift, recurrent, rec_shift, u_mult, v_mult,
                                  threshold, vnorm, spikes, out_indptr, out_index)
            b = _take(counter)
    return 0


@njit(cache=True)
def _add_rows(acc, coef, rows):
    """acc += sum over k of coef[k] * rows[k] (zero coefficients skipped)."""
    for k in range(coef.size):
        c = coef[k]
        if c != 0:
            row = rows[k]
            for j in range(acc.size):
                acc[j] += c * row[j]


@njit(cache=True, error_model="numpy")
def _reverse_step(gs, sg, grad_v_row, spikes_row, gu, gv, decay_u, decay_v, out):
    """One step back in time: gs (dL/dspike) and sg (surrogate) -> out = ga[t]; gu, gv carried. grad_v_row:
    dL/dv' of the step or empty. (A separate small function: LLVM vectorizes it.)"""
    n = gs.size
    if grad_v_row.size == n:
        for j in range(n):
            gs[j] = gs[j] * sg[j] + grad_v_row[j]
    else:
        for j in range(n):
            gs[j] = gs[j] * sg[j]
    for j in range(n):
        g = gs[j] + (np.float32(0.0) if spikes_row[j] else gv[j])
        x = decay_u[j] * gu[j] + g
        gu[j] = x
        out[j] = x
        gv[j] = decay_v[j] * g


@njit(cache=True, error_model="numpy")
def _backward_sample(b, grad_spikes, grad_v, next_grad_a, next_weights, vnorm, spikes, decay_u, decay_v,
                     recurrent, kind, slope, grad_a):
    n_steps, n = vnorm.shape[1], vnorm.shape[2]
    has_gs = grad_spikes.shape[0] == vnorm.shape[0]
    has_gv = grad_v.shape[0] == vnorm.shape[0]
    has_next = next_weights.shape[1] == n
    has_rec = recurrent.shape[0] == n
    gu = np.zeros(n, np.float32)
    gv = np.zeros(n, np.float32)
    gs = np.zeros(n, np.float32)
    sg = np.empty(n, np.float32)
    no_gv = np.zeros(0, np.float32)
    for t in range(n_steps - 1, -1, -1):
        if has_gs:
            gs[:] = grad_spikes[b, t]
        else:
            gs[:] = 0
        if has_next and t + 1 < n_steps:
            _add_rows(gs, next_grad_a[b, t + 1], next_weights)
        if has_rec and t + 1 < n_steps:
            _add_rows(gs, grad_a[b, t + 1], recurrent)
        _surrogate_row(kind, slope, vnorm[b, t], sg)
        _reverse_step(gs, sg, grad_v[b, t] if has_gv else no_gv, spikes[b, t], gu, gv, decay_u, decay_v, grad_a[b, t])


@njit(cache=True, parallel=True)
def backward(grad_spikes, grad_v, next_grad_a, next_weights, vnorm, spikes, decay_u, decay_v, recurrent, kind,
             slope, grad_a, n_workers):
    """Reverse-time pass of one layer. grad_spikes float32 (B, T, n) dL/dspike or (0, 0, 0); grad_v float32
    (B, T, n) dL/dv' or (0, 0, 0); next_grad_a float32 (B, T, m) and next_weights float32 (m, n): grad_a and
    effective weights, target-major, of the layer this one feeds, or (0, 0, 0) and (0, 0); vnorm, spikes from
    the forward; decay_u, decay_v float32 (n,); recurrent float32 (n, n) target-major effective recurrent
    weights (threshold units) or (0, 0); slope float32. Writes grad_a float32 (B, T, n): dL/d(synaptic input). n_workers: threads
    (:func:`workers` of B)."""
    n_batch = vnorm.shape[0]
    counter = np.zeros(1, np.int64)
    for _ in prange(n_workers):
        b = _take(counter)
        while b < n_batch:
            _backward_sample(b, grad_spikes, grad_v, next_grad_a, next_weights, vnorm, spikes, decay_u, decay_v,
                             recurrent, kind, slope, grad_a)
            b = _take(counter)
    return 0


@njit(cache=True)
def by_source(indptr, index, count, n_in):
    """The events of steps 0..T-2 regrouped by source, each in (sample, step) order: (ptr int64 (n_in + 1,),
    row int64 (E,) = b * T + t + 1, the row of grad_a (B * T, n) that the event's weight gradient reads, and
    its count float32 (E,))."""
    n_batch, n_steps = indptr.shape[0], indptr.shape[1] - 1
    ptr = np.zeros(n_in + 1, np.int64)
    for b in range(n_batch):
        for e in range(indptr[b, 0], indptr[b, max(n_steps - 1, 0)]):
            ptr[index[e] + 1] += 1
    for i in range(n_in):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    rows = np.empty(ptr[n_in], np.int64)
    weights = np.empty(ptr[n_in], np.float32)
    for b in range(n_batch):
        for t in range(n_steps - 1):
            for e in range(indptr[b, t], indptr[b, t + 1]):
                k = fill[index[e]]
                rows[k] = b * n_steps + t + 1
                weights[k] = count[e]
                fill[index[e]] = k + 1
    return ptr, rows, weights


@njit(cache=True, parallel=True)
def weight_grad(ptr, rows, weights, grad_a, out, n_workers):
    """dL/dW into out float32 (n_in, n), input-major, from events regrouped by source (:func:`by_source`) and
    grad_a float32 (B * T, n); event-driven (rows without events are zero). n_workers: threads (:func:`workers`)."""
    n_in, n = out.shape
    n_items = (n_in + ROWS_PER_ITEM - 1) // ROWS_PER_ITEM
    counter = np.zeros(1, np.int64)
    for _ in prange(n_workers):
        item = _take(counter)
        while item < n_items:
            for i in range(item * ROWS_PER_ITEM, min(n_in, (item + 1) * ROWS_PER_ITEM)):
                acc = out[i]
                acc[:] = 0
                for k in range(ptr[i], ptr[i + 1]):
                    g = grad_a[rows[k]]
                    c = weights[k]
                    if c == 1:
                        for j in range(n):
                            acc[j] += g[j]
                    else:
                        for j in range(n):
                            acc[j] += g[j] * c
            item = _take(counter)
    return 0


@njit(cache=True, parallel=True, error_model="numpy")
def adam(w, g, m, v, lr, beta1, rest1, beta2, rest2, c1, c2, eps, weight_decay):
    """One AdamW step in place on flat float32 arrays (w weights, g gradient, m, v moments); the scalars are
    float32 (rest1 = 1 - beta1, rest2 = 1 - beta2, c1, c2 the bias corrections 1 - beta**step), in numpy's
    elementwise order."""
    for k in prange(w.size):
        mk = m[k] * beta1 + rest1 * g[k]
        vk = v[k] * beta2 + rest2 * g[k] * g[k]
        m[k] = mk
        v[k] = vk
        w[k] = w[k] - lr * ((mk / c1) / (np.sqrt(vk / c2) + eps) + weight_decay * w[k])
    return 0


@njit(cache=True, parallel=True)
def quantize_mixed(weights, vth, weight_exp, stored, effective):
    """Threshold-unit float32 weights -> the int8 mantissas of pipeline.train.lif_stack.quantize (float32
    arithmetic and round-half-even as numpy's), stored as Lava keeps a MIXED-sign 8-bit matrix: stored int32 =
    mantissa >> 1 (delivery shift weight_exp + 1), effective float32 = mantissa * 2**(weight_exp + 6) /
    (vth << 6) thresholds. Returns (any mantissa > 0, any < 0): when not both, the caller redoes the matrix
    with pipeline.snn.weights.truncate_weights (a single-sign matrix is stored differently)."""
    flat_w, flat_s, flat_e = weights.reshape(-1), stored.reshape(-1), effective.reshape(-1)
    scale = np.float32(vth)
    step = np.float32(2.0 ** weight_exp)
    two = np.float32(2.0)
    factor = 2.0 ** (weight_exp + 6) / (vth << 6)
    positive = 0
    negative = 0
    for k in prange(flat_w.size):
        q = np.int64(min(max(np.rint(flat_w[k] * scale / step / two), np.float32(-128.0)), np.float32(127.0))) * 2
        flat_s[k] = q >> 1
        flat_e[k] = np.float32(q * factor)
        positive += q > 0
        negative += q < 0
    return positive > 0, negative > 0
