"""Named network builders that launch files can ask for (``[network] builder = "dvs_steering"``).

A builder gets the input grid the stages deliver (width, height, channels; input index
``(c * height + y) * width + x``, the binner's layout) and its own parameters, and returns a
:class:`pipeline.snn.Network` with Loihi integer parameters (runs on both backends). Parameters are
declared as :class:`pipeline.core.schema.Key` so launch files are checked before anything is built.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from pipeline.core.schema import Key, parameter_help


@dataclass(frozen=True)
class Builder:
    """A named network recipe: ``build(width, height, channels, **params) -> Network``.

    synapses: ``(width, height, channels, **params) -> int``, the weights the recipe allocates (its dense
    matrices while building), so a caller can refuse a size before any memory is touched.
    """

    build: Callable
    params: Mapping[str, Key]
    doc: str
    synapses: Callable


def _random_lif_synapses(width: int, height: int, channels: int, hidden: int = 1024, outputs: int = 10, **_) -> int:
    return hidden * channels * height * width + outputs * hidden


def _loihi_lif(du: int, dv: int, vth: int):
    from pipeline.snn.network import LoihiLIF

    return LoihiLIF(du=du, dv=dv, vth=vth)


def dvs_steering(width: int, height: int, channels: int, weight: int = 8, vth: int = 48, du: int = 4095,
                 dv: int = 256):
    """A Braitenberg-style steering network: every input pixel in the left half of the grid (x < width//2,
    both polarity channels) excites output neuron 0 ("left"), every pixel in the right half
    (x >= width - width//2) excites neuron 1 ("right"); an odd middle column drives neither.

    Loihi units: weight (8-bit, excitatory), vth (threshold mantissa: spike when v > vth << 6), du/dv
    (12-bit decays; du = 4095 makes the current last one step, dv = 256 leaks v by 1/16 per 1 ms step,
    ~16 ms membrane time constant). So about vth / weight active pixels per step make a side spike.
    Output: (2,) spikes, [left, right]; the decoder turns the rate difference into a turn.
    """
    from pipeline.snn.network import INPUT, Network, Population, Sparse

    n_inputs = channels * height * width
    x = np.arange(n_inputs) % width
    side = np.full(n_inputs, -1, dtype=np.int64)
    side[x < width // 2] = 0
    side[x >= width - width // 2] = 1
    matrix = np.zeros((2, n_inputs), dtype=np.int64)
    for k in (0, 1):
        matrix[k, side == k] = weight
    return Network(
        n_inputs=n_inputs,
        populations=[Population("steer", 2, _loihi_lif(du, dv, vth))],
        projections=[Sparse.from_dense(matrix, name="halves", source=INPUT, target="steer")],
        output="steer",
        input_shape=(channels, height, width),
    )


def random_lif(width: int, height: int, channels: int, hidden: int = 1024, outputs: int = 10,
               density: float = 1.0, weight: int = 4, vth: int = 200, du: int = 2048, dv: int = 256,
               seed: int = 0):
    """A seeded random two-layer network of the SNN benchmark's shape (inputs -> ``hidden`` LIF (dense
    when ``density`` = 1) -> ``outputs`` LIF); weights are even integers uniform in [-2*weight, 2*weight] (mixed sign; Loihi's 8-bit mixed-sign
    quantisation keeps even weights exact, so the input stays zero-mean).
    A load generator for the loop and its benchmark, not a trained model."""
    from pipeline.snn.network import INPUT, Dense, Network, Population

    rng = np.random.default_rng(seed)
    n_inputs = channels * height * width
    w1 = 2 * rng.integers(-weight, weight + 1, size=(hidden, n_inputs))
    if density < 1.0:
        w1[rng.random(w1.shape) >= density] = 0
    w2 = 2 * rng.integers(-weight, weight + 1, size=(outputs, hidden))
    return Network(
        n_inputs=n_inputs,
        populations=[Population("hidden", hidden, _loihi_lif(du, dv, vth)),
                     Population("out", outputs, _loihi_lif(du, dv, vth))],
        projections=[Dense(name="in_hidden", source=INPUT, target="hidden", weights=w1.astype(np.int8)),
                     Dense(name="hidden_out", source="hidden", target="out", weights=w2.astype(np.int8))],
        output="out",
        input_shape=(channels, height, width),
    )


def obstacle_avoidance(width: int, height: int, channels: int, **params):
    """The closed-loop demo's looming + steering network (:func:`pipeline.snn.avoidance.obstacle_avoidance`):
    OFF/ON channels of the grid -> looming [left, right] -> motor [forward, turn_left, turn_right]."""
    from pipeline.snn.avoidance import obstacle_avoidance as build

    return build(width, height, channels, **params)


def keys_from_signature(function: Callable, skip: tuple[str, ...] = ("width", "height", "channels")) -> dict:
    """Launch-file keys for a builder's numeric/boolean keyword parameters, typed by their defaults, with the
    help of the function docstring's ``name: help`` lines (value ranges are checked by the network itself
    when it is built)."""
    helps = parameter_help(function.__doc__)
    keys = {}
    for name, parameter in inspect.signature(function).parameters.items():
        default = parameter.default
        if name in skip:
            continue
        if isinstance(default, bool):
            keys[name] = Key("bool", default, help=helps.get(name, ""))
        elif isinstance(default, int):
            keys[name] = Key("int", default, help=helps.get(name, ""))
        elif isinstance(default, float):
            keys[name] = Key("number", default, help=helps.get(name, ""))
    return keys


def _avoidance_keys() -> dict:
    from pipeline.snn.avoidance import obstacle_avoidance as build

    return keys_from_signature(build)


_LIF_KEYS = {
    "vth": Key("int", low=0, high=2**17 - 1, help="threshold mantissa (spike when v > vth << 6)"),
    "du": Key("int", low=0, high=4095, help="12-bit current decay"),
    "dv": Key("int", low=0, high=4095, help="12-bit voltage decay"),
}

BUILDERS: dict[str, Builder] = {
    "dvs_steering": Builder(
        dvs_steering,
        {"weight": Key("int", 8, low=1, high=255, help="excitatory weight per pixel (8-bit)"),
         **{k: Key(v.kind, d, v.low, v.high, help=v.help) for (k, v), d in zip(_LIF_KEYS.items(), (48, 4095, 256))}},
        "left/right halves of the input grid -> two LIF neurons [left, right]",
        lambda width, height, channels, **_: 2 * channels * height * width,
    ),
    "random_lif": Builder(
        random_lif,
        {"hidden": Key("int", 1024, low=1, high=1_000_000, help="hidden LIF neurons"),
         "outputs": Key("int", 10, low=1, high=1_000_000, help="output LIF neurons"),
         "density": Key("number", 1.0, low=0.0, high=1.0, low_open=True, help="fraction of input synapses kept"),
         "weight": Key("int", 4, low=1, high=63, help="weights uniform over the even integers in [-2*weight, 2*weight]"),
         "seed": Key("int", 0, low=0, help="random seed"),
         **{k: Key(v.kind, d, v.low, v.high, help=v.help) for (k, v), d in zip(_LIF_KEYS.items(), (200, 2048, 256))}},
        "seeded random inputs -> hidden LIF -> output LIF load generator (benchmarks)",
        _random_lif_synapses,
    ),
    "obstacle_avoidance": Builder(
        obstacle_avoidance,
        _avoidance_keys(),
        "spikeloop demo's looming + steering network -> motor [forward, turn_left, turn_right]",
        lambda width, height, channels, **_: 4 * channels * height * width,
    ),
}
