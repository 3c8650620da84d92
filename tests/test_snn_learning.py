"""Loihi learning engine: bit-exact against Lava's LearningDense + STDPLoihi, rules, traces, RNG."""
from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.snn.learning import kernels as k
from pipeline.snn.learning.engine import FloatLearningEngine, LearningEngine, learning_dense_weights
from pipeline.snn.learning.random import BlockDraws
from pipeline.snn.learning.rule import (
    Factor,
    LearningRule,
    Product,
    RuleSyntaxError,
    TraceConfig,
    literal_from_float,
    parse_rule,
    stdp_loihi,
)


@pytest.fixture(scope="module")
def lava_learning(conformance_dir):
    return np.load(conformance_dir / "loihi" / "lava_learning_reference.npz", allow_pickle=False)


def _stdp_from_params(text: str):
    """STDPLoihi(...) keyword values and the impulses from the file's params string."""
    args = dict(re.findall(r"(\w+)=(-?[\d.]+)", text.split(";")[0]))
    impulse = float(re.search(r"y1_impulse=(\d+)", text).group(1))
    return stdp_loihi(float(args["learning_rate"]), float(args["A_plus"]), float(args["A_minus"]),
                      float(args["tau_plus"]), float(args["tau_minus"]), t_epoch=int(args["t_epoch"]),
                      rng_seed=int(args["rng_seed"]), x1_impulse=impulse, y1_impulse=impulse)


def test_matches_lava_every_step(lava_learning):
    d = lava_learning
    rule = _stdp_from_params(str(d["params"][0]))
    assert "MIXED" in str(d["params"][0])
    weights = learning_dense_weights(d["W0"], "mixed")          # [post, pre] like Lava
    engine = LearningEngine(rule, weights.T, sign_mode="mixed")
    pre, post = d["pre"].astype(np.uint8), d["post"].astype(np.uint8)
    n_steps = pre.shape[1]
    assert d["weights"].shape == (n_steps,) + weights.shape
    history = np.empty_like(d["weights"])
    a_out_prev = np.zeros(weights.shape[0], np.int64)
    for t in range(n_steps):
        a_out = a_out_prev
        # Dense computes this step's activation with the weights before this step's learning.
        a_out_prev = weights[:, pre[:, t].astype(bool)].sum(axis=1)
        engine.step(np.flatnonzero(pre[:, t]).astype(np.int32), post[:, t])
        history[t] = weights
        assert np.array_equal(weights, d["weights"][t]), f"weights differ at step {t}"
        assert np.array_equal(engine.x1, d["x1"][t]), f"x1 differs at step {t}"
        assert np.array_equal(engine.y1, d["y1"][t]), f"y1 differs at step {t}"
        assert np.array_equal(a_out, d["a_out"][t]), f"a_out differs at step {t}"
    assert not np.array_equal(history[-1], history[0]), "the reference must exercise learning"


def test_mask_and_index_inputs_agree(lava_learning):
    d = lava_learning
    rule = _stdp_from_params(str(d["params"][0]))
    w_a = learning_dense_weights(d["W0"]).T.copy()
    w_b = w_a.copy()
    a, b = LearningEngine(rule, w_a), LearningEngine(rule, w_b)
    for t in range(d["pre"].shape[1]):
        pre = d["pre"][:, t].astype(np.uint8)
        post = d["post"][:, t].astype(np.uint8)
        a.step(np.flatnonzero(pre).astype(np.int32), post)
        b.step_masks(pre, post)
    assert np.array_equal(w_a, w_b) and np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert a.updates_total == b.updates_total > 0


# ---------------------------------------------------------------- rules and the parser

def test_parse_stdp_style_rule():
    products = parse_rule("2^-2*x1*y0 - 2^-2*y1*x0")
    assert products == (Product("y0", 1, -2, (Factor("x1"),)), Product("x0", -1, -2, (Factor("y1"),)))


