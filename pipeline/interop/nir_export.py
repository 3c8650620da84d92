"""A float (FloatLIF) :class:`pipeline.snn.Network` -> NIR graph, the inverse of pipeline.interop.nir_graph.

Each population becomes a neuron node, by its per-step decays at the network's dt (forward Euler,
time constants in seconds): no state at all (v decay 0, no synaptic filter) -> Threshold; no synaptic
filter and no leak -> IF(r=1); no synaptic filter -> LIF(tau = dt / (1 - v decay), r=1, v_leak = bias /
(dt/tau)); otherwise CubaLIF(tau_syn, tau_mem, r=1, w_in=1, v_leak); a population that never spikes
(threshold float32 max, as the importer makes LI / CubaLI) -> LI / CubaLI. The classifier spec
(input spec, readout) has no NIR form and is not written; ``spikeloop import`` infers it again. Each projection becomes a Linear (Dense, Sparse) or Conv2d node whose weights are divided by
the target's input factor (what the importer multiplies), followed by a Delay node when it has a
delay. So ``import(export(net))`` gives the same network up to float rounding. Not expressible in NIR,
hence an error naming the population or projection: refractory periods, a bias on a non-leaky
population, per-synapse delays, LoihiLIF networks (convert to float first), and a "vote" or "assignment"
readout (an ensemble's, whose outputs an import would take for classes).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.interop.nir_graph import NEVER
from pipeline.interop.trace import grid_shapes
from pipeline.snn.network import INPUT, Conv2D, Network


def _neuron_node(nir, population, dt_ms: float, grid):
    a = population.neuron.arrays(f"population {population.name!r}", population.size)
    if grid is not None:  # NIR infers a neuron's type from its parameters' shape
        a = {key: value.reshape(grid) for key, value in a.items()}
    owner = f"population {population.name!r}"
    if np.any(a["refractory_ms"] > 0):
        raise ValueError(f"{owner}: NIR cannot express a refractory period")
    dt_s = dt_ms / 1000.0
    with np.errstate(divide="ignore"):
        k_syn = 1.0 - np.exp(-dt_ms / a["tau_syn_ms"])
        k_mem = 1.0 - np.exp(-dt_ms / a["tau_mem_ms"])
    zeros = np.zeros(a["bias"].shape)
    ones = np.ones(a["bias"].shape)
    never = np.all(a["threshold"] >= NEVER)
    if np.all(k_syn == 1) and np.all(k_mem == 1) and not never:  # no state at all: a Heaviside step
        if np.any(a["bias"] != 0):
            raise ValueError(f"{owner}: NIR's Threshold has no bias (a memoryless neuron with a bias: not expressible)")
        return nir.Threshold(threshold=a["threshold"]), ones.ravel()
    if never:  # never spikes: a leaky integrator
        if np.any(k_mem == 0) or np.any(k_mem == 1):
            raise ValueError(f"{owner}: a non-spiking population needs a finite, nonzero membrane time constant for NIR")
        if np.all(k_syn == 1):
            return nir.LI(tau=dt_s / k_mem, r=ones, v_leak=a["bias"] / k_mem), k_mem.ravel()
        if np.any(k_syn == 1):
            raise ValueError(f"{owner}: mixes neurons with and without a synaptic filter")
        return (nir.CubaLI(tau_syn=dt_s / k_syn, tau_mem=dt_s / k_mem, r=ones, v_leak=a["bias"] / k_mem, w_in=ones),
                (k_syn * k_mem).ravel())
    if np.any(k_mem == 1):
        raise ValueError(f"{owner}: mixes memoryless (Threshold) neurons with leaky ones")
    if np.all(k_syn == 1) and np.all(k_mem == 0):
        if np.any(a["bias"] != 0):
            raise ValueError(f"{owner}: NIR's IF has no bias (no leak and a bias: not expressible)")
        return nir.IF(r=ones, v_threshold=a["threshold"], v_reset=zeros), ones.ravel()
    if np.any(k_mem == 0):
        raise ValueError(f"{owner}: a leak-free population with a synaptic filter is not expressible in NIR")
    if np.all(k_syn == 1):
        return (nir.LIF(tau=dt_s / k_mem, r=ones, v_leak=a["bias"] / k_mem,
                        v_threshold=a["threshold"], v_reset=zeros), k_mem.ravel())
    if np.any(k_syn == 1):
        raise ValueError(f"{owner}: mixes neurons with and without a synaptic filter")
    return (nir.CubaLIF(tau_syn=dt_s / k_syn, tau_mem=dt_s / k_mem, r=ones, v_leak=a["bias"] / k_mem,
                        v_threshold=a["threshold"], v_reset=zeros, w_in=ones), (k_syn * k_mem).ravel())


def network_to_graph(network: Network):
    """The NIR graph of a FloatLIF network (see the module docstring)."""
    import nir

    if not network.is_float:
        raise ValueError("export needs a float (FloatLIF) network; LoihiLIF networks have no NIR form here")
    readout = network.readout
    if readout is not None and readout.kind in ("vote", "assignment"):
        raise ValueError(f"readout {readout.kind!r}: its {network.n_outputs} outputs are not one per class, and NIR "
                         f"cannot carry the table (spikeloop import would read {network.n_outputs} classes); an "
                         f"ensemble's members export one by one (pipeline.snn.ensemble.member)")
    dt_ms = float(network.dt_ms)
    input_shape = np.array(network.input_shape if network.input_shape is not None else (network.n_inputs,))
    nodes = {"input": nir.Input(input_type={"input": input_shape})}
    edges = []
    factors = {}
    populations = {p.name for p in network.populations}

    def fresh(base: str) -> str:
        """A node name no population and no node has yet (a population may be called "output" or "w0")."""
        name = base
        while name in populations or name in nodes:
            name += "_"
        return name

    grids = grid_shapes(network)
    for population in network.populations:
        node, factor = _neuron_node(nir, population, dt_ms, grids.get(population.name))
        nodes[population.name] = node
        factors[population.name] = factor
    for i, projection in enumerate(network.projections):
        owner = projection.owner()
        if np.ndim(projection.delay):
            raise ValueError(f"{owner}: per-synapse delays are not expressible in NIR")
        factor = factors[projection.target]
        name = fresh(f"w{i}")
        if isinstance(projection, Conv2D):
            out = projection.out_shape()
            per_channel = factor.reshape(out)[:, 0, 0]
            if not np.all(factor.reshape(out) == per_channel[:, None, None]):
                raise ValueError(f"{owner}: the target's input factor varies within a channel")
            nodes[name] = nir.Conv2d(input_shape=projection.in_shape[1:], weight=projection.kernel / per_channel[:, None, None, None],
                                     stride=projection.stride, padding=projection.padding, dilation=projection.dilation,
                                     groups=projection.groups, bias=np.zeros(out[0]))
        else:
            n_pre = network.source_size(projection.source)
            matrix = np.asarray(projection.dense_weights(n_pre, network.source_size(projection.target)), dtype=np.float64)
            nodes[name] = nir.Linear(weight=matrix / factor[:, None])
            if projection.source in grids:  # a (C, H, W) source is read in C order
                flatten = fresh(f"{name}_flatten")
                nodes[flatten] = nir.Flatten(input_type={"input": np.array(grids[projection.source])},
                                             start_dim=0, end_dim=-1)
                edges.append(("input" if projection.source == INPUT else projection.source, flatten))
                edges.append((flatten, name))
        if (name, projection.target) not in edges and not any(e[1] == name for e in edges):
            edges.append(("input" if projection.source == INPUT else projection.source, name))
        if projection.delay:
            delay = fresh(f"{name}_delay")
            nodes[delay] = nir.Delay(delay=np.full(network.source_size(projection.target),
                                                   projection.delay * dt_ms / 1000.0))
            edges.append((name, delay))
            name = delay
        edges.append((name, projection.target))
    output = network.population(network.output_name)
    exit_node = fresh("output")
    nodes[exit_node] = nir.Output(output_type={"output": np.array([output.size])})
    edges.append((output.name, exit_node))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def write_nir(network: Network, path: str | Path) -> None:
    """Write ``network`` as a NIR file (HDF5, the nir package's writer)."""
    import nir

    nir.write(str(path), network_to_graph(network))
