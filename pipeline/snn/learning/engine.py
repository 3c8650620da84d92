"""On-line learning: Loihi's sum-of-products learning engine for one projection.

``LearningEngine`` reproduces Lava's ``LearningDense`` with its bit-approximate fixed-point model
(``PyLearningDenseModelBitApproximate``, lava-nc 0.10) bit for bit, random numbers included:

per step t (1-based), after the projection has used the current weights:

1. pre spikes set x0 and the within-epoch spike time tx; a neuron spiking again in the same
   epoch adds its impulse to the epoch-start trace right away; post spikes likewise (y0, ty);
2. when t is a multiple of t_epoch (the learning epoch), the trace histories of the epoch are
   computed (decay with stochastic rounding, impulse at the recorded spike time), the traces take
   their end-of-epoch values, every product series updates its synaptic variable (16-bit
   accumulator, the variable shifted up 7 bits, stochastic rounding back), and tx/ty reset.

The random numbers are Lava's (see ``learning_random``), so with the same rng_seed the weights and
traces match Lava's every step (tests/test_snn_learning.py against lava_learning_reference.npz).

``FloatLearningEngine`` is Lava's floating-point learning model for the float backend.

In a network, set ``learning=rule`` on a Dense projection; the runtime calls ``rule.attach`` and
steps the engine after every step. Standalone, after the projection's synaptic input has been
computed with the current weights::

    engine = LearningEngine(stdp_loihi(1, 2, -2, 10, 8, t_epoch=2, rng_seed=42), weights_pre_post)
    engine.warmup()
    ...
    updates = engine.step(pre_indices, post_spikes)   # number of synapses updated this step

Cost: one learning epoch touches every synapse of a pre or post neuron that spiked in it
(~20-30 ns per synapse here); steps between epochs only record spike times.
"""
from __future__ import annotations

import numpy as np

from pipeline.snn.learning import kernels as k
from pipeline.snn.learning.random import LavaLearningRandom
from pipeline.snn.learning.rule import (
    FACTOR_WIDTHS,
    TARGETS,
    Factor,
    LearningRule,
    Product,
    RuleSyntaxError,
    TraceConfig,
    literal_from_float,
    parse_rule,
    stdp_loihi,
)

__all__ = ["LearningEngine", "FloatLearningEngine", "RuntimeLearner", "LearningRule", "Product", "Factor",
           "TraceConfig", "RuleSyntaxError", "parse_rule", "stdp_loihi", "literal_from_float",
           "learning_dense_weights", "SIGN_MODES"]

SIGN_MODES = {"mixed": k.SIGN_MIXED, "excitatory": k.SIGN_EXCITATORY, "inhibitory": k.SIGN_INHIBITORY}
WEIGHT_RANGES = {"mixed": (-256, 255), "excitatory": (0, 255), "inhibitory": (-255, 0)}


def learning_dense_weights(weights: np.ndarray, sign_mode: str = "mixed", num_weight_bits: int = 8) -> np.ndarray:
    """Initial weights as Lava's LearningDense stores them: low bits zeroed, no clipping.

    ``n = 8 - num_weight_bits + (1 if mixed)``; ``W = (W >> n) << n`` (inhibitory: on -W). Returns
    int32, same shape. LearningDense's default sign mode is mixed whatever the weights' signs.
    """
    if sign_mode not in SIGN_MODES:
        raise ValueError(f"sign_mode must be one of {sorted(SIGN_MODES)}, got {sign_mode!r}")
    if not 1 <= num_weight_bits <= 8:
        raise ValueError(f"num_weight_bits must be 1..8, got {num_weight_bits}")
    w = np.asarray(weights).astype(np.int32)
    if sign_mode == "inhibitory":
        w = -w
    n = 8 - num_weight_bits + (1 if sign_mode == "mixed" else 0)
    w = (w >> n) << n
    return -w if sign_mode == "inhibitory" else w