def test_parse_literals_brackets_sgn_and_u():
    products = parse_rule("(-2) * x0 * y1 + 3*2^-1*y0*(x1 + 2) - u1 * sgn(w - 1) * (2 - y2) * 16")
    assert products[0] == Product("x0", -2, 0, (Factor("y1"),))
    assert products[1] == Product("y0", 3, -1, (Factor("x1", 2),))
    # -(16) * u1 * sgn(w-1) * (2 - y2) = 16 * u1 * sgn(w-1) * (y2 - 2); 16 -> 4 * 2^2
    assert products[2] == Product("u", 4, 2, (Factor("w", -1, sgn=True), Factor("y2", -2)), decimate=1)


def test_parse_second_dependency_becomes_factor():
    (p,) = parse_rule("x0*y0*y1")
    assert p.dependency == "x0" and p.factors == (Factor("y0"), Factor("y1"))


@pytest.mark.parametrize("text, fragment", [
    ("x1*y1", "no dependency"),
    ("3^2*x0", "only powers of 2"),
    ("x0*y1 +", "expected a product"),
    ("x0 y1", "expected '+' or '-'"),
    ("x0*(y1", "missing ')'"),
    ("x0*q", "unexpected character 'q' at position 3"),
    ("9*x0", "not representable"),
    ("2^9*x0", "exponent 9"),
    ("x0*sgn(x1)", "sgn() applies to w, d or t"),
    ("u1*u2*w", "second u dependency"),
    ("", "empty"),
])
def test_parse_errors_name_the_problem(text, fragment):
    with pytest.raises((RuleSyntaxError, ValueError), match=re.escape(fragment)):
        parse_rule(text)


def test_literal_from_float_as_lava():
    assert literal_from_float(1) == (1, 0)
    assert literal_from_float(-2) == (-2, 0)
    assert literal_from_float(0.5) == (1, -1)
    assert literal_from_float(0.3) == (1, -2)        # 0.3 -> 2^-2 (Lava rounds log2)
    assert literal_from_float(1.5) == (1, 1)         # 1.5 -> 2, as Lava's float_to_literal
    assert literal_from_float(0) == (0, 0)


def test_stdp_loihi_products():
    rule = stdp_loihi(0.5, 4, -2, 10, 8, t_epoch=3, rng_seed=1)
    # Lava folds the literals without normalizing: (1)*2^-1 * (-2) -> mantissa -2, exponent -1
    assert rule.dw == (Product("x0", -2, -1, (Factor("y1"),)), Product("y0", 4, -1, (Factor("x1"),)))
    assert (rule.x1.impulse, rule.x1.tau, rule.y1.tau, rule.t_epoch) == (16, 10, 8, 3)


def test_rule_validation():
    with pytest.raises(ValueError, match="t_epoch must be 1..63"):
        LearningRule.from_strings(dw="x0*y1", t_epoch=64)
    with pytest.raises(ValueError, match="at least one"):
        LearningRule()
    with pytest.raises(ValueError, match="same k"):
        LearningRule.from_strings(dw="u1*w", dt="u2*t")
    with pytest.raises(ValueError, match=">= 0"):
        TraceConfig(-1, 2)


def test_trace_impulse_fraction_bits():
    assert (TraceConfig(16.5).impulse_int, TraceConfig(16.5).impulse_frac) == (16, 128)
    assert (TraceConfig(3.01).impulse_int, TraceConfig(3.01).impulse_frac) == (3, 3)


# ---------------------------------------------------------------- trace decay known answers

def _history(values, t_spike, tau, impulse, random_decay, random_int, t_epoch):
    config = TraceConfig(impulse, tau)
    trace = np.array([values], np.int32)
    hist = np.zeros((t_epoch + 1, 1, trace.shape[1]), np.int32)
    decay = np.exp(-1 / np.array([tau if tau else 1.0]))
    k.trace_history(trace, np.array(t_spike, np.int32), decay, np.array([tau != 0]),
                    np.array([config.impulse_int], np.int32), np.array([config.impulse_frac], np.int32),
                    random_decay, random_int, hist)
    return trace[0], hist[:, 0, 0]


