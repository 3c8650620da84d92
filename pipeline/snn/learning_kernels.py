"""numba kernels of the Loihi learning engine (fixed point, Lava bit-approximate semantics).

Array conventions: ``x`` (2, n_pre) and ``y`` (3, n_post) int32 traces (0..127); ``tx`` (n_pre,)
and ``ty`` (n_post,) int32 within-epoch spike times (1..t_epoch, 0 = no spike this epoch);
synaptic arrays ``weights``, ``tag2``, ``tag1`` are indexed [pre, post] (pass a transposed view
for a [post, pre] matrix). Histories ``x_hist`` (t_epoch + 1, 2, n_pre) and ``y_hist``
(t_epoch + 1, 3, n_post) are preallocated scratch.
"""
from __future__ import annotations

import numpy as np
from numba import njit

TRACE_MAX = 127
ACC_MAX = 2 ** 15 - 1          # 16-bit signed accumulator, Lava saturates to [-(2**15) - 1, 2**15 - 1]
ACC_MIN = -(2 ** 15) - 1
SYN_SHIFT = 7                  # synaptic variables (9 bits signed) sit 7 bits up in the accumulator
ACC_U_BITS = 15
S_MANT_BITS = 4
EXP_OFFSET = 7                 # product exponents are stored +7 (0..15) as Loihi does

SIGN_MIXED = 1
SIGN_EXCITATORY = 2
SIGN_INHIBITORY = 3

TARGET_W = 0
TARGET_D = 1
TARGET_T = 2

DEP_X0 = 0
DEP_Y0 = 1
DEP_U = 2


@njit(cache=True, inline="always")
def _wrap32(v):
    return np.int64(np.int32(v))


@njit(cache=True, inline="always")
def _clip(v, lo, hi):
    return lo if v < lo else (hi if v > hi else v)


@njit(cache=True)
def record_pre_indices(indices, count, within, tx, x, imp_int, imp_frac):
    """Record pre spikes ``indices[:count]`` at within-epoch step ``within`` (1..t_epoch).

    A neuron already spiking earlier in the epoch gets its impulse added right away to the
    epoch-start trace (Lava rounds it with random number 0); duplicates within a step count once.
    """
    for q in range(count):
        j = indices[q]
        if tx[j] == within:
            continue
        if tx[j] > 0:
            for r in range(x.shape[0]):
                bump = 1 if imp_frac[r] > 0 else 0
                x[r, j] = _clip(x[r, j] + imp_int[r] + bump, 0, TRACE_MAX)
        tx[j] = within


@njit(cache=True)
def record_pre_mask(mask, within, tx, x, imp_int, imp_frac):
    """As record_pre_indices for a (n_pre,) 0/1 spike vector."""
    for j in range(mask.shape[0]):
        if mask[j] == 0:
            continue
        if tx[j] > 0:
            for r in range(x.shape[0]):
                bump = 1 if imp_frac[r] > 0 else 0
                x[r, j] = _clip(x[r, j] + imp_int[r] + bump, 0, TRACE_MAX)
        tx[j] = within


@njit(cache=True)
def record_post_mask(mask, within, ty, y, imp_int, imp_frac, random_int):
    """Record post spikes (n_post,) 0/1 at ``within``; repeat spikers get their impulse now,
    stochastically rounded with the y impulse draw ``random_int`` (0..127)."""
    for i in range(mask.shape[0]):
        if mask[i] == 0:
            continue
        if ty[i] > 0:
            for r in range(y.shape[0]):
                bump = 1 if random_int < imp_frac[r] else 0
                y[r, i] = _clip(y[r, i] + imp_int[r] + bump, 0, TRACE_MAX)
        ty[i] = within