def _compile_products(rule: LearningRule):
    """Flatten the rule's products into the kernels' arrays (see learning_kernels.apply_learning)."""
    entries = [(TARGETS.index(target), p) for target in TARGETS for p in getattr(rule, target)]
    n = len(entries)
    p_target = np.empty(n, np.int32)
    p_dep = np.empty(n, np.int32)
    p_mant = np.empty(n, np.int64)
    p_exp = np.empty(n, np.int64)
    p_shift = np.empty(n, np.int64)
    f_start = np.zeros(n + 1, np.int32)
    codes, consts, sgns = [], [], []
    for q, (target, product) in enumerate(entries):
        p_target[q] = target
        p_dep[q] = ("x0", "y0", "u").index(product.dependency)
        p_mant[q] = product.mantissa
        p_exp[q] = product.exponent + k.EXP_OFFSET
        widths = sum(int(FACTOR_WIDTHS[f.code]) for f in product.factors) + k.S_MANT_BITS
        p_shift[q] = max(0, widths - k.ACC_U_BITS)
        for factor in product.factors:
            codes.append(factor.code)
            consts.append(factor.const)
            sgns.append(factor.sgn)
        f_start[q + 1] = len(codes)
    width = FACTOR_WIDTHS[np.array(codes, np.int64)] if codes else np.zeros(0, np.int64)
    return (p_target, p_dep, p_mant, p_exp, p_shift, f_start, np.array(codes, np.int32),
            np.array(consts, np.int64), np.array(sgns, np.bool_), -(1 << width), (1 << width) - 1)


def _trace_arrays(configs: tuple[TraceConfig, ...]):
    imp_int = np.array([c.impulse_int for c in configs], np.int32)
    imp_frac = np.array([c.impulse_frac for c in configs], np.int32)
    decays = np.array([c.tau != 0 for c in configs], np.bool_)
    # Lava computes np.exp(-t / taus) on a float64 array; doing the same here keeps every bit.
    taus = np.array([c.tau if c.tau != 0 else 1.0 for c in configs], np.float64)
    decay = np.exp(-1 / taus)
    return imp_int, imp_frac, decays, decay