def test_trace_decay_stochastic_rounding_known_answers():
    # 16 * exp(-1/10) = 14.477: rounds up iff the epoch's random number < 0.477
    assert _history([16], [0], 10, 16, 0.40, 0, 1)[0][0] == 15
    assert _history([16], [0], 10, 16, 0.50, 0, 1)[0][0] == 14
    # 100 over 3 steps with tau 8 and random 0.99 (always down): 88.25 -> 88 -> 77.66 -> 77 -> 67.95 -> 67
    trace, hist = _history([100], [0], 8, 16, 0.99, 0, 3)
    assert hist.tolist() == [100, 88, 77, 67] and trace[0] == 67


def test_trace_impulse_at_spike_time_and_saturation():
    # spike at within-epoch step 2: each step decays first (x exp(-1/10), rounded down here), the
    # spike step then adds 16: 120 -> 108.58 -> 108 -> 97.72 -> 97 + 16 = 113 -> 102.25 -> 102
    trace, hist = _history([120], [2], 10, 16, 0.99, 0, 3)
    assert hist.tolist() == [120, 108, 113, 102] and trace[0] == 102
    trace, hist = _history([125], [1], 100, 16, 0.99, 0, 1)
    assert hist.tolist() == [125, 127]                      # 123.75 -> 123, +16 saturates at 127
    # fractional impulse 0.5 (128/256): rounded up iff the impulse draw (0..127) < 128
    assert _history([0], [1], 10, 2.5, 0.99, 127, 1)[0][0] == 3
    # tau 0: the trace only holds the impulse in the step of the spike
    assert _history([50], [1], 0, 7, 0.5, 0, 2)[1].tolist() == [50, 7, 0]


def test_block_draws_equal_lavas_per_call_draws():
    for integer in (False, True):
        lava = np.random.default_rng(7)
        per_call = [lava.integers(0, 128, size=1)[0] if integer else lava.random(1)[0] for _ in range(300)]
        blocks = BlockDraws(7, integer=integer, block=64)
        assert [blocks.at(i) for i in range(0, 300, 3)] == per_call[::3]
        with pytest.raises(ValueError, match="already discarded"):
            blocks.at(0)


# ---------------------------------------------------------------- general rules vs Lava's array formulation

class _LavaTraceRandom:
    def __init__(self, seed_decay, seed_impulse):
        self._d = np.random.default_rng(seed_decay)
        self._i = np.random.default_rng(seed_impulse)
        self.advance()

    def advance(self):
        self.decay = self._d.random(1)[0]
        self.impulse = self._i.integers(0, 128, size=1)[0]


