"""numba kernels of the per-bin decoder step. Pure functions on preallocated arrays (no allocation).

Shared state layout:
    ring  float64 (L, n_kept), L = history + lag: the last L normalised bins, ring[pos] is the newest.
    G     float64 (d, history, n_kept): weights on bin t-lag-k (k = 0..history-1).
    x     float64 (d,): the decoder state (centred kinematics for the Kalman filter).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def push_bin(counts, keep, mean, inv_scale, ring, pos):
    """Normalise one bin of counts (n_units,) into the ring buffer; returns the new newest position,
    or -1 (ring untouched) if a used unit's count is not finite."""
    for j in range(keep.shape[0]):
        v = counts[keep[j]]
        if not np.isfinite(v):
            return -1
    pos = (pos + 1) % ring.shape[0]
    for j in range(keep.shape[0]):
        ring[pos, j] = (counts[keep[j]] - mean[j]) * inv_scale[j]
    return pos


@njit(cache=True)
def project(G, ring, pos, lag, i):
    """Row i of G applied to the lagged history: sum_k G[i, k] . ring[bin t-lag-k]."""
    L = ring.shape[0]
    acc = 0.0
    for k in range(G.shape[1]):
        row = (pos - lag - k) % L
        for j in range(G.shape[2]):
            acc += G[i, k, j] * ring[row, j]
    return acc


@njit(cache=True)
def lti_step(ring, pos, lag, G, M, c, x, tmp):
    """x <- M x + G f + c, with f the lagged history (Wiener: M = 0; steady-state Kalman: M = (I-KH)A)."""
    d = x.shape[0]
    for i in range(d):
        acc = c[i] + project(G, ring, pos, lag, i)
        for m in range(d):
            acc += M[i, m] * x[m]
        tmp[i] = acc
    for i in range(d):
        x[i] = tmp[i]


@njit(cache=True)
def invert_into(a, out, work):
    """out <- inverse of the small square matrix a (Gauss-Jordan, partial pivoting); work is (d, 2d).
    Returns False if a is singular."""
    d = a.shape[0]
    for i in range(d):
        for j in range(d):
            work[i, j] = a[i, j]
            work[i, d + j] = 1.0 if i == j else 0.0
    for col in range(d):
        piv = col
        for r in range(col + 1, d):
            if abs(work[r, col]) > abs(work[piv, col]):
                piv = r
        if work[piv, col] == 0.0:
            return False
        if piv != col:
            for j in range(2 * d):
                t = work[col, j]
                work[col, j] = work[piv, j]
                work[piv, j] = t
        p = work[col, col]
        for j in range(2 * d):
            work[col, j] /= p
        for r in range(d):
            if r != col:
                f = work[r, col]
                if f != 0.0:
                    for j in range(2 * d):
                        work[r, j] -= f * work[col, j]
    for i in range(d):
        for j in range(d):
            out[i, j] = work[i, d + j]
    return True


@njit(cache=True)
def kalman_step(ring, pos, lag, A, W, HtQiH, HtQi, x, P, xm, Pm, S, Pm_inv, work):
    """One full Kalman update in information form (equal to Wu et al.'s gain form):

        x- = A x;  P- = A P A' + W;  P = (P-^-1 + H'Q^-1 H)^-1;  x = x- + P (H'Q^-1 f - H'Q^-1 H x-)

    HtQi is H'Q^-1 as (d, history, n_kept). Cost O(d * n) per bin. Returns False on a singular matrix.
    """
    d = x.shape[0]
    for i in range(d):
        acc = 0.0
        for m in range(d):
            acc += A[i, m] * x[m]
        xm[i] = acc
    for i in range(d):
        for j in range(d):
            acc = 0.0
            for a in range(d):
                for b in range(d):
                    acc += A[i, a] * P[a, b] * A[j, b]
            Pm[i, j] = acc + W[i, j]
    if not invert_into(Pm, Pm_inv, work):
        return False
    for i in range(d):
        for j in range(d):
            S[i, j] = Pm_inv[i, j] + HtQiH[i, j]
    if not invert_into(S, P, work):
        return False
    for i in range(d):
        acc = project(HtQi, ring, pos, lag, i)
        for m in range(d):
            acc -= HtQiH[i, m] * xm[m]
        S[0, i] = acc
    for i in range(d):
        acc = xm[i]
        for m in range(d):
            acc += P[i, m] * S[0, m]
        x[i] = acc
    return True


