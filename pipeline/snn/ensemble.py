"""Several trained classifiers as one network: the members side by side on the same input, their votes summed.

:func:`ensemble` turns K classifier networks (same input port, input spec, classes and step) into one
:class:`~pipeline.snn.network.Network` that runs on either backend and in every launch file:

* every population of member k except its output is kept as ``m{k}_{name}`` with its own neuron
  parameters; every projection is kept as ``m{k}_{name}`` with its own weights, weight exponent, weight
  precision and delays, reading the shared input port or the renamed populations;
* the members' output populations become one population ``output`` of K x n_outputs neurons (member k's
  outputs at k * n_outputs ...; neuron parameters per neuron), so the projections into it become
  :class:`~pipeline.snn.network.Sparse` projections onto member k's slice;
* the readout is ``"vote"``: member k's output neuron i votes as its own readout did (a "count" readout:
  one vote per spike for class i; a "vote" readout: its own row of votes), so the class with the most votes
  summed over the members wins (ties to the lower class index).

No population or synapse is shared between members, so each member's neurons step exactly as they do
alone, bit for bit (``tests/test_ensemble.py`` runs each member alone and the ensemble on real clips); the
cost per step is the members' costs added.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import numpy as np

from pipeline.snn.model import Readout
from pipeline.snn.network import INPUT, Dense, Network, Population, Projection, Sparse

#: The name of the ensemble's output population (every member's outputs, member by member).
OUTPUT = "output"


def _member_name(k: int, name: str) -> str:
    return name if name == INPUT else f"m{k}_{name}"


def _check_members(members: Sequence[Network]) -> None:
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    first = members[0]
    if first.readout is None or first.input_spec is None:
        raise ValueError("member 0: not a classifier (no readout or input spec)")
    spec = first.input_spec.to_arrays()
    for k, member in enumerate(members):
        where = f"member {k}"
        if member.readout is None or member.input_spec is None:
            raise ValueError(f"{where}: not a classifier (no readout or input spec)")
        if member.readout.kind not in ("count", "vote"):
            raise ValueError(f"{where}: readout {member.readout.kind!r} cannot be summed (count or vote readouts)")
        if member.readout.classes != first.readout.classes:
            raise ValueError(f"{where}: classes {list(member.readout.classes)} differ from member 0's "
                             f"{list(first.readout.classes)}")
        other = member.input_spec.to_arrays()
        if other.keys() != spec.keys() or any(not np.array_equal(other[key], spec[key]) for key in spec):
            raise ValueError(f"{where}: input spec differs from member 0's (the members must hear the same input)")
        for field in ("n_inputs", "dt_ms", "input_shape", "layout"):
            if getattr(member, field) != getattr(first, field):
                raise ValueError(f"{where}: {field} {getattr(member, field)!r} differs from member 0's "
                                 f"{getattr(first, field)!r}")
        if member.is_float != first.is_float:
            raise ValueError(f"{where}: mixes LoihiLIF and FloatLIF members")
        if OUTPUT != member.output_name and any(p.name == OUTPUT for p in member.populations):
            raise ValueError(f"{where}: population {OUTPUT!r} is not its output ({member.output_name!r}); member() "
                             f"gives a member's outputs back under that name: rename it")
        for projection in member.projections:
            if projection.source == member.output_name:
                raise ValueError(f"{where}: projection {projection.name!r} reads the output population (an "
                                 f"ensemble sums outputs; recurrence or feedback from them is not supported)")
            if projection.learning is not None:
                raise ValueError(f"{where}: projection {projection.name!r} has a learning rule (an ensemble is of "
                                 f"trained, fixed networks)")


def _votes(member: Network) -> np.ndarray:
    """(n_outputs, n_classes) votes of a member's output neurons under its own readout."""
    readout = member.readout
    if readout.kind == "vote":
        return np.asarray(readout.votes, dtype=np.float64)
    return np.eye(len(readout.classes))


def _output_population(members: Sequence[Network]) -> Population:
    """The members' output populations as one, neuron parameters concatenated per neuron."""
    outputs = [member.population(member.output_name) for member in members]
    neuron_class = type(outputs[0].neuron)
    fields = [f.name for f in dataclasses.fields(neuron_class)]
    arrays = [output.neuron.arrays(f"population {output.name!r}", output.size) for output in outputs]
    neuron = neuron_class(**{name: np.concatenate([a[name] for a in arrays]) for name in fields})
    return Population(OUTPUT, sum(output.size for output in outputs), neuron,
                      probe_u=any(o.probe_u for o in outputs), probe_v=any(o.probe_v for o in outputs))


def _into_output(projection: Projection, name: str, source: str, n_pre: int, n_post: int, offset: int) -> Sparse:
    """``projection`` (onto a member's output of ``n_post`` neurons) as a Sparse projection onto its slice
    of the ensemble's output, starting at neuron ``offset``; weights, exponent, precision and delays kept."""
    indptr, post, weights, delays = projection.synapses(n_pre, n_post)
    delay = int(projection.delay) if np.ndim(projection.delay) == 0 else delays
    return Sparse(name=name, source=source, target=OUTPUT, indptr=indptr, indices=post + offset, weights=weights,
                  weight_exp=projection.weight_exp, num_weight_bits=projection.num_weight_bits, delay=delay,
                  prepare_weights=projection.prepare_weights, num_message_bits=projection.num_message_bits)