def _lava_array_model(rule, w_post_pre, pre, post, sign_mode):
    """Lava's LearningConnectionModelBitApproximate written as its numpy array operations."""
    n_post, n_pre = w_post_pre.shape
    te = rule.t_epoch
    xi = np.array([[c.impulse_int, c.impulse_frac] for c in rule.x_traces])
    yi = np.array([[c.impulse_int, c.impulse_frac] for c in rule.y_traces])
    xtau = np.array([c.tau for c in rule.x_traces], float)
    ytau = np.array([c.tau for c in rule.y_traces], float)
    xr = _LavaTraceRandom(rule.rng_seed, rule.rng_seed + 1)
    yr = _LavaTraceRandom(rule.rng_seed + 2, rule.rng_seed + 3)
    conn = np.random.default_rng(2)
    conn_r = conn.random(1)[0]
    syn = {"dw": w_post_pre.astype(np.int64), "dd": np.zeros_like(w_post_pre, np.int64),
           "dt": np.zeros_like(w_post_pre, np.int64)}
    x, y = np.zeros((2, n_pre), np.int64), np.zeros((3, n_post), np.int64)
    tx, ty = np.zeros(n_pre, np.int64), np.zeros(n_post, np.int64)

    def add_impulse(v, r, imp):
        return np.clip(v + imp[..., 0] + (r < imp[..., 1]), 0, 127)

    def decay(v, tau, r):
        ip = np.exp(-1 / tau) * v
        return (np.floor(ip) + (r < ip % 1)).astype(np.int64)

    out = []
    for t in range(1, pre.shape[1] + 1):
        within = t % te or te
        s = pre[:, t - 1].astype(bool)
        multi = (tx > 0) & s
        x[:, multi] = add_impulse(x[:, multi], 0, xi[:, None, :])
        tx[s] = within
        xr.advance(), yr.advance()
        b = post[:, t - 1].astype(bool)
        multi = (ty > 0) & b
        y[:, multi] = add_impulse(y[:, multi], yr.impulse, yi[:, None, :])
        ty[b] = within
        xr.advance(), yr.advance()
        if t % te == 0:
            conn_r = conn.random(1)[0]
            xh = np.zeros((te + 1, 2, n_pre), np.int64)
            yh = np.zeros((te + 1, 3, n_post), np.int64)
            xh[0], yh[0] = x, y
            for h in range(1, te + 1):
                for r in range(2):
                    if xtau[r]:
                        xh[h, r] = decay(xh[h - 1, r], xtau[r], xr.decay)
                for r in range(3):
                    if ytau[r]:
                        yh[h, r] = decay(yh[h - 1, r], ytau[r], yr.decay)
                ids = np.where(tx == h)[0]
                xh[h][:, ids] = add_impulse(xh[h][:, ids], xr.impulse, xi[:, None, :])
                ids = np.where(ty == h)[0]
                yh[h][:, ids] = add_impulse(yh[h][:, ids], yr.impulse, yi[:, None, :])
            x, y = xh[-1].copy(), yh[-1].copy()
            dep = {"x0": (tx > 0)[None, :], "y0": (ty > 0)[:, None],
                   "u": int(int(t / te) % 2 ** rule.decimate == 0) if rule.decimate is not None else 0}
            traces = {}
            for r, name in enumerate(("x1", "x2")):
                traces[name, "x0"] = xh[tx, r].diagonal()[None, :]
                traces[name, "y0"] = xh[ty, r]
                traces[name, "u"] = xh[-1, r][None, :]
            for r, name in enumerate(("y1", "y2", "y3")):
                traces[name, "x0"] = yh[tx, r].T
                traces[name, "y0"] = yh[ty, r].diagonal()[:, None]
                traces[name, "u"] = yh[-1, r][:, None]
            old = {"w": syn["dw"], "d": syn["dd"], "t": syn["dt"]}
            new = {}
            for target in ("dw", "dd", "dt"):
                products = getattr(rule, target)
                if not products:
                    continue
                acc = (syn[target] << 7).astype(np.int32)
                for p in products:
                    mac = np.ones((n_post, n_pre), np.int32) * dep[p.dependency]
                    width = 0
                    for f in p.factors:
                        fw = {"w": 9, "d": 9, "t": 9, "x0": 1, "y0": 1}.get(f.var, 7)
                        width += fw
                        if f.var in ("x0", "y0"):
                            val = dep[f.var] + f.const
                        elif f.var in ("w", "d", "t"):
                            val = old[f.var] + f.const
                        else:
                            val = traces[f.var, p.dependency] + f.const
                        if f.sgn:
                            val = np.sign(val)
                        mac = mac * np.clip(val, -(2 ** fw), 2 ** fw - 1).astype(np.int32)
                    width += 4
                    mac = mac * p.mantissa
                    mac = np.right_shift(mac, max(0, width - 15))
                    mac = np.clip(np.left_shift(mac, p.exponent + 7), -(2 ** 15) - 1, 2 ** 15 - 1)
                    acc = np.clip(acc + mac, -(2 ** 15) - 1, 2 ** 15 - 1)
                if target == "dw" and sign_mode == "excitatory":
                    acc = np.maximum(0, acc)
                elif target == "dw" and sign_mode == "inhibitory":
                    acc = np.minimum(0, acc)
                elif target == "dd":
                    acc = np.maximum(0, acc)
                ip = acc / 128
                ip = np.floor(ip) + (conn_r < ip % 1)
                value = (ip * 128).astype(np.int32) >> 7
                if target == "dw":
                    lo, hi = {"mixed": (-256, 255), "excitatory": (0, 255), "inhibitory": (-255, 0)}[sign_mode]
                else:
                    lo, hi = (0, 255) if target == "dd" else (-257, 255)
                new[target] = np.clip(value, lo, hi).astype(np.int64)
            syn.update(new)
            tx[:], ty[:] = 0, 0
        out.append((syn["dw"].copy(), syn["dd"].copy(), syn["dt"].copy(), x.copy(), y.copy()))
    return out


