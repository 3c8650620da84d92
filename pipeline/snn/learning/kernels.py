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
    """int64 -> the value numpy's int32 arithmetic would hold (two's complement wrap)."""
    return ((v + 0x80000000) & 0xFFFFFFFF) - 0x80000000


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
def _round_and_saturate(target, acc, sign_mode, random_conn):
    if target == TARGET_W:
        if sign_mode == SIGN_EXCITATORY and acc < 0:
            acc = 0
        elif sign_mode == SIGN_INHIBITORY and acc > 0:
            acc = 0
    elif target == TARGET_D and acc < 0:
        acc = 0
    value = acc >> SYN_SHIFT
    if random_conn < (acc & ((1 << SYN_SHIFT) - 1)) * (1.0 / (1 << SYN_SHIFT)):
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
def _factor_column(val, code, dep, cols, count, j, tx, ty, x_hist, y_hist, weights, tag2, tag1, use_tags):
    """val[q] = value of factor ``code`` for synapse (j, cols[q]) under dependency ``dep``.

    One tight loop per (factor kind, dependency) so the loops carry no branches.
    """
    t_epoch = x_hist.shape[0] - 1
    if code < 2:
        if dep == DEP_Y0:
            for q in range(count):
                val[q] = x_hist[ty[cols[q]], code, j]
        else:
            v = x_hist[tx[j] if dep == DEP_X0 else t_epoch, code, j]
            for q in range(count):
                val[q] = v
    elif code < 5:
        r = code - 2
        if dep == DEP_Y0:
            for q in range(count):
                i = cols[q]
                val[q] = y_hist[ty[i], r, i]
        else:
            tidx = tx[j] if dep == DEP_X0 else t_epoch
            for q in range(count):
                val[q] = y_hist[tidx, r, cols[q]]
    elif code == 5:
        for q in range(count):
            val[q] = weights[j, cols[q]]
    elif code == 6 or code == 7:
        if not use_tags:
            for q in range(count):
                val[q] = 0
        elif code == 6:
            for q in range(count):
                val[q] = tag2[j, cols[q]]
        else:
            for q in range(count):
                val[q] = tag1[j, cols[q]]
    elif code == 8:
        v = 1 if tx[j] > 0 else 0
        for q in range(count):
            val[q] = v
    else:
        for q in range(count):
            val[q] = 1 if ty[cols[q]] > 0 else 0


@njit(cache=True)
def _product_into(acc, mac, val, cols, count, j, p, tx, ty, x_hist, y_hist, u_value, weights, tag2, tag1,
                  use_tags, p_dep, p_mant, p_exp, p_shift, f_start, f_code, f_const, f_sgn, f_lo, f_hi):
    """Add product ``p`` for synapses (j, cols[:count]) to ``acc`` (Lava's fixed-point MAC)."""
    dep = p_dep[p]
    if dep == DEP_X0 and tx[j] == 0:
        return
    if dep == DEP_U and u_value == 0:
        return
    if dep == DEP_Y0:
        for q in range(count):
            mac[q] = 1 if ty[cols[q]] > 0 else 0
    else:
        for q in range(count):
            mac[q] = 1
    for f in range(f_start[p], f_start[p + 1]):
        _factor_column(val, f_code[f], dep, cols, count, j, tx, ty, x_hist, y_hist, weights, tag2, tag1, use_tags)
        const = f_const[f]
        lo = f_lo[f]
        hi = f_hi[f]
        if f_sgn[f]:
            for q in range(count):
                v = val[q] + const
                mac[q] = _wrap32(mac[q] * _clip(np.int64(1 if v > 0 else (-1 if v < 0 else 0)), lo, hi))
        else:
            for q in range(count):
                mac[q] = _wrap32(mac[q] * _clip(val[q] + const, lo, hi))
    mant = p_mant[p]
    shift = p_shift[p]
    exp = p_exp[p]
    for q in range(count):
        m = _wrap32(mac[q] * mant) >> shift
        m = _clip(_wrap32(m << exp), ACC_MIN, ACC_MAX)
        acc[q] = _clip(acc[q] + m, ACC_MIN, ACC_MAX)


