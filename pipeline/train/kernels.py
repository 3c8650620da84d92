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

Backward (reverse time, reset not differentiated): with gS the loss gradient w.r.t. this layer's spikes
and gV w.r.t. v' directly::

    g' = gS[t] * surrogate(vnorm[t] - 1) + gV[t] + gv * (1 - spike[t])
    gu = decay_u * gu + g'      ga[t] = gu      gv = decay_v * g'

and a recurrent projection adds R^T ga[t] to gS[t - 1]. Surrogates of x = v'/threshold - 1 with slope
k: fast sigmoid 1 / (1 + k|x|)^2, arctan 1 / (1 + (pi/2 k x)^2), triangle max(0, 1 - k|x|).

Weight gradient (event-driven: only source events touch it): dW[i, :] += count * ga[t + 1, :] for every
event (i, count) at step t. It is summed into ``n_slots`` partial sums (slot k takes samples k, k +
n_slots, ...), run in parallel, and added in slot order, so the result does not depend on thread timing.
"""
from __future__ import annotations

import os

import numpy as np
from numba import njit, prange

# The parallel kernels run in numba's OpenMP pool; GNU OpenMP's default spin-wait between parallel regions
# burns the cores that other processes (and the other half of a batch) need: on a shared 2-core machine it
# doubled the CPU time of a training step. Passive waiting, unless the user chose otherwise.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

FAST_SIGMOID, ARCTAN, TRIANGLE = 0, 1, 2
SURROGATES = {"fast_sigmoid": FAST_SIGMOID, "arctan": ARCTAN, "triangle": TRIANGLE}
UV_LIMIT = 1 << 23       # 24-bit u and v (pipeline.snn.kernels)
DECAY_BITS = 12
A_IN_SHIFT = 6
FLUSH_BELOW = np.float32(1e-30)


@njit(cache=True, inline="always")
def surrogate(kind, slope, x):
    """d spike / d (v'/threshold) at x = v'/threshold - 1."""
    if kind == FAST_SIGMOID:
        d = 1.0 + slope * abs(x)
        return 1.0 / (d * d)
    if kind == ARCTAN:
        z = 0.5 * np.pi * slope * x
        return 1.0 / (1.0 + z * z)
    return max(0.0, 1.0 - slope * abs(x))


@njit(cache=True, inline="always")
def _emit(b, t, n, spikes_row, out_indptr, out_index, base):
    """List the spiking neurons of (b, t) after position out_indptr[b, t]; set out_indptr[b, t + 1]."""
    pos = out_indptr[b, t]
    for j in range(n):
        if spikes_row[j]:
            out_index[pos] = j
            pos += 1
    out_indptr[b, t + 1] = pos


@njit(cache=True, parallel=True)
def forward_float(indptr, index, count, weights, recurrent, decay_u, decay_v, vnorm, spikes, out_indptr, out_index):
    """Float forward of one layer over a batch. weights float32 (n_in, n); recurrent float32 (n, n)
    input-major or (0, 0); decay_u, decay_v float32 (n,). Writes vnorm float32 (B, T, n), spikes uint8
    (B, T, n) and the spike events (out_indptr (B, T + 1) int64, out_index int32 (B * T * n,))."""
    n_batch, n_steps, n = vnorm.shape
    has_rec = recurrent.shape[0] == n
    for b in prange(n_batch):
        u = np.zeros(n, np.float32)
        v = np.zeros(n, np.float32)
        a = np.zeros(n, np.float32)
        r = np.zeros(n, np.float32)
        out_indptr[b, 0] = b * n_steps * n
        for t in range(n_steps):
            a[:] = 0
            if t >= 1:
                for k in range(indptr[b, t - 1], indptr[b, t]):
                    row = weights[index[k]]
                    c = count[k]
                    if c == 1:
                        for j in range(n):
                            a[j] += row[j]
                    else:
                        for j in range(n):
                            a[j] += row[j] * c
                if has_rec:
                    r[:] = 0
                    for k in range(out_indptr[b, t - 1], out_indptr[b, t]):
                        row = recurrent[out_index[k]]
                        for j in range(n):
                            r[j] += row[j]
                    for j in range(n):
                        a[j] += r[j]
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
            _emit(b, t, n, spikes[b, t], out_indptr, out_index, 0)
    return 0


@njit(cache=True, inline="always")
def _shifted(s, shift):
    return s << shift if shift >= 0 else s >> -shift


@njit(cache=True, parallel=True)
def forward_loihi(indptr, index, count, weights, shift, recurrent, rec_shift, u_mult, v_mult, threshold,
                  vnorm, spikes, out_indptr, out_index):
    """Loihi-integer forward of one layer (bit-exact with the loihi runtime). weights int32 (n_in, n)
    stored mantissas (after Lava's truncation, as the runtime stores them), shift the projection's
    delivery shift; recurrent int32 (n, n) or (0, 0) with rec_shift; u_mult, v_mult, threshold int64 (n,)
    (pipeline.snn.kernels.LoihiParams). Writes vnorm = v' / threshold, spikes and spike events."""
    n_batch, n_steps, n = vnorm.shape
    has_rec = recurrent.shape[0] == n
    for b in prange(n_batch):
        u = np.zeros(n, np.int64)
        v = np.zeros(n, np.int64)
        s = np.zeros(n, np.int32)     # the runtime's ring slots are int32 too
        r = np.zeros(n, np.int32)
        out_indptr[b, 0] = b * n_steps * n
        for t in range(n_steps):
            s[:] = 0
            r[:] = 0
            if t >= 1:
                for k in range(indptr[b, t - 1], indptr[b, t]):
                    row = weights[index[k]]
                    c = count[k]
                    if c == 1:
                        for j in range(n):
                            s[j] += row[j]
                    else:
                        for j in range(n):
                            s[j] += row[j] * c
                if has_rec:
                    for k in range(out_indptr[b, t - 1], out_indptr[b, t]):
                        row = recurrent[out_index[k]]
                        for j in range(n):
                            r[j] += row[j]
            for j in range(n):
                a = _shifted(np.int64(s[j]), shift)
                if has_rec:
                    a += _shifted(np.int64(r[j]), rec_shift)
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
            _emit(b, t, n, spikes[b, t], out_indptr, out_index, 0)
    return 0


@njit(cache=True, parallel=True)
def backward(grad_spikes, grad_v, vnorm, spikes, decay_u, decay_v, recurrent_tm, kind, slope, grad_a):
    """Reverse-time pass of one layer. grad_spikes float32 (B, T, n) dL/dspike (recurrent contributions are
    added into it in place); grad_v float32 (B, T, n) dL/dv' or (0, 0, 0); vnorm, spikes from the forward;
    decay_u, decay_v float32 (n,); recurrent_tm float32 (n, n) target-major recurrent weights (threshold
    units) or (0, 0). Writes grad_a float32 (B, T, n): dL/d(synaptic input) per step."""
    n_batch, n_steps, n = vnorm.shape
    has_gv = grad_v.shape[0] == n_batch
    has_rec = recurrent_tm.shape[0] == n
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
            if has_rec and t >= 1:
                for j in range(n):
                    g = grad_a[b, t, j]
                    if g != 0.0:
                        row = recurrent_tm[j]
                        for i in range(n):
                            grad_spikes[b, t - 1, i] += row[i] * g
    return 0


@njit(cache=True, parallel=True)
def weight_grad(indptr, index, count, grad_a, n_in, slots):
    """dL/dW (n_in, n) float32, input-major, from the source events and grad_a (B, T, n); event-driven.
    ``slots`` float32 (n_slots, n_in, n) scratch: per-slot partial sums, added in slot order."""
    n_batch, n_steps, n = grad_a.shape
    n_slots = slots.shape[0]
    for k in prange(n_slots):
        acc = slots[k]
        acc[:, :] = 0
        for b in range(k, n_batch, n_slots):
            for t in range(n_steps - 1):
                g = grad_a[b, t + 1]
                for e in range(indptr[b, t], indptr[b, t + 1]):
                    row = acc[index[e]]
                    c = count[e]
                    if c == 1:
                        for j in range(n):
                            row[j] += g[j]
                    else:
                        for j in range(n):
                            row[j] += g[j] * c
    out = np.zeros((n_in, n), np.float32)
    for k in range(n_slots):
        out += slots[k]
    return out