class LearningEngine:
    """The learning engine of one projection; updates ``weights`` (n_pre, n_post) in place.

    ``weights`` must be a writable integer array (int16 or wider: learned weights span -256..255)
    indexed [pre, post]; pass ``matrix.T`` for a [post, pre] matrix. Its values must already be in
    the sign mode's range (see ``learning_dense_weights`` for Lava's initial truncation).
    ``sign_mode``: 'mixed' (Lava LearningDense's default), 'excitatory' or 'inhibitory'.
    """

    def __init__(self, rule: LearningRule, weights: np.ndarray, sign_mode: str = "mixed") -> None:
        if sign_mode not in SIGN_MODES:
            raise ValueError(f"sign_mode must be one of {sorted(SIGN_MODES)}, got {sign_mode!r}")
        if weights.ndim != 2 or weights.dtype.kind != "i" or weights.dtype.itemsize < 2:
            raise ValueError(f"weights must be a 2-D int16/int32/int64 array [pre, post], got "
                             f"{weights.dtype} {weights.shape}")
        if not weights.flags.writeable:
            raise ValueError("weights must be writable: the engine updates them in place")
        lo, hi = WEIGHT_RANGES[sign_mode]
        if weights.size and (weights.min() < lo or weights.max() > hi):
            raise ValueError(f"weights span {weights.min()}..{weights.max()}, outside {lo}..{hi} for "
                             f"sign mode {sign_mode!r}")
        self.rule = rule
        self.weights = weights
        self.sign_mode = sign_mode
        self.n_pre, self.n_post = weights.shape
        self.t_epoch = int(rule.t_epoch)
        seed = rule.rng_seed if rule.rng_seed is not None else int(np.random.default_rng().integers(1, 2 ** 32))
        self.rng_seed = int(seed)
        self._random = LavaLearningRandom(self.rng_seed)
        self._products = _compile_products(rule)
        self._has_target = np.array([bool(getattr(rule, t)) for t in TARGETS], np.bool_)
        self._x_imp_int, self._x_imp_frac, self._x_decays, self._x_decay = _trace_arrays(rule.x_traces)
        self._y_imp_int, self._y_imp_frac, self._y_decays, self._y_decay = _trace_arrays(rule.y_traces)
        self._y_post_random_needed = bool(self._y_imp_frac.any())
        self._x_hist_random_needed = bool(self._x_imp_frac.any())
        tag_shape = weights.shape if rule.uses_tags() else (1, 1)
        self.tag2 = np.zeros(tag_shape, np.int32)
        self.tag1 = np.zeros(tag_shape, np.int32)
        self.x = np.zeros((2, self.n_pre), np.int32)
        self.y = np.zeros((3, self.n_post), np.int32)
        self.tx = np.zeros(self.n_pre, np.int32)
        self.ty = np.zeros(self.n_post, np.int32)
        self._x_hist = np.zeros((self.t_epoch + 1, 2, self.n_pre), np.int32)
        self._y_hist = np.zeros((self.t_epoch + 1, 3, self.n_post), np.int32)
        self._all_post = np.arange(self.n_post, dtype=np.int32)
        self._active_post = np.zeros(self.n_post, np.int32)
        self._acc = np.zeros(self.n_post, np.int64)
        self._mac = np.zeros(self.n_post, np.int64)
        self._val = np.zeros(self.n_post, np.int64)
        self._new_values = np.zeros((3, self.n_post), np.int64)
        self.time_step = 0
        self.updates_last_step = 0
        self.updates_total = 0

    @property
    def x1(self) -> np.ndarray:
        """Pre trace x1 (n_pre,) int32 (a view)."""
        return self.x[0]

    @property
    def x2(self) -> np.ndarray:
        return self.x[1]

    @property
    def y1(self) -> np.ndarray:
        """Post trace y1 (n_post,) int32 (a view)."""
        return self.y[0]

    @property
    def y2(self) -> np.ndarray:
        return self.y[1]

    @property
    def y3(self) -> np.ndarray:
        return self.y[2]

    def reset(self) -> None:
        """Traces, spike times, step counter and random streams back to the start (weights untouched)."""
        for a in (self.x, self.y, self.tx, self.ty, self.tag2, self.tag1):
            a[...] = 0
        self._random.reset()
        self.time_step = 0
        self.updates_last_step = 0
        self.updates_total = 0

    def warmup(self) -> None:
        """Compile every kernel on throw-away copies (no state changes)."""
        scratch = LearningEngine(self.rule, self.weights.copy(order="K"), self.sign_mode)
        pre = np.zeros(1, np.int32)
        post = np.ones(self.n_post, np.uint8)
        for _ in range(self.t_epoch):
            scratch.step(pre, post)
        scratch.step_masks(np.ones(self.n_pre, np.uint8), post)

    def _within_epoch(self) -> int:
        within = self.time_step % self.t_epoch
        return within if within else self.t_epoch

    def _record_post(self, post_spikes: np.ndarray) -> None:
        if post_spikes.shape != (self.n_post,):
            raise ValueError(f"post_spikes must have shape ({self.n_post},), got {post_spikes.shape}")
        random_int = (self._random.y_impulse.at(self._random.post_spike_index(self.time_step))
                      if self._y_post_random_needed else 0)
        k.record_post_mask(post_spikes, self._within_epoch(), self.ty, self.y, self._y_imp_int,
                           self._y_imp_frac, random_int)

    def step(self, pre_indices: np.ndarray, post_spikes: np.ndarray, count: int | None = None) -> int:
        """Advance one step: pre spikes as indices (int32, first ``count``), post spikes (n_post,) 0/1.

        Returns the number of synapses the learning engine updated this step (non-zero only at the
        end of a learning epoch).
        """
        self.time_step += 1
        n = pre_indices.shape[0] if count is None else int(count)
        k.record_pre_indices(pre_indices, n, self._within_epoch(), self.tx, self.x, self._x_imp_int,
                             self._x_imp_frac)
        self._record_post(post_spikes)
        return self._end_step()

    def step_masks(self, pre_spikes: np.ndarray, post_spikes: np.ndarray) -> int:
        """As ``step`` with pre spikes as a (n_pre,) 0/1 vector."""
        if pre_spikes.shape != (self.n_pre,):
            raise ValueError(f"pre_spikes must have shape ({self.n_pre},), got {pre_spikes.shape}")
        self.time_step += 1
        k.record_pre_mask(pre_spikes, self._within_epoch(), self.tx, self.x, self._x_imp_int,
                          self._x_imp_frac)
        self._record_post(post_spikes)
        return self._end_step()

    def _end_step(self) -> int:
        if self.time_step % self.t_epoch:
            self.updates_last_step = 0
            return 0
        updated = self._run_epoch()
        self.updates_last_step = updated
        self.updates_total += updated
        return updated

    def _run_epoch(self) -> int:
        rnd = self._random
        draw = rnd.end_of_step_index(self.time_step)
        epoch = self.time_step // self.t_epoch
        x_int = rnd.x_impulse.at(draw) if self._x_hist_random_needed else 0
        y_int = rnd.y_impulse.at(draw) if self._y_post_random_needed else 0
        k.trace_history(self.x, self.tx, self._x_decay, self._x_decays, self._x_imp_int, self._x_imp_frac,
                        rnd.x_decay.at(draw), x_int, self._x_hist)
        k.trace_history(self.y, self.ty, self._y_decay, self._y_decays, self._y_imp_int, self._y_imp_frac,
                        rnd.y_decay.at(draw), y_int, self._y_hist)
        decimate = self.rule.decimate
        u_value = 1 if decimate is not None and epoch % (2 ** decimate) == 0 else 0
        return k.apply_learning(self.weights, self.tag2, self.tag1, self._has_target, self.tx, self.ty,
                                self._x_hist, self._y_hist, u_value, SIGN_MODES[self.sign_mode],
                                rnd.conn.at(epoch), *self._products, self._all_post, self._active_post,
                                self._acc, self._mac, self._val, self._new_values)