@njit(cache=True)
def apply_learning(weights, tag2, tag1, has_target, tx, ty, x_hist, y_hist, u_value, sign_mode,
                   random_conn, p_target, p_dep, p_mant, p_exp, p_shift, f_start, f_code, f_const, f_sgn,
                   f_lo, f_hi, all_post, active_post, acc, mac, val, new_values):
    """Apply the product series of one epoch to every synapse with an active dependency.

    Synapses whose pre neuron (x0 products) or post neuron (y0 products) spiked in the epoch, or
    all synapses in an active u epoch, are updated; the rest would be left unchanged by Lava's
    arithmetic and are skipped. For each updated synapse and learned variable: accumulator =
    old value << 7, plus each product (factors + constants clipped to [f_lo, f_hi], multiplied in
    int32, times the mantissa, shifted right by ``p_shift`` = max(0, factor widths + 4 - 15),
    shifted up by the exponent + 7, saturated to 16 bits), then sign-mode saturation, stochastic
    rounding to the variable's 8-bit grid with ``random_conn``, and clipping to the variable's
    range. Every factor reads the pre-epoch values.

    Work goes row by row (one pre neuron, its post neurons) so [pre, post] arrays are read
    contiguously. Tag arrays are (n_pre, n_post), or (1, 1) placeholders when the rule neither
    learns nor reads tags. Scratch: ``all_post`` = arange(n_post) int32, ``active_post`` (n_post,)
    int32, ``acc``/``mac``/``val`` (n_post,) int64, ``new_values`` (3, n_post) int64.
    Returns the number of synapses updated.
    """
    n_pre = tx.shape[0]
    n_post = ty.shape[0]
    n_active = 0
    for i in range(n_post):
        if ty[i] > 0:
            active_post[n_active] = i
            n_active += 1
    any_x0 = False
    any_y0 = False
    every = False
    for p in range(p_dep.shape[0]):
        if p_dep[p] == DEP_X0:
            any_x0 = True
        elif p_dep[p] == DEP_Y0:
            any_y0 = True
        elif u_value != 0:
            every = True
    use_tags = tag2.shape[0] == n_pre and tag2.shape[1] == n_post
    updated = 0
    for j in range(n_pre):
        full_row = every or (any_x0 and tx[j] > 0)
        count = n_post if full_row else (n_active if any_y0 else 0)
        if count == 0:
            continue
        cols = all_post if full_row else active_post
        for target in range(3):
            if not has_target[target]:
                continue
            for q in range(count):
                i = cols[q]
                if target == TARGET_W:
                    old = np.int64(weights[j, i])
                elif target == TARGET_D:
                    old = np.int64(tag2[j, i])
                else:
                    old = np.int64(tag1[j, i])
                acc[q] = old << SYN_SHIFT
            for p in range(p_target.shape[0]):
                if p_target[p] == target:
                    _product_into(acc, mac, val, cols, count, j, p, tx, ty, x_hist, y_hist, u_value, weights,
                                  tag2, tag1, use_tags, p_dep, p_mant, p_exp, p_shift, f_start, f_code, f_const,
                                  f_sgn, f_lo, f_hi)
            for q in range(count):
                new_values[target, q] = _round_and_saturate(target, acc[q], sign_mode, random_conn)
        for q in range(count):
            i = cols[q]
            if has_target[TARGET_W]:
                weights[j, i] = new_values[TARGET_W, q]
            if has_target[TARGET_D]:
                tag2[j, i] = new_values[TARGET_D, q]
            if has_target[TARGET_T]:
                tag1[j, i] = new_values[TARGET_T, q]
        updated += count
    for j in range(n_pre):
        tx[j] = 0
    for i in range(n_post):
        ty[i] = 0
    return updated


# ---------------------------------------------------------------------- float model (Lava's LearningConnectionModelFloat)

@njit(cache=True)
def record_mask_float(mask, within, t_spike, trace, impulse):
    """Float traces: a repeat spiker in the epoch adds its impulse right away; records the spike time."""
    for j in range(mask.shape[0]):
        if mask[j] == 0:
            continue
        if t_spike[j] > 0:
            for r in range(trace.shape[0]):
                trace[r, j] += impulse[r]
        t_spike[j] = within


