"""Float -> Loihi conversion with a report of the quantization error it introduced.

For each FloatLIF population a state scale ``s`` (Loihi state units per float unit) is chosen so that
the largest threshold becomes ``vth_target << 6``; then

* du = round(4095 - 4096 exp(-dt/tau_syn)), dv = round(4096 (1 - exp(-dt/tau_mem))), clipped to
  [0, 4095] (the closest integers to the float decays, since Loihi decays u by (4095 - du)/4096 and
  v by (4096 - dv)/4096),
* vth = round(threshold * s / 64), bias = bias * s as a 13-bit mantissa with the smallest exponent
  0-7 that holds it, refractory = round(refractory_ms / dt) steps,
* weights (into a population of scale s): W * 2**(weight_exp + 6) = w * s, with the smallest
  weight_exp in [-8, 7] that fits the 8-bit mantissa, rounded to the values Lava's truncation keeps
  (even numbers in [-256, 254] for mixed-sign projections, [0, 255] / [-255, 0] otherwise).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from pipeline.snn.network import Conv2D, Dense, LoihiLIF, Network, Population, Sparse

DEFAULT_VTH = 2**14  # threshold 2**20 state units: 8x headroom below the 24-bit v/u limits


@dataclass
class PopulationError:
    """Realized vs requested neuron parameters of one population (worst neuron)."""

    name: str
    scale: float              # Loihi state units per float unit
    tau_syn_ms_realized: float
    tau_mem_ms_realized: float
    decay_u_error: float      # max |realized - requested| of the per-step u decay factor
    decay_v_error: float
    threshold_rel_error: float
    bias_rel_error: float     # max |bias error| / threshold


@dataclass
class ProjectionError:
    """Weight quantization of one projection: errors relative to its largest |weight|."""

    name: str
    weight_exp: int
    max_rel_error: float
    rms_rel_error: float
    n_clipped: int            # weights that did not fit even at weight_exp = 7
    n_zeroed: int             # nonzero float weights that became 0


@dataclass
class QuantizationReport:
    populations: list[PopulationError]
    projections: list[ProjectionError]

    @property
    def max_weight_error(self) -> float:
        return max((p.max_rel_error for p in self.projections), default=0.0)

    def __str__(self) -> str:
        lines = ["population      scale       tau_syn ms  tau_mem ms  decay_u err decay_v err thr err   bias err"]
        for p in self.populations:
            lines.append(f"{p.name:<15} {p.scale:<11.4g} {p.tau_syn_ms_realized:<11.4g} {p.tau_mem_ms_realized:<11.4g} "
                         f"{p.decay_u_error:<11.2e} {p.decay_v_error:<11.2e} {p.threshold_rel_error:<9.2e} {p.bias_rel_error:.2e}")
        lines.append("projection      weight_exp  max err     rms err     clipped  zeroed")
        for q in self.projections:
            lines.append(f"{q.name:<15} {q.weight_exp:<11d} {q.max_rel_error:<11.2e} {q.rms_rel_error:<11.2e} "
                         f"{q.n_clipped:<8d} {q.n_zeroed}")
        return "\n".join(lines)


def _tau(factor: np.ndarray, dt: float) -> float:
    """Worst (smallest) realized time constant in ms of a per-step decay factor."""
    with np.errstate(divide="ignore"):
        taus = np.where(factor >= 1.0, np.inf, np.where(factor <= 0.0, 0.0, -dt / np.log(np.clip(factor, 1e-300, 1.0))))
    return float(np.min(taus))


def _convert_population(population: Population, dt: float, vth_target: int) -> tuple[Population, PopulationError]:
    owner = f"population {population.name!r}"
    a = population.neuron.arrays(owner, population.size)
    with np.errstate(divide="ignore"):
        want_u = np.exp(-dt / a["tau_syn_ms"])
        want_v = np.exp(-dt / a["tau_mem_ms"])
    du = np.clip(np.round(4095 - 4096 * want_u), 0, 4095).astype(np.int64)
    dv = np.clip(np.round(4096 * (1 - want_v)), 0, 4095).astype(np.int64)
    got_u, got_v = (4095 - du) / 4096, (4096 - dv) / 4096
    scale = vth_target * 64 / float(a["threshold"].max())
    vth = np.clip(np.round(a["threshold"] * scale / 64), 1, 2**17 - 1).astype(np.int64)
    bias_state = a["bias"] * scale
    with np.errstate(divide="ignore"):
        exp = np.ceil(np.log2(np.maximum(np.abs(bias_state), 1e-300) / 4095)).clip(0, None).astype(np.int64)
    if np.any(exp > 7):
        worst = float(a["bias"][np.argmax(exp)])
        raise ValueError(f"{owner}: parameter 'bias' {worst} is too large relative to the threshold to fit "
                         f"Loihi's 13-bit mantissa * 2**7 (at most {4095 * 128 / scale:.4g}); lower vth_target")
    bias_mant = np.round(bias_state / 2.0**exp).astype(np.int64)
    refractory = np.round(a["refractory_ms"] / dt).astype(np.int64)
    neuron = LoihiLIF(du=du, dv=dv, vth=vth, bias_mant=bias_mant, bias_exp=exp, refractory=refractory)
    error = PopulationError(
        name=population.name, scale=scale, tau_syn_ms_realized=_tau(got_u, dt), tau_mem_ms_realized=_tau(got_v, dt),
        decay_u_error=float(np.max(np.abs(got_u - want_u))), decay_v_error=float(np.max(np.abs(got_v - want_v))),
        threshold_rel_error=float(np.max(np.abs(vth * 64 / scale - a["threshold"]) / a["threshold"])),
        bias_rel_error=float(np.max(np.abs(bias_mant * 2.0**exp / scale - a["bias"]) / a["threshold"])))
    return dataclasses.replace(population, neuron=neuron), error


def quantize_weights(weights: np.ndarray, scale: float, name: str = "") -> tuple[np.ndarray, int, ProjectionError]:
    """Integer mantissas (int64, same shape) and weight_exp with W * 2**(weight_exp + 6) ~= weights * scale."""
    weights = np.asarray(weights, dtype=np.float64)
    largest = float(np.max(np.abs(weights))) if weights.size else 0.0
    mixed = weights.size > 0 and weights.min() < 0 < weights.max()
    limit = 254 if mixed else 255
    if largest == 0:
        return np.zeros(weights.shape, dtype=np.int64), 0, ProjectionError(name, 0, 0.0, 0.0, 0, 0)
    exp = int(np.clip(math.ceil(math.log2(largest * scale / 64 / limit)), -8, 7))
    mantissa = weights * scale / 2.0 ** (exp + 6)
    step = 2 if mixed else 1
    quantized = (np.round(mantissa / step) * step).astype(np.int64)
    clipped = (quantized > limit) | (quantized < -256 if mixed else quantized < -255)
    quantized = np.clip(quantized, -256 if mixed else -255, limit)
    realized = quantized * 2.0 ** (exp + 6) / scale
    error = np.abs(realized - weights) / largest
    report = ProjectionError(name, exp, float(error.max()), float(np.sqrt(np.mean(error**2))), int(clipped.sum()),
                             int(np.sum((quantized == 0) & (weights != 0))))
    return quantized, exp, report


def to_loihi(network: Network, vth_target: int = DEFAULT_VTH) -> tuple[Network, QuantizationReport]:
    """A LoihiLIF copy of a FloatLIF network and the quantization error report."""
    if not network.is_float:
        raise ValueError("to_loihi: the network is already LoihiLIF")
    if not 1 <= vth_target < 2**17:
        raise ValueError(f"to_loihi: parameter 'vth_target' must be in [1, 2**17), got {vth_target}")
    populations, pop_errors, scales = [], [], {}
    for population in network.populations:
        converted, error = _convert_population(population, float(network.dt_ms), vth_target)
        populations.append(converted)
        pop_errors.append(error)
        scales[population.name] = error.scale
    projections, proj_errors = [], []
    for projection in network.projections:
        scale = scales[projection.target]
        if isinstance(projection, Conv2D):
            kernel, exp, error = quantize_weights(projection.kernel, scale, projection.name)
            converted = dataclasses.replace(projection, kernel=kernel, weight_exp=exp, num_weight_bits=8)
        elif isinstance(projection, (Dense, Sparse)):
            weights, exp, error = quantize_weights(projection.weights, scale, projection.name)
            converted = dataclasses.replace(projection, weights=weights, weight_exp=exp, num_weight_bits=8)
        else:
            raise ValueError(f"{projection.owner()}: cannot convert {type(projection).__name__}")
        projections.append(converted)
        proj_errors.append(error)
    loihi = dataclasses.replace(network, populations=populations, projections=projections, output=network.output_name)
    return loihi, QuantizationReport(pop_errors, proj_errors)
