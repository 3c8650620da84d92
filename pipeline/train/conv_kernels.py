"""numba kernels of surrogate-gradient BPTT for convolutional, pooling and delayed Dense LIF layers.

A layer here is split in two: its *synapses* turn the source events of a batch into the synaptic input
``current`` (B, T, n) of every target neuron and step, and its CUBA LIF *neurons* run on that input. Step
semantics are the runtime's (pipeline.snn.kernels): a source event at step t with delay d enters the
target's input at step t + 1 + d (events that would land at or after T are dropped). Events are the CSR
batch of pipeline.train.kernels (``indptr`` int64 (B, T + 1) global, ``index`` int32, ``count``).

Synapses (the current is float32 in threshold units for the float mode, int32 sums of the stored integer
weights for the loihi mode, exactly the runtime's int32 ring slot before its delivery shift):

* Dense with fixed per-synapse delays: weights (n_in, n) input-major, delays uint8 (n_in, n) or (0, 0)
  for none: ``current[t + 1 + d[i, j], j] += count * W[i, j]``.
* Conv2D (cross-correlation, dilation 1, torch's groups): kernel (OC, C / G, KH, KW), geometry int64
  ``GEOMETRY`` fields. Input neuron (c, y, x) = (c * H + y) * W + x, output (o, oy, ox) likewise; the tap
  (ky, kx) joins input (oy * SH - PH + ky, ox * SW - PW + kx) to output (oy, ox). Sum and average pooling
  are Conv2D layers with a fixed kernel and groups = channels.

Neurons (as pipeline.train.kernels and pipeline.snn.kernels, zero bias and refractory): float
``u' = u decay_u + a, v' = v decay_v + u', spike = v' > 1``; loihi ``a = current << shift`` (arithmetic
right shift for a negative one), u' = trunc(u u_mult / 2**12) + (a << 6) wrapped to 24 bits, v' =
trunc(v v_mult / 2**12) + u' saturated, spike = v' > threshold. Both write vnorm = v' / threshold.

Backward (reverse time, reset not differentiated, straight-through for the integer rounding): the LIF
part gives ``grad_a`` (B, T, n) = dL/d(input at step t) from dL/dspikes and dL/dv'; then, with effective
weights in threshold units, the weight gradient is event-driven (only source events touch it: dW +=
count * grad_a at the arrival step) and summed in ``slots`` partial sums (slot k takes samples k, k +
n_slots, ...; added in slot order, so results do not depend on thread timing); the source spikes'
gradient is dL/ds[t, i] = sum over i's synapses of W_eff * grad_a[t + 1 + d].
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from pipeline.train.kernels import A_IN_SHIFT, ARCTAN, DECAY_BITS, FAST_SIGMOID, FLUSH_BELOW, UV_LIMIT, emit_spikes

# Partial weight-gradient sums kept side by side (one per batch slice), added in a fixed order.
GRAD_SLOTS = 4


@njit(cache=True, inline="always")
def surrogate(kind, slope, x):
    """d spike / d (v'/threshold) at x = v'/threshold - 1 (the Dense kernels' ``_surrogate_row``, one value)."""
    if kind == FAST_SIGMOID:
        d = 1.0 + slope * abs(x)
        return 1.0 / (d * d)
    if kind == ARCTAN:
        z = 0.5 * np.pi * slope * x
        return 1.0 / (1.0 + z * z)
    return max(0.0, 1.0 - slope * abs(x))

#: The fields of a Conv2D layer's ``geometry`` int64 array, in order.
GEOMETRY = ("C", "H", "W", "OC", "OH", "OW", "KH", "KW", "SH", "SW", "PH", "PW", "G")


# ---------------------------------------------------------------------------------------------- synapses
@njit(cache=True, parallel=True)
def dense_current(indptr, index, count, weights, delays, current):
    """current (B, T, n) += every source event's weight row at its arrival step (see module docstring).
    weights float32 or int32 (n_in, n); delays uint8 (n_in, n) or (0, 0); current zeroed by the caller,
    same dtype as weights; count of that dtype too."""
    n_batch, n_steps, n = current.shape
    has_delay = delays.shape[0] == weights.shape[0]
    for b in prange(n_batch):
        for t in range(n_steps - 1):
            for k in range(indptr[b, t], indptr[b, t + 1]):
                i = index[k]
                c = count[k]
                row = weights[i]
                if has_delay:
                    d = delays[i]
                    for j in range(n):
                        arrive = t + 1 + d[j]
                        if arrive < n_steps:
                            current[b, arrive, j] += row[j] * c
                else:
                    out = current[b, t + 1]
                    for j in range(n):
                        out[j] += row[j] * c
    return 0


@njit(cache=True, inline="always")
def _output_of(pos, pad, tap, stride, size):
    """The output coordinate whose tap ``tap`` reads input coordinate ``pos``, or -1."""
    num = pos + pad - tap
    if num < 0 or num % stride:
        return -1
    o = num // stride
    return o if o < size else -1


@njit(cache=True, parallel=True)
def conv_current(indptr, index, count, kernel, geometry, current):
    """current (B, T, OC * OH * OW) += the kernel taps of every source event at step t + 1 (Conv2D)."""
    n_batch, n_steps, _ = current.shape
    c_in, h, w, oc, oh, ow, kh, kw, sh, sw, ph, pw, groups = geometry
    cg = c_in // groups
    og = oc // groups
    for b in prange(n_batch):
        for t in range(n_steps - 1):
            out = current[b, t + 1]
            for k in range(indptr[b, t], indptr[b, t + 1]):
                i = index[k]
                c = count[k]
                ch = i // (h * w)
                y = (i // w) % h
                x = i % w
                g = ch // cg
                ci = ch - g * cg
                for ky in range(kh):
                    oy = _output_of(y, ph, ky, sh, oh)
                    if oy < 0:
                        continue
                    for kx in range(kw):
                        ox = _output_of(x, pw, kx, sw, ow)
                        if ox < 0:
                            continue
                        for co in range(g * og, (g + 1) * og):
                            out[(co * oh + oy) * ow + ox] += kernel[co, ci, ky, kx] * c
    return 0


# ---------------------------------------------------------------------------------------------- neurons
@njit(cache=True, parallel=True)
def lif_float(current, decay_u, decay_v, vnorm, spikes, out_indptr, out_index):
    """Float LIF over a batch from its input current float32 (B, T, n) (threshold units). Writes vnorm,
    spikes uint8 (B, T, n) and the spike events (out_indptr (B, T + 1) int64, out_index int32 (B * T * n,))."""
    n_batch, n_steps, n = vnorm.shape
    for b in prange(n_batch):
        u = np.zeros(n, np.float32)
        v = np.zeros(n, np.float32)
        out_indptr[b, 0] = b * n_steps * n
        for t in range(n_steps):
            a = current[b, t]
            for j in range(n):
                u1 = u[j] * decay_u[j] + a[j]
                u1 = u1 if abs(u1) >= FLUSH_BELOW else np.float32(0.0)
                v1 = v[j] * decay_v[j] + u1
                v1 = v1 if abs(v1) >= FLUSH_BELOW else np.float32(0.0)
                spike = v1 > 1.0
                u[j] = u1
                v[j] = np.float32(0.0) if spike else v1
                vnorm[b, t, j] = v1
                spikes[b, t, j] = spike
            emit_spikes(b, t, n, spikes[b, t], out_indptr, out_index)
    return 0


@njit(cache=True, parallel=True)
def lif_loihi(current, shift, u_mult, v_mult, threshold, vnorm, spikes, out_indptr, out_index):
    """Loihi-integer LIF (pipeline.snn.kernels.lif_loihi bit for bit) from current int32 (B, T, n), the
    sums of stored weights that the runtime's ring delivers with ``shift``. u_mult, v_mult, threshold
    int64 (n,). Writes vnorm = v' / threshold, spikes and the spike events as :func:`lif_float`."""
    n_batch, n_steps, n = vnorm.shape
    for b in prange(n_batch):
        u = np.zeros(n, np.int64)
        v = np.zeros(n, np.int64)
        out_indptr[b, 0] = b * n_steps * n
        for t in range(n_steps):
            s = current[b, t]
            for j in range(n):
                a = np.int64(s[j]) << shift if shift >= 0 else np.int64(s[j]) >> -shift
                x = u[j] * u_mult[j]
                q = np.abs(x) >> DECAY_BITS
                u1 = (q if x >= 0 else -q) + (a << A_IN_SHIFT)
                u1 = u1 - 2 * UV_LIMIT if u1 > UV_LIMIT else (u1 + 2 * UV_LIMIT if u1 <= -UV_LIMIT else u1)
                y = v[j] * v_mult[j]
                q = np.abs(y) >> DECAY_BITS
                v1 = (q if y >= 0 else -q) + u1
                v1 = min(max(v1, -(UV_LIMIT - 1)), UV_LIMIT - 1)
                spike = v1 > threshold[j]
                u[j] = u1
                v[j] = 0 if spike else v1
                vnorm[b, t, j] = v1 / threshold[j]
                spikes[b, t, j] = spike
            emit_spikes(b, t, n, spikes[b, t], out_indptr, out_index)
    return 0


@njit(cache=True, parallel=True)
def lif_backward(grad_spikes, grad_v, vnorm, spikes, decay_u, decay_v, kind, slope, grad_a):
    """Reverse-time pass of a LIF layer without recurrence. grad_spikes float32 (B, T, n) dL/dspike;
    grad_v float32 (B, T, n) dL/dv' or (0, 0, 0). Writes grad_a float32 (B, T, n) = dL/d(input)."""
    n_batch, n_steps, n = vnorm.shape
    has_gv = grad_v.shape[0] == n_batch
    for b in prange(n_batch):
        gu = np.zeros(n, np.float32)
        gv = np.zeros(n, np.float32)
        for t in range(n_steps - 1, -1, -1):
            for j in range(n):
                g = grad_spikes[b, t, j] * surrogate(kind, slope, vnorm[b, t, j] - 1.0)
                if has_gv:
                    g += grad_v[b, t, j]
                if not spikes[b, t, j]:
                    g += gv[j]
                gu[j] = decay_u[j] * gu[j] + g
                grad_a[b, t, j] = gu[j]
                gv[j] = decay_v[j] * g
    return 0


# ---------------------------------------------------------------------------------------------- gradients
@njit(cache=True, parallel=True)
def dense_weight_grad(indptr, index, count, delays, grad_a, slots):
    """dL/dW float32 (n_in, n) of a (delayed) Dense layer; event-driven. slots float32 (n_slots, n_in, n)."""
    n_batch, n_steps, n = grad_a.shape
    n_slots = slots.shape[0]
    has_delay = delays.shape[0] == slots.shape[1]
    for k in prange(n_slots):
        acc = slots[k]
        acc[:, :] = 0
        for b in range(k, n_batch, n_slots):
            for t in range(n_steps - 1):
                for e in range(indptr[b, t], indptr[b, t + 1]):
                    i = index[e]
                    c = count[e]
                    row = acc[i]
                    if has_delay:
                        d = delays[i]
                        for j in range(n):
                            arrive = t + 1 + d[j]
                            if arrive < n_steps:
                                row[j] += grad_a[b, arrive, j] * c
                    else:
                        g = grad_a[b, t + 1]
                        for j in range(n):
                            row[j] += g[j] * c
    out = np.zeros(slots.shape[1:], np.float32)
    for k in range(n_slots):
        out += slots[k]
    return out


@njit(cache=True, parallel=True)
def dense_source_grad(w_eff, delays, grad_a, grad_src):
    """grad_src float32 (B, T, n_in) = dL/d(source spike at t) = sum_j W_eff[i, j] grad_a[t + 1 + d[i, j], j]
    of a Dense layer with per-synapse delays uint8 (n_in, n)."""
    n_batch, n_steps, n = grad_a.shape
    n_in = w_eff.shape[0]
    for b in prange(n_batch):
        for t in range(n_steps):
            for i in range(n_in):
                s = np.float32(0.0)
                row = w_eff[i]
                d = delays[i]
                for j in range(n):
                    arrive = t + 1 + d[j]
                    if arrive < n_steps:
                        s += row[j] * grad_a[b, arrive, j]
                grad_src[b, t, i] = s
    return 0


@njit(cache=True, parallel=True)
def conv_weight_grad(indptr, index, count, geometry, grad_a, slots):
    """dL/dkernel float32 (OC, C / G, KH, KW) of a Conv2D layer; event-driven. slots float32
    (n_slots, OC, C / G, KH, KW)."""
    n_batch, n_steps, _ = grad_a.shape
    c_in, h, w, oc, oh, ow, kh, kw, sh, sw, ph, pw, groups = geometry
    cg = c_in // groups
    og = oc // groups
    n_slots = slots.shape[0]
    for s in prange(n_slots):
        acc = slots[s]
        acc[:] = 0
        for b in range(s, n_batch, n_slots):
            for t in range(n_steps - 1):
                g_out = grad_a[b, t + 1]
                for k in range(indptr[b, t], indptr[b, t + 1]):
                    i = index[k]
                    c = count[k]
                    ch = i // (h * w)
                    y = (i // w) % h
                    x = i % w
                    g = ch // cg
                    ci = ch - g * cg
                    for ky in range(kh):
                        oy = _output_of(y, ph, ky, sh, oh)
                        if oy < 0:
                            continue
                        for kx in range(kw):
                            ox = _output_of(x, pw, kx, sw, ow)
                            if ox < 0:
                                continue
                            for co in range(g * og, (g + 1) * og):
                                acc[co, ci, ky, kx] += g_out[(co * oh + oy) * ow + ox] * c
    out = np.zeros(slots.shape[1:], np.float32)
    for s in range(n_slots):
        out += slots[s]
    return out


@njit(cache=True, parallel=True)
def conv_source_grad(kernel_eff, geometry, grad_a, grad_src):
    """grad_src float32 (B, T, C * H * W) = dL/d(source spike at t): every output's grad_a[t + 1] spread
    back over its kernel taps (the transposed convolution). grad_src is overwritten."""
    n_batch, n_steps, _ = grad_a.shape
    c_in, h, w, oc, oh, ow, kh, kw, sh, sw, ph, pw, groups = geometry
    cg = c_in // groups
    og = oc // groups
    for b in prange(n_batch):
        grad_src[b, :, :] = 0
        for t in range(n_steps - 1):
            g_out = grad_a[b, t + 1]
            g_in = grad_src[b, t]
            for co in range(oc):
                g0 = (co // og) * cg
                for oy in range(oh):
                    for ox in range(ow):
                        gv = g_out[(co * oh + oy) * ow + ox]
                        if gv == 0.0:
                            continue
                        for ky in range(kh):
                            y = oy * sh - ph + ky
                            if y < 0 or y >= h:
                                continue
                            for kx in range(kw):
                                x = ox * sw - pw + kx
                                if x < 0 or x >= w:
                                    continue
                                for ci in range(cg):
                                    g_in[((g0 + ci) * h + y) * w + x] += kernel_eff[co, ci, ky, kx] * gv
    return 0