@njit(cache=True)
def lti_bin(counts, keep, mean, inv_scale, ring, pos, lag, G, M, c, x, tmp, offset, out):
    """One online bin of an LTI decoder: push counts (n_units,), step, out <- x + offset.
    Returns the new ring position, or -1 for a non-finite count."""
    pos = push_bin(counts, keep, mean, inv_scale, ring, pos)
    if pos < 0:
        return -1
    lti_step(ring, pos, lag, G, M, c, x, tmp)
    for i in range(x.shape[0]):
        out[i] = x[i] + offset[i]
    return pos


@njit(cache=True)
def kalman_bin(counts, keep, mean, inv_scale, ring, pos, lag, A, W, HtQiH, HtQi, x, P, xm, Pm, S, Pm_inv,
               work, offset, out):
    """One online bin of the full Kalman filter: push, update state and covariance, out <- x + offset.
    Returns the new ring position, -1 for a non-finite count, -2 for a singular covariance."""
    pos = push_bin(counts, keep, mean, inv_scale, ring, pos)
    if pos < 0:
        return -1
    if not kalman_step(ring, pos, lag, A, W, HtQiH, HtQi, x, P, xm, Pm, S, Pm_inv, work):
        return -2
    for i in range(x.shape[0]):
        out[i] = x[i] + offset[i]
    return pos


@njit(cache=True)
def lti_run(counts, first, keep, mean, inv_scale, ring, pos, lag, G, M, c, x, offset, out):
    """Step the LTI decoder over counts[first:] (rows of (T, n_units)), writing x + offset into out[t].
    Returns the final ring position, or -2 - t if bin t holds a non-finite value."""
    tmp = np.empty(x.shape[0])
    for t in range(first, counts.shape[0]):
        pos = lti_bin(counts[t], keep, mean, inv_scale, ring, pos, lag, G, M, c, x, tmp, offset, out[t])
        if pos < 0:
            return -2 - t
    return pos


@njit(cache=True)
def kalman_run(counts, first, keep, mean, inv_scale, ring, pos, lag, A, W, HtQiH, HtQi, x, P, offset, out):
    """Full Kalman filter over counts[first:], writing x + offset into out[t]. Returns the final ring
    position, -2 - t for a non-finite value in bin t, or -1 for a singular covariance."""
    d = x.shape[0]
    xm = np.empty(d)
    Pm = np.empty((d, d))
    S = np.empty((d, d))
    Pm_inv = np.empty((d, d))
    work = np.empty((d, 2 * d))
    for t in range(first, counts.shape[0]):
        pos = kalman_bin(counts[t], keep, mean, inv_scale, ring, pos, lag, A, W, HtQiH, HtQi, x, P, xm, Pm,
                         S, Pm_inv, work, offset, out[t])
        if pos == -1:
            return -2 - t
        if pos == -2:
            return -1
    return pos


@njit(cache=True)
def graded_inputs(counts, index, payload):
    """Active units of a bin as graded spikes: counts (n_units,) float64 -> index int32 and payload int64
    (preallocated (n_units,)) filled with the units whose rounded count is >= 1 and that count (at most 255,
    the 8-bit payload); returns how many, or -1 for a non-finite or negative count."""
    k = 0
    for j in range(counts.shape[0]):
        c = counts[j]
        if not np.isfinite(c) or c < 0:
            return -1
        r = np.rint(c)
        if r >= 1:
            index[k] = j
            payload[k] = min(int(r), 255)
            k += 1
    return k


@njit(cache=True)
def readout_filter(spikes, v, ring, counts, pos, R, Rv, bias, out):
    """The SNN decoder's readout: push the indices of spikes (n,) uint8 into ring (taps, n) int32 at the next
    slot (counts (taps,) holds how many each slot has) and write out (d,) = bias + sum_k R[k]^T spikes_{t-k}
    + Rv^T v (R (taps, n, d), Rv (n, d), v (n,)); returns the new slot (ring[slot] holds the newest spikes).
    Only spiking neurons are visited, in ascending order, so the sum is that of the dense filter."""
    taps, n = ring.shape
    pos = (pos + 1) % taps
    c = 0
    for j in range(n):
        if spikes[j] != 0:
            ring[pos, c] = j
            c += 1
    counts[pos] = c
    d = out.shape[0]
    for i in range(d):
        out[i] = bias[i]
    for j in range(n):
        x = v[j]
        if x != 0.0:
            for i in range(d):
                out[i] += x * Rv[j, i]
    for k in range(taps):
        slot = (pos - k + taps) % taps
        Rk = R[k]
        for m in range(counts[slot]):
            j = ring[slot, m]
            for i in range(d):
                out[i] += Rk[j, i]
    return pos