@njit(cache=True)
def trace_history(trace, t_spike, decay, decays, imp_int, imp_frac, random_decay, random_int, hist):
    """Evolve traces through one epoch, writing every step's value to ``hist`` and the last to ``trace``.

    Per step t = 1..t_epoch: a trace with decays[r] keeps ``decay[r] * value`` (float64) rounded
    down plus 1 if ``random_decay`` < its fractional part; a trace without decay (tau = 0) is 0.
    Neurons whose within-epoch spike time is t then add the impulse (rounded up if
    ``random_int`` < the impulse fraction in 1/256) and saturate at 127.
    """
    t_epoch = hist.shape[0] - 1
    n_traces, n = trace.shape
    for r in range(n_traces):
        for j in range(n):
            hist[0, r, j] = trace[r, j]
    for t in range(1, t_epoch + 1):
        for r in range(n_traces):
            if decays[r]:
                f = decay[r]
                for j in range(n):
                    v = f * hist[t - 1, r, j]
                    whole = np.floor(v)
                    hist[t, r, j] = np.int32(whole) + (1 if random_decay < v - whole else 0)
            else:
                for j in range(n):
                    hist[t, r, j] = 0
        for j in range(n):
            if t_spike[j] == t:
                for r in range(n_traces):
                    bump = 1 if random_int < imp_frac[r] else 0
                    hist[t, r, j] = _clip(hist[t, r, j] + imp_int[r] + bump, 0, TRACE_MAX)
    for r in range(n_traces):
        for j in range(n):
            trace[r, j] = hist[t_epoch, r, j]


@njit(cache=True, inline="always")
def _factor_value(code, tidx, i, j, x_hist, y_hist, tx, ty, w_old, d_old, t_old):
    if code < 2:
        return np.int64(x_hist[tidx, code, j])
    if code < 5:
        return np.int64(y_hist[tidx, code - 2, i])
    if code == 5:
        return w_old
    if code == 6:
        return d_old
    if code == 7:
        return t_old
    if code == 8:
        return np.int64(1 if tx[j] > 0 else 0)
    return np.int64(1 if ty[i] > 0 else 0)


@njit(cache=True, inline="always")
def _accumulate(target, acc, i, j, tx, ty, x_hist, y_hist, u_value, w_old, d_old, t_old,
                p_target, p_dep, p_mant, p_exp, f_start, f_code, f_const, f_sgn, widths):
    t_epoch = x_hist.shape[0] - 1
    for p in range(p_target.shape[0]):
        if p_target[p] != target:
            continue
        dep = p_dep[p]
        if dep == DEP_X0:
            if tx[j] == 0:
                continue
            tidx = tx[j]
        elif dep == DEP_Y0:
            if ty[i] == 0:
                continue
            tidx = ty[i]
        else:
            if u_value == 0:
                continue
            tidx = t_epoch
        mac = np.int64(1)
        width_sum = 0
        for f in range(f_start[p], f_start[p + 1]):
            code = f_code[f]
            width = widths[code]
            width_sum += width
            val = _factor_value(code, tidx, i, j, x_hist, y_hist, tx, ty, w_old, d_old, t_old) + f_const[f]
            if f_sgn[f]:
                val = np.int64(1 if val > 0 else (-1 if val < 0 else 0))
            val = _clip(val, -(np.int64(1) << width), (np.int64(1) << width) - 1)
            mac = _wrap32(mac * val)
        width_sum += S_MANT_BITS
        mac = _wrap32(mac * p_mant[p])
        shift = width_sum - ACC_U_BITS
        if shift > 0:
            mac = mac >> shift
        mac = _wrap32(mac << p_exp[p])
        mac = _clip(mac, ACC_MIN, ACC_MAX)
        acc = _clip(acc + mac, ACC_MIN, ACC_MAX)
    return acc


@njit(cache=True, inline="always")
def _round_and_saturate(target, acc, sign_mode, random_conn):
    if target == TARGET_W:
        if sign_mode == SIGN_EXCITATORY and acc < 0:
            acc = 0
        elif sign_mode == SIGN_INHIBITORY and acc > 0:
            acc = 0
    elif target == TARGET_D and acc < 0:
        acc = 0
    value = acc >> SYN_SHIFT
    if random_conn < (acc & ((1 << SYN_SHIFT) - 1)) / (1 << SYN_SHIFT):
        value += 1
    if target == TARGET_W:
        if sign_mode == SIGN_MIXED:
            return _clip(value, -256, 255)
        if sign_mode == SIGN_EXCITATORY:
            return _clip(value, 0, 255)
        return _clip(value, -255, 0)
    if target == TARGET_D:
        return _clip(value, 0, 255)
    return _clip(value, -257, 255)