class FloatLearningEngine:
    """Lava's floating-point learning model (``LearningConnectionModelFloat``) for the float backend.

    Same rule, epochs and step order as LearningEngine, in float64 without rounding: traces add
    their impulses and decay by exp(-1/tau) per step, and each epoch a variable grows by
    ``sum(mantissa * 2**exponent * dependency * product of factors)``; weights saturate only by
    sign mode. ``weights`` (n_pre, n_post) float hold weight * ``weight_scale`` (the float
    backend stores a Loihi weight W as W * 2**(weight_exp + 6)); rules see Loihi weight units.
    """

    def __init__(self, rule: LearningRule, weights: np.ndarray, weight_scale: float = 1.0,
                 sign_mode: str | None = None) -> None:
        if weights.ndim != 2 or weights.dtype.kind != "f" or not weights.flags.writeable:
            raise ValueError(f"weights must be a writable 2-D float array [pre, post], got {weights.dtype} "
                             f"{weights.shape}")
        if not weight_scale > 0:
            raise ValueError(f"weight_scale must be > 0, got {weight_scale}")
        self.rule = rule
        self.weights = weights
        self.weight_scale = float(weight_scale)
        self.sign_mode = rule.sign_mode if sign_mode is None else sign_mode
        if self.sign_mode not in SIGN_MODES:
            raise ValueError(f"sign_mode must be one of {sorted(SIGN_MODES)}, got {self.sign_mode!r}")
        self.n_pre, self.n_post = weights.shape
        self.t_epoch = int(rule.t_epoch)
        products = [(TARGETS.index(t), p) for t in TARGETS for p in getattr(rule, t)]
        self._p_target = np.array([t for t, _ in products], np.int32)
        self._p_dep = np.array([("x0", "y0", "u").index(p.dependency) for _, p in products], np.int32)
        self._p_scale = np.array([p.scale for _, p in products], np.float64)
        factors = [f for _, p in products for f in p.factors]
        self._f_start = np.cumsum([0] + [len(p.factors) for _, p in products]).astype(np.int32)
        self._f_code = np.array([f.code for f in factors], np.int32)
        self._f_const = np.array([f.const for f in factors], np.float64)
        self._f_sgn = np.array([f.sgn for f in factors], np.bool_)
        self._has_target = np.array([bool(getattr(rule, t)) for t in TARGETS], np.bool_)
        self._x_imp = np.array([c.impulse for c in rule.x_traces], np.float64)
        self._y_imp = np.array([c.impulse for c in rule.y_traces], np.float64)
        _, _, self._x_decays, self._x_decay = _trace_arrays(rule.x_traces)
        _, _, self._y_decays, self._y_decay = _trace_arrays(rule.y_traces)
        tag_shape = weights.shape if rule.uses_tags() else (1, 1)
        self.tag2 = np.zeros(tag_shape, np.float64)
        self.tag1 = np.zeros(tag_shape, np.float64)
        self.x = np.zeros((2, self.n_pre), np.float64)
        self.y = np.zeros((3, self.n_post), np.float64)
        self.tx = np.zeros(self.n_pre, np.int32)
        self.ty = np.zeros(self.n_post, np.int32)
        self._x_hist = np.zeros((self.t_epoch + 1, 2, self.n_pre), np.float64)
        self._y_hist = np.zeros((self.t_epoch + 1, 3, self.n_post), np.float64)
        self._all_post = np.arange(self.n_post, dtype=np.int32)
        self._active_post = np.zeros(self.n_post, np.int32)
        self._new_values = np.zeros(3, np.float64)
        self.time_step = 0
        self.updates_last_step = 0
        self.updates_total = 0

    def reset(self) -> None:
        """Traces, spike times and step counter back to the start (weights untouched)."""
        for a in (self.x, self.y, self.tx, self.ty, self.tag2, self.tag1):
            a[...] = 0
        self.time_step = 0
        self.updates_last_step = 0
        self.updates_total = 0

    def warmup(self) -> None:
        """Compile every kernel on throw-away copies (no state changes)."""
        scratch = FloatLearningEngine(self.rule, self.weights.copy(order="K"), self.weight_scale, self.sign_mode)
        ones = np.ones(self.n_pre, np.uint8)
        for _ in range(self.t_epoch):
            scratch.step_masks(ones, np.ones(self.n_post, np.uint8))

    def step_masks(self, pre_spikes: np.ndarray, post_spikes: np.ndarray) -> int:
        """Advance one step with (n_pre,) and (n_post,) 0/1 spikes; returns synapses updated."""
        if pre_spikes.shape != (self.n_pre,) or post_spikes.shape != (self.n_post,):
            raise ValueError(f"spikes must have shapes ({self.n_pre},) and ({self.n_post},), got "
                             f"{pre_spikes.shape} and {post_spikes.shape}")
        self.time_step += 1
        within = self.time_step % self.t_epoch or self.t_epoch
        k.record_mask_float(pre_spikes, within, self.tx, self.x, self._x_imp)
        k.record_mask_float(post_spikes, within, self.ty, self.y, self._y_imp)
        if self.time_step % self.t_epoch:
            self.updates_last_step = 0
            return 0
        k.trace_history_float(self.x, self.tx, self._x_decay, self._x_decays, self._x_imp, self._x_hist)
        k.trace_history_float(self.y, self.ty, self._y_decay, self._y_decays, self._y_imp, self._y_hist)
        decimate = self.rule.decimate
        epoch = self.time_step // self.t_epoch
        u_value = 1 if decimate is not None and epoch % (2 ** decimate) == 0 else 0
        updated = k.apply_learning_float(self.weights, self.weight_scale, self.tag2, self.tag1, self._has_target,
                                         self.tx, self.ty, self._x_hist, self._y_hist, u_value,
                                         SIGN_MODES[self.sign_mode], self._p_target, self._p_dep, self._p_scale,
                                         self._f_start, self._f_code, self._f_const, self._f_sgn, self._all_post,
                                         self._active_post, self._new_values)
        self.updates_last_step = updated
        self.updates_total += updated
        return updated


