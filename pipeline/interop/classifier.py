"""The classifier spec an imported model carries: how a recording is presented, how outputs become a class.

NIR and netx files store neither. The importer infers them where the file's shape says what it is, and
``spikeloop import`` flags override:

* an input of shape (2, H, W) is an event camera with one channel per polarity (the NIR paper's
  N-MNIST CNN): ``InputSpec(sensor="dvs", bin_us=dt, encoding=..., polarity="split", tail_steps=hops)``,
  where ``hops`` is the longest input -> output path in steps (one per projection plus its delay), so
  the last input's effect reaches the output; (1, H, W) is the same with polarities merged;
* encoding "counts" (graded event counts per step, tonic ToFrame) where the network's input
  projections carry graded payloads (NIR imports), "spikes" otherwise (netx synapses read binary
  spikes);
* ``Readout("count", classes=("0", ..., "n-1"))`` for the output population.

Any other input shape gets no spec unless the user asks for one (``--encoding`` needs a (C, H, W)
input; ``--classes`` alone sets only the readout).
"""
from __future__ import annotations

import dataclasses

from pipeline.snn.model import InputSpec, Readout
from pipeline.snn.network import INPUT, Network


def hops_to_output(network: Network) -> int:
    """Steps from an input spike to its first effect on the output population: the longest acyclic
    input -> output path, counting 1 + delay per projection (0 when the output is not reachable)."""
    edges: dict[str, list[tuple[str, int]]] = {}
    for projection in network.projections:
        if projection.source != projection.target:
            edges.setdefault(projection.source, []).append((projection.target, 1 + projection.max_delay()))
    target = network.output_name
    best = 0

    def walk(node: str, length: int, seen: frozenset[str]) -> None:
        nonlocal best
        if node == target:
            best = max(best, length)
        for nxt, steps in edges.get(node, ()):
            if nxt not in seen:
                walk(nxt, length + steps, seen | {nxt})

    walk(INPUT, 0, frozenset({INPUT}))
    return best


def infer(network: Network, encoding: str | None = None, classes: tuple[str, ...] | None = None,
          tail_steps: int | None = None) -> tuple[InputSpec | None, Readout | None]:
    """(input spec, readout) for ``network`` (see the module docstring); ValueError says which flag
    does not fit the network."""
    dt_us = network.dt_ms * 1000.0
    grid = network.input_shape
    spec = None
    if (grid is not None and grid[0] in (1, 2)) or encoding is not None:
        if grid is None:
            raise ValueError(f"--encoding needs a (C, H, W) input; this network has {network.n_inputs} flat inputs")
        if grid[0] not in (1, 2):
            raise ValueError(f"--encoding: an event-camera input has 1 or 2 polarity channels, this one {grid[0]}")
        if dt_us != round(dt_us):
            raise ValueError(f"the step {dt_us} µs must be a whole number of µs for a recording's bins")
        graded = any(p.source == INPUT and p.num_message_bits for p in network.projections)
        spec = InputSpec(sensor="dvs", bin_us=round(dt_us), encoding=encoding or ("counts" if graded else "spikes"),
                         polarity="split" if grid[0] == 2 else "merge",
                         tail_steps=hops_to_output(network) if tail_steps is None else tail_steps)
    elif tail_steps is not None:
        raise ValueError("--tail-steps needs an input spec (a (C, H, W) input)")
    readout = None
    if spec is not None or classes is not None:
        names = tuple(classes) if classes is not None else tuple(str(i) for i in range(network.n_outputs))
        readout = Readout("count", classes=names)
        readout.check_outputs(network.n_outputs)
    return spec, readout


def with_classifier(network: Network, **flags) -> Network:
    """``network`` with the inferred (or flagged) input spec and readout."""
    spec, readout = infer(network, **flags)
    return dataclasses.replace(network, input_spec=spec, readout=readout)


def describe(network: Network) -> str:
    """One line per stored description, for the import report."""
    spec, readout = network.input_spec, network.readout
    lines = []
    if spec is not None:
        lines.append(f"input spec: sensor {spec.sensor}, bin {spec.bin_us} µs, encoding {spec.encoding}, "
                     f"polarity {spec.polarity}, tail {spec.tail_steps} steps")
    if readout is not None:
        lines.append(f"readout: {readout.kind}, classes {','.join(readout.classes)}")
    return "\n".join(lines) if lines else "classifier: none (no input spec or readout stored)"