@njit(cache=True)
def trace_history_float(trace, t_spike, decay, decays, impulse, hist):
    """Float trace histories: exact exponential decay per step, impulse at the spike time, no
    rounding or saturation; a trace without decay (tau = 0) is 0 outside its spike step."""
    t_epoch = hist.shape[0] - 1
    n_traces, n = trace.shape
    for r in range(n_traces):
        for j in range(n):
            hist[0, r, j] = trace[r, j]
    for t in range(1, t_epoch + 1):
        for r in range(n_traces):
            for j in range(n):
                hist[t, r, j] = decay[r] * hist[t - 1, r, j] if decays[r] else 0.0
        for j in range(n):
            if t_spike[j] == t:
                for r in range(n_traces):
                    hist[t, r, j] += impulse[r]
    for r in range(n_traces):
        for j in range(n):
            trace[r, j] = hist[t_epoch, r, j]


@njit(cache=True)
def apply_learning_float(weights, weight_scale, tag2, tag1, has_target, tx, ty, x_hist, y_hist, u_value,
                         sign_mode, p_target, p_dep, p_scale, f_start, f_code, f_const, f_sgn, all_post,
                         active_post, new_values):
    """Float learning epoch: var += sum of scale * dependency * product of (factor + const).

    ``weights`` hold weight * ``weight_scale`` (the float backend's units); factors read and
    updates write Loihi weight units. Weights saturate only by sign mode (excitatory >= 0,
    inhibitory <= 0), tag_2 at >= 0, as Lava's float model. Same synapse selection as
    apply_learning. Returns the number of synapses updated.
    """
    n_pre = tx.shape[0]
    n_post = ty.shape[0]
    t_epoch = x_hist.shape[0] - 1
    n_active = 0
    for i in range(n_post):
        if ty[i] > 0:
            active_post[n_active] = i
            n_active += 1
    any_x0 = False
    any_y0 = False
    every = False
    for p in range(p_dep.shape[0]):
        if p_dep[p] == DEP_X0:
            any_x0 = True
        elif p_dep[p] == DEP_Y0:
            any_y0 = True
        elif u_value != 0:
            every = True
    use_tags = tag2.shape[0] == n_pre and tag2.shape[1] == n_post
    updated = 0
    for j in range(n_pre):
        full_row = every or (any_x0 and tx[j] > 0)
        count = n_post if full_row else (n_active if any_y0 else 0)
        cols = all_post if full_row else active_post
        for q in range(count):
            i = cols[q]
            w_old = weights[j, i] / weight_scale
            d_old = tag2[j, i] if use_tags else 0.0
            t_old = tag1[j, i] if use_tags else 0.0
            new_values[0] = w_old
            new_values[1] = d_old
            new_values[2] = t_old
            for p in range(p_target.shape[0]):
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
                term = p_scale[p]
                for f in range(f_start[p], f_start[p + 1]):
                    code = f_code[f]
                    if code < 2:
                        val = x_hist[tidx, code, j]
                    elif code < 5:
                        val = y_hist[tidx, code - 2, i]
                    elif code == 5:
                        val = w_old
                    elif code == 6:
                        val = d_old
                    elif code == 7:
                        val = t_old
                    elif code == 8:
                        val = 1.0 if tx[j] > 0 else 0.0
                    else:
                        val = 1.0 if ty[i] > 0 else 0.0
                    val += f_const[f]
                    if f_sgn[f]:
                        val = 1.0 if val > 0 else (-1.0 if val < 0 else 0.0)
                    term *= val
                new_values[p_target[p]] += term
            if has_target[TARGET_W]:
                w = new_values[TARGET_W]
                if sign_mode == SIGN_EXCITATORY and w < 0:
                    w = 0.0
                elif sign_mode == SIGN_INHIBITORY and w > 0:
                    w = 0.0
                weights[j, i] = w * weight_scale
            if has_target[TARGET_D]:
                tag2[j, i] = max(new_values[TARGET_D], 0.0)
            if has_target[TARGET_T]:
                tag1[j, i] = new_values[TARGET_T]
        updated += count
    for j in range(n_pre):
        tx[j] = 0
    for i in range(n_post):
        ty[i] = 0
    return updated