@njit(cache=True)
def apply_learning(weights, tag2, tag1, has_target, tx, ty, x_hist, y_hist, u_value, sign_mode,
                   random_conn, p_target, p_dep, p_mant, p_exp, f_start, f_code, f_const, f_sgn,
                   widths, active_pre):
    """Apply the product series of one epoch to every synapse with an active dependency.

    Synapses whose pre neuron (x0 products) or post neuron (y0 products) spiked in the epoch, or
    all synapses in an active u epoch, are updated; the rest would be left unchanged by Lava's
    arithmetic and are skipped. For each updated synapse and learned variable: accumulator =
    old value << 7, plus each product (factors clipped to their width, multiplied in int32,
    scaled by the mantissa, shifted back to 15 bits, shifted up by the exponent + 7, saturated),
    then sign-mode saturation, stochastic rounding to the variable's 8-bit grid with
    ``random_conn``, and clipping to the variable's range. All factors read the pre-epoch values.
    Returns the number of synapses updated. ``active_pre`` is (n_pre,) int32 scratch.
    """
    n_pre = tx.shape[0]
    n_post = ty.shape[0]
    n_active = 0
    for j in range(n_pre):
        if tx[j] > 0:
            active_pre[n_active] = j
            n_active += 1
    any_x0 = False
    any_y0 = False
    for p in range(p_dep.shape[0]):
        if p_dep[p] == DEP_X0:
            any_x0 = True
        elif p_dep[p] == DEP_Y0:
            any_y0 = True
    every = False
    if u_value != 0:
        for p in range(p_dep.shape[0]):
            if p_dep[p] == DEP_U:
                every = True
    use_tags = tag2.shape[0] == n_pre and tag2.shape[1] == n_post
    updated = 0
    for i in range(n_post):
        full_row = every or (any_y0 and ty[i] > 0)
        count = n_pre if full_row else (n_active if any_x0 else 0)
        for q in range(count):
            j = q if full_row else active_pre[q]
            w_old = np.int64(weights[j, i])
            d_old = np.int64(0)
            t_old = np.int64(0)
            if use_tags:
                d_old = np.int64(tag2[j, i])
                t_old = np.int64(tag1[j, i])
            if has_target[TARGET_W]:
                acc = _accumulate(TARGET_W, w_old << SYN_SHIFT, i, j, tx, ty, x_hist, y_hist, u_value,
                                  w_old, d_old, t_old, p_target, p_dep, p_mant, p_exp, f_start, f_code,
                                  f_const, f_sgn, widths)
                weights[j, i] = _round_and_saturate(TARGET_W, acc, sign_mode, random_conn)
            if has_target[TARGET_D]:
                acc = _accumulate(TARGET_D, d_old << SYN_SHIFT, i, j, tx, ty, x_hist, y_hist, u_value,
                                  w_old, d_old, t_old, p_target, p_dep, p_mant, p_exp, f_start, f_code,
                                  f_const, f_sgn, widths)
                tag2[j, i] = _round_and_saturate(TARGET_D, acc, sign_mode, random_conn)
            if has_target[TARGET_T]:
                acc = _accumulate(TARGET_T, t_old << SYN_SHIFT, i, j, tx, ty, x_hist, y_hist, u_value,
                                  w_old, d_old, t_old, p_target, p_dep, p_mant, p_exp, f_start, f_code,
                                  f_const, f_sgn, widths)
                tag1[j, i] = _round_and_saturate(TARGET_T, acc, sign_mode, random_conn)
            updated += 1
    for j in range(n_pre):
        tx[j] = 0
    for i in range(n_post):
        ty[i] = 0
    return updated