class RuntimeLearner:
    """What a runtime's learning hook returns: advances an engine from the runtime's spike views.

    ``pre_spikes``/``post_spikes`` are uint8 views the runtime rewrites every step; ``step(t)`` is
    called after the step's synaptic input was computed with the pre-learning weights (Lava's
    order) and returns the number of synapses updated.
    """

    def __init__(self, engine: LearningEngine | FloatLearningEngine, pre_spikes: np.ndarray,
                 post_spikes: np.ndarray) -> None:
        if pre_spikes.shape != (engine.n_pre,) or post_spikes.shape != (engine.n_post,):
            raise ValueError(f"spike views {pre_spikes.shape}/{post_spikes.shape} do not match weights "
                             f"({engine.n_pre}, {engine.n_post})")
        self.engine = engine
        self.pre_spikes = pre_spikes
        self.post_spikes = post_spikes

    def step(self, t: int) -> int:
        if t != self.engine.time_step:
            raise RuntimeError(f"learner is at step {self.engine.time_step} but the runtime is at step {t}; "
                               "reset both together")
        return self.engine.step_masks(self.pre_spikes, self.post_spikes)

    def reset(self) -> None:
        self.engine.reset()


def attach_rule(rule: LearningRule, weights: np.ndarray, pre_spikes: np.ndarray, post_spikes: np.ndarray,
                backend: str, weight_scale: float | None = None) -> RuntimeLearner:
    """Build (and compile) the learner for a runtime projection (see LearningRule.attach).

    loihi: ``weights`` holds the integer Loihi weights, prepared as Lava's LearningDense does
    (``learning_dense_weights``); they must lie in the rule's sign-mode range. float: Lava's
    float model on float weights that hold weight * ``weight_scale`` (default 1: a FloatLIF
    network's weights; a LoihiLIF network on the float backend stores W * 2**(weight_exp + 6)).
    """
    if backend == "loihi":
        engine = LearningEngine(rule, weights, rule.sign_mode)
    elif backend == "float":
        engine = FloatLearningEngine(rule, weights, 1.0 if weight_scale is None else weight_scale)
    else:
        raise ValueError(f"unknown backend {backend!r} for a learning rule; expected 'loihi' or 'float'")
    engine.warmup()
    return RuntimeLearner(engine, pre_spikes, post_spikes)