def ensemble(members: Sequence[Network]) -> Network:
    """One network holding every member classifier side by side; see the module docstring. ValueError
    (naming the member) when the members are not classifiers of the same input and classes."""
    _check_members(members)
    first = members[0]
    populations: list[Population] = []
    projections: list[Projection] = []
    offset = 0
    for k, member in enumerate(members):
        out_name = member.output_name
        rename = {p.name: (OUTPUT if p.name == out_name else _member_name(k, p.name)) for p in member.populations}
        rename[INPUT] = INPUT
        populations += [dataclasses.replace(p, name=rename[p.name]) for p in member.populations if p.name != out_name]
        for projection in member.projections:
            name, source = _member_name(k, projection.name), rename[projection.source]
            if projection.target == out_name:
                projections.append(_into_output(projection, name, source, member.source_size(projection.source),
                                                member.n_outputs, offset))
            else:
                projections.append(dataclasses.replace(projection, name=name, source=source,
                                                       target=rename[projection.target]))
        offset += member.n_outputs
    populations.append(_output_population(members))
    readout = Readout(kind="vote", classes=first.readout.classes,
                      votes=np.concatenate([_votes(member) for member in members]))
    return Network(n_inputs=first.n_inputs, populations=populations, projections=projections, output=OUTPUT,
                   dt_ms=first.dt_ms, input_shape=first.input_shape, layout=first.layout,
                   input_spec=first.input_spec, readout=readout)


def member_indices(network: Network) -> list[int]:
    """The member numbers k of a network written by :func:`ensemble` (those with projections named ``m{k}_*``
    into its output), increasing; [] for a network without a vote readout."""
    if network.readout is None or network.readout.kind != "vote":
        return []
    return sorted({int(m.group(1)) for p in network.projections if p.target == network.output_name
                   for m in [re.match(r"m(\d+)_", p.name)] if m})


def member(network: Network, k: int) -> Network:
    """Member ``k`` of a network written by :func:`ensemble`, as the standalone classifier it was: its
    populations and projections under their own names, its slice of the output population (Dense
    projections into it again where they reach every output of the slice with one scalar delay, else Sparse
    ones) and its readout (count when its votes are one per class). ValueError when the network holds no member
    ``k``, or when another projection reaches member ``k``'s outputs."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"ensemble member: k must be an integer, got {k!r}")
    prefix = f"m{k}_"
    into_output = [p for p in network.projections if p.name.startswith(prefix) and p.target == network.output_name]
    if not into_output or network.readout is None or network.readout.kind != "vote":
        held = member_indices(network)
        holds = f"it holds members {', '.join(map(str, held))}" if held else "it is not an ensemble"
        raise ValueError(f"the network holds no ensemble member {k} ({holds}; expected projections named {prefix}* "
                         f"into {network.output_name!r} and a vote readout)")
    n_out = network.n_outputs
    targets = np.concatenate([p.synapses(network.source_size(p.source), n_out)[1] for p in into_output])
    if not targets.size:
        raise ValueError(f"ensemble member {k}: its projections into {network.output_name!r} have no synapses")
    lo, hi = int(targets.min()), int(targets.max()) + 1
    own = slice(lo, hi)
    for other in network.projections:
        if not other.name.startswith(prefix) and other.target == network.output_name:
            post = other.synapses(network.source_size(other.source), n_out)[1]
            if np.any((post >= lo) & (post < hi)):
                raise ValueError(f"ensemble member {k}: its outputs {lo}..{hi - 1} are also targets of projection "
                                 f"{other.name!r} (not a network written by ensemble())")
    output = network.population(network.output_name)
    arrays = output.neuron.arrays(f"population {output.name!r}", output.size)
    neuron = type(output.neuron)(**{name: value[own] for name, value in arrays.items()})
    name = lambda text: text[len(prefix):] if text.startswith(prefix) else text  # noqa: E731
    populations = [dataclasses.replace(p, name=name(p.name)) for p in network.populations if p.name.startswith(prefix)]
    populations.append(dataclasses.replace(output, size=hi - lo, neuron=neuron))
    projections = []
    for projection in network.projections:
        if not projection.name.startswith(prefix):
            continue
        if projection.target != network.output_name:
            projections.append(dataclasses.replace(projection, name=name(projection.name),
                                                   source=name(projection.source), target=name(projection.target)))
            continue
        n_pre = network.source_size(projection.source)
        indptr, post, weights, delays = projection.synapses(n_pre, n_out)
        fields = dict(name=name(projection.name), source=name(projection.source), target=output.name,
                      weight_exp=projection.weight_exp, num_weight_bits=projection.num_weight_bits,
                      prepare_weights=projection.prepare_weights, num_message_bits=projection.num_message_bits)
        scalar_delay = np.ndim(projection.delay) == 0
        if scalar_delay and post.size == n_pre * (hi - lo):  # every pre to every output of the slice: it was Dense
            projections.append(Dense(weights=projection.dense_weights(n_pre, n_out)[own], delay=int(projection.delay),
                                     **fields))
        else:  # onto part of the slice (a member that was itself an ensemble) or per-synapse delays: stays Sparse
            projections.append(Sparse(indptr=indptr, indices=post - lo, weights=weights,
                                      delay=int(projection.delay) if scalar_delay else delays, **fields))
    votes = network.readout.votes[own]
    readout = Readout(kind="count", classes=network.readout.classes) if np.array_equal(votes, np.eye(len(votes))) \
        else Readout(kind="vote", classes=network.readout.classes, votes=votes)
    return Network(n_inputs=network.n_inputs, populations=populations, projections=projections,
                   output=output.name, dt_ms=network.dt_ms, input_shape=network.input_shape, layout=network.layout,
                   input_spec=network.input_spec, readout=readout)