GENERAL_RULES = [
    # fractional scaling: the weight accumulator keeps low bits, so stochastic rounding matters
    (dict(dw="2^-2*x1*y0 - 3*2^-3*y1*x0 + 2^-4*x0*y0*y2", x1_impulse=20.5, x1_tau=6, y1_impulse=9.25,
          y1_tau=5, y2_impulse=30, y2_tau=0, t_epoch=3, rng_seed=11), "mixed"),
    # x2 / y3 traces, tags learned and read, u dependency, sgn of the weight
    (dict(dw="x0*(x2 - 3)*2^-1 + u1*sgn(w)*(-1) + y0*t*2^-5", dt="2^-1*y0*x1 - x0*y3*2^-2",
          dd="y0*(y1+1)*2^-3", x1_impulse=12, x1_tau=4, x2_impulse=7.75, x2_tau=12, y1_impulse=16,
          y1_tau=8, y3_impulse=5.5, y3_tau=3, t_epoch=4, rng_seed=3), "mixed"),
    (dict(dw="4*x0*y1*x1*2^-6 - 2*y0*x1", x1_impulse=40, x1_tau=20, y1_impulse=33, y1_tau=7,
          t_epoch=2, rng_seed=99), "excitatory"),
]


@pytest.mark.parametrize("kwargs, sign_mode", GENERAL_RULES)
def test_general_rules_match_lavas_array_formulation(kwargs, sign_mode):
    rng = np.random.default_rng(5)
    n_pre, n_post, n_steps = 7, 4, 60
    rule = LearningRule.from_strings(**kwargs)
    lo, hi = {"mixed": (-256, 255), "excitatory": (0, 255)}[sign_mode]
    w0 = learning_dense_weights(rng.integers(lo // 2, hi // 2, size=(n_post, n_pre)), sign_mode)
    # bursts make neurons spike several times per epoch (the repeat-spike impulse path)
    pre = (rng.random((n_pre, n_steps)) < 0.35).astype(np.uint8)
    post = (rng.random((n_post, n_steps)) < 0.3).astype(np.uint8)
    expected = _lava_array_model(rule, w0, pre, post, sign_mode)
    weights = w0.T.astype(np.int16)
    engine = LearningEngine(rule, weights, sign_mode=sign_mode)
    for t in range(n_steps):
        engine.step_masks(pre[:, t], post[:, t])
        w, dd, dt, x, y = expected[t]
        assert np.array_equal(weights.T, w), f"weights differ at step {t}"
        assert np.array_equal(engine.x, x) and np.array_equal(engine.y, y), f"traces differ at step {t}"
        if rule.uses_tags():
            assert np.array_equal(engine.tag2.T, dd) and np.array_equal(engine.tag1.T, dt), f"tags at {t}"
    assert not np.array_equal(weights.T, w0)


def test_engine_rejects_bad_weights():
    rule = stdp_loihi(1, 1, -1, 5, 5)
    with pytest.raises(ValueError, match="outside -256..255"):
        LearningEngine(rule, np.full((2, 2), 300, np.int32))
    with pytest.raises(ValueError, match="int16/int32/int64"):
        LearningEngine(rule, np.zeros((2, 2), np.int8))
    with pytest.raises(ValueError, match="outside 0..255"):
        LearningEngine(rule, np.full((2, 2), -2, np.int32), sign_mode="excitatory")
    engine = LearningEngine(rule, np.zeros((3, 2), np.int32))
    with pytest.raises(ValueError, match=r"post_spikes must have shape \(2,\)"):
        engine.step(np.zeros(1, np.int32), np.zeros(3, np.uint8))


def test_reset_replays_identically(lava_learning):
    d = lava_learning
    rule = _stdp_from_params(str(d["params"][0]))
    w0 = learning_dense_weights(d["W0"]).T.copy()
    weights = w0.copy()
    engine = LearningEngine(rule, weights)
    runs = []
    for _ in range(2):
        weights[...] = w0
        engine.reset()
        for t in range(40):
            engine.step_masks(d["pre"][:, t].astype(np.uint8), d["post"][:, t].astype(np.uint8))
        runs.append((weights.copy(), engine.x.copy(), engine.y.copy()))
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_rule_survives_network_save_and_load(tmp_path):
    from pipeline.snn import Dense, LoihiLIF, Network, Population, build

    rule = LearningRule.from_strings(dw="2^-2*x1*y0 - 3*2^-3*y1*x0 + u1*sgn(w)*(-1)", dt="y0*(x2 - 3)",
                                     x1_impulse=20.5, x1_tau=6, x2_impulse=4, x2_tau=3, y1_impulse=9.25,
                                     y1_tau=5, t_epoch=3, rng_seed=11, sign_mode="mixed")
    assert LearningRule.from_arrays(rule.to_arrays()) == rule
    rng = np.random.default_rng(4)
    network = Network(n_inputs=30, populations=[Population("p", 8, LoihiLIF(du=300, dv=300, vth=30))],
                      projections=[Dense(name="d", source="input", target="p",
                                         weights=rng.integers(-80, 120, size=(8, 30)), learning=rule)])
    network.save(tmp_path / "net.npz")
    loaded = Network.load(tmp_path / "net.npz")
    assert loaded.projections[0].learning == rule
    inputs = [np.flatnonzero(rng.random(30) < 0.3).astype(np.int32) for _ in range(60)]
    runs = []
    for net in (network, loaded):
        runtime = build(net, "loihi")
        runtime.warmup()
        for x in inputs:
            runtime.step(x)
        runs.append(runtime.weights.copy())
        assert runtime.counters.total()["learning_updates"] > 0
    assert np.array_equal(*runs)


def test_runtime_hook_matches_a_standalone_engine():
    """The runtime feeds the engine this step's pre (input) and post spikes after the synaptic input
    was computed with the pre-learning weights; a standalone engine fed the recorded spikes agrees."""
    from pipeline.snn import Dense, LoihiLIF, Network, Population, build

    rng = np.random.default_rng(0)
    n_in, n_out = 20, 6
    weights = rng.integers(-60, 120, size=(n_out, n_in))
    rule = stdp_loihi(1, 2, -2, 10, 8, t_epoch=2, rng_seed=42)
    network = Network(n_inputs=n_in, populations=[Population("out", n_out, LoihiLIF(du=100, dv=200, vth=60))],
                      projections=[Dense(name="d", source="input", target="out", weights=weights, learning=rule)])
    runtime = build(network, "loihi")
    runtime.warmup()
    standalone = learning_dense_weights(weights).T.astype(np.int16)
    engine = LearningEngine(rule, standalone)
    for _ in range(200):
        inputs = np.flatnonzero(rng.random(n_in) < 0.2).astype(np.int32)
        post = runtime.step(inputs).copy()
        engine.step(inputs, post)
    assert engine.updates_total > 0
    assert np.array_equal(runtime.weights.reshape(n_in, n_out), standalone)


def _lava_float_model(rule, w_post_pre, pre, post, sign_mode):
    """Lava's LearningConnectionModelFloat as numpy array operations (tau 0 traces taken as 0)."""
    n_post, n_pre = w_post_pre.shape
    te = rule.t_epoch
    xi = np.array([c.impulse for c in rule.x_traces])
    yi = np.array([c.impulse for c in rule.y_traces])
    xtau = np.array([c.tau for c in rule.x_traces], float)
    ytau = np.array([c.tau for c in rule.y_traces], float)
    w = w_post_pre.astype(float)
    x, y = np.zeros((2, n_pre)), np.zeros((3, n_post))
    tx, ty = np.zeros(n_pre, int), np.zeros(n_post, int)
    out = []
    for t in range(1, pre.shape[1] + 1):
        within = t % te or te
        s, b = pre[:, t - 1].astype(bool), post[:, t - 1].astype(bool)
        x[:, (tx > 0) & s] += xi[:, None]
        tx[s] = within
        y[:, (ty > 0) & b] += yi[:, None]
        ty[b] = within
        if t % te == 0:
            xh, yh = np.zeros((te + 1, 2, n_pre)), np.zeros((te + 1, 3, n_post))
            xh[0], yh[0] = x, y
            for h in range(1, te + 1):
                for r in range(2):
                    xh[h, r] = np.exp(-1 / xtau[r]) * xh[h - 1, r] if xtau[r] else 0
                for r in range(3):
                    yh[h, r] = np.exp(-1 / ytau[r]) * yh[h - 1, r] if ytau[r] else 0
                xh[h][:, tx == h] += xi[:, None]
                yh[h][:, ty == h] += yi[:, None]
            x, y = xh[-1].copy(), yh[-1].copy()
            dep = {"x0": (tx > 0)[None, :] * 1.0, "y0": (ty > 0)[:, None] * 1.0}
            traces = {}
            for r, name in enumerate(("x1", "x2")):
                traces[name, "x0"], traces[name, "y0"] = xh[tx, r].diagonal()[None, :], xh[ty, r]
            for r, name in enumerate(("y1", "y2", "y3")):
                traces[name, "x0"], traces[name, "y0"] = yh[tx, r].T, yh[ty, r].diagonal()[:, None]
            dw = 0.0
            for p in rule.dw:
                term = p.mantissa * 2.0 ** p.exponent * dep[p.dependency]
                for f in p.factors:
                    term = term * ((w if f.var == "w" else dep[f.var] if f.var in dep
                                    else traces[f.var, p.dependency]) + f.const)
                dw = dw + term
            w = w + dw
            if sign_mode == "excitatory":
                w = np.maximum(w, 0)
            tx[:], ty[:] = 0, 0
        out.append((w.copy(), x.copy(), y.copy()))
    return out


@pytest.mark.parametrize("sign_mode", ["mixed", "excitatory"])
def test_float_model_matches_lavas_float_formulation(sign_mode):
    rng = np.random.default_rng(9)
    n_pre, n_post, n_steps, scale = 6, 4, 50, 2.0 ** 7
    rule = LearningRule.from_strings(dw="2^-2*x1*y0 - 3*2^-3*y1*x0 + 2^-4*y0*(x2 + 1)*w", x1_impulse=20.5,
                                     x1_tau=6, x2_impulse=3, x2_tau=4, y1_impulse=9.25, y1_tau=5, t_epoch=3,
                                     sign_mode=sign_mode)
    w0 = rng.uniform(0 if sign_mode == "excitatory" else -50, 50, size=(n_post, n_pre))
    pre = (rng.random((n_pre, n_steps)) < 0.35).astype(np.uint8)
    post = (rng.random((n_post, n_steps)) < 0.3).astype(np.uint8)
    expected = _lava_float_model(rule, w0, pre, post, sign_mode)
    weights = w0.T * scale                     # the float backend stores W * 2**(weight_exp + 6)
    engine = FloatLearningEngine(rule, weights, weight_scale=scale)
    for t in range(n_steps):
        engine.step_masks(pre[:, t], post[:, t])
        w, x, y = expected[t]
        np.testing.assert_allclose(weights.T / scale, w, rtol=1e-12, atol=1e-9, err_msg=f"step {t}")
        np.testing.assert_allclose(engine.x, x, rtol=1e-12), np.testing.assert_allclose(engine.y, y, rtol=1e-12)
    assert engine.updates_total > 0 and not np.allclose(weights.T / scale, w0)


def test_float_backend_runs_learning_rules():
    from pipeline.snn import Dense, FloatLIF, Network, Population, build

    rng = np.random.default_rng(1)
    network = Network(n_inputs=20, populations=[Population("out", 6, FloatLIF(threshold=1.0))],
                      projections=[Dense(name="d", source="input", target="out", weights=rng.random((6, 20)) * 0.5,
                                         learning=stdp_loihi(0.25, 1, -1, 10, 8, t_epoch=2, rng_seed=1))])
    runtime = build(network, "float")
    runtime.warmup()
    before = runtime.weights.copy()
    for _ in range(100):
        runtime.step(np.flatnonzero(rng.random(20) < 0.3).astype(np.int32))
    assert runtime.counters.total()["learning_updates"] > 0
    assert not np.array_equal(before, runtime.weights)
