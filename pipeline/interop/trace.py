"""Run a network for T steps and record every population: spikes, u and v per step.

``simulate`` is what ``spikeloop simulate`` runs: input spikes (or graded payloads) per step into the
input port, or a bias for the first population (lava-dl's bias-driven input layer), optional netx
staggered resets, and a trace ``{<name>_s, <name>_u, <name>_v}`` per population of shape
(neurons in the network's layout..., T): a population on a (C, H, W) grid (the target of a Conv2D, or
its source) is shown as (C, H, W) for layout "chw" and (X=W, Y=H, C) for layout "xyc"; others as (n, T).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.snn.network import INPUT, Conv2D, LoihiLIF, Network
from pipeline.snn.runtime import build


def grid_shapes(network: Network) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) of every population (and of ``"input"``) that a Conv2D reads or writes."""
    grids: dict[str, tuple[int, int, int]] = {}
    if network.input_shape is not None:
        grids[INPUT] = tuple(network.input_shape)
    for projection in network.projections:
        if isinstance(projection, Conv2D):
            grids[projection.source] = projection.in_shape
            grids[projection.target] = projection.out_shape()
    return grids


def to_layout(values: np.ndarray, grid: tuple[int, int, int] | None, layout: str) -> np.ndarray:
    """(n, ...) in network order -> (C, H, W, ...) or (X, Y, C, ...) for a grid; unchanged without one."""
    if grid is None:
        return values
    shaped = values.reshape(tuple(grid) + values.shape[1:])
    return shaped if layout == "chw" else np.moveaxis(shaped, (0, 1, 2), (2, 1, 0))


def from_layout(values: np.ndarray, grid: tuple[int, int, int] | None, layout: str) -> np.ndarray:
    """The inverse of :func:`to_layout` for an array in the grid's layout; any other shape is returned as is."""
    values = np.asarray(values)
    if grid is None:
        return values
    expected = tuple(grid) if layout == "chw" else tuple(grid)[::-1]
    if values.shape[:3] == expected:
        moved = values if layout == "chw" else np.moveaxis(values, (0, 1, 2), (2, 1, 0))
        return moved.reshape((-1,) + values.shape[3:])
    return values


def with_input_bias(network: Network, bias: np.ndarray) -> Network:
    """``network`` with the first population's bias_mant set from ``bias`` (its layout, or flat)."""
    first = network.populations[0]
    if not isinstance(first.neuron, LoihiLIF):
        raise ValueError(f"--input-bias needs a LoihiLIF first population; {first.name!r} is float")
    flat = from_layout(np.asarray(bias), grid_shapes(network).get(first.name), network.layout).ravel()
    if flat.size != first.size:
        raise ValueError(f"input bias has {flat.size} values, population {first.name!r} has {first.size} neurons")
    if np.any(flat != np.round(flat)):
        raise ValueError("input bias must be integer mantissas")
    return network.with_population(first.name, neuron=dataclasses.replace(first.neuron, bias_mant=flat.astype(np.int64)))


def simulate(network: Network, steps: int, input_spikes: np.ndarray | None = None,
             reset_interval: int | None = None, backend: str = "loihi") -> dict[str, np.ndarray]:
    """Run ``steps`` steps and record every population (see the module docstring).

    input_spikes: (n_inputs, T_in) or the input grid in the network's layout plus T_in; column t is
    step t's input (nonzero = spike; the value is the payload for graded projections); steps beyond
    T_in get none. reset_interval N: netx's LIFReset, population i's u and v are zeroed at the start
    of step t (counted from 0) when (t + 1) % N == (1 + i) % N.
    """
    if input_spikes is not None:
        spikes = from_layout(np.asarray(input_spikes), grid_shapes(network).get(INPUT), network.layout)
        if spikes.ndim != 2 or spikes.shape[0] != network.n_inputs:
            raise ValueError(f"input spikes must be (n_inputs={network.n_inputs}, T) or the input grid plus T, "
                             f"got shape {np.shape(input_spikes)}")
    else:
        spikes = np.zeros((network.n_inputs, 0))
    network = dataclasses.replace(network, populations=tuple(
        dataclasses.replace(p, probe_u=True, probe_v=True) for p in network.populations))
    runtime = build(network, backend)
    names = [p.name for p in network.populations]
    views = {name: (runtime.spikes_of(name), runtime.u(name), runtime.v(name)) for name in names}
    dtype = np.int64 if backend == "loihi" else np.float64
    record = {name: [np.zeros((p.size, steps), dtype=dtype) for _ in range(3)] for name, p in
              zip(names, network.populations)}
    graded = any(p.num_message_bits for p in network.projections)
    empty = np.zeros(0, dtype=np.int32)
    for t in range(steps):
        if reset_interval:
            for i, name in enumerate(names):
                if (t + 1) % reset_interval == (1 + i) % reset_interval:
                    views[name][1][:] = 0
                    views[name][2][:] = 0
        if t < spikes.shape[1]:
            active = np.flatnonzero(spikes[:, t]).astype(np.int32)
            runtime.step(active, spikes[active, t] if graded else None)
        else:
            runtime.step(empty)
        for name in names:
            for out, view in zip(record[name], views[name]):
                out[:, t] = view
    grids = grid_shapes(network)
    trace = {}
    for name in names:
        for suffix, values in zip(("s", "u", "v"), record[name]):
            trace[f"{name}_{suffix}"] = to_layout(values, grids.get(name), network.layout)
    return trace
