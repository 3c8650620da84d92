"""Core mapping of a network onto Loihi 1 chips, and per-step energy / chip-time estimates.

``map_network(network)`` places every population's compartments on neuromorphic cores under Loihi 1's
limits and returns a :class:`Mapping`; ``mapping.estimate(runtime.counters)`` turns the runtime's
per-step operation counts into an :class:`EnergyEstimate`. A network that does not fit raises
:class:`MappingError` naming the population and the limit it broke.

Placement model
  * Populations are placed in network order, each on cores of its own (as Lava/NxSDK allocate
    cores per process); compartments fill a core in index order until one limit would break:
    1,024 compartments, 4,096 input axons, 4,096 output axons, 128 KB synaptic memory.
  * Input axons of a core: the distinct source neurons (or input-port axons) with a synapse onto
    one of its compartments. Output axons of a core: per compartment, the number of distinct
    destination cores its spikes must reach.
  * Synaptic memory of a core: per input axon a synapse-list header (``list_overhead_bits``, 32),
    plus per synapse its weight bits (num_weight_bits, +1 sign bit for mixed-sign weights; 9 for a
    learning projection, whose learned weights span -256..255), 6 delay bits if the projection has
    delays, 8 + 9 bits if the learning rule uses the tags d / t, and for sparse and convolutional
    projections a 10-bit compartment index (dense lists address consecutive compartments).
  * Cores are numbered globally and fill chips of 128 in order; a chip's cores sit 4 to a tile on
    an 8 x 4 tile mesh, chips side by side along x.

Energy model (Loihi 1): dynamic per-operation energy plus static power
  Dynamic: Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro
  2018: pre-silicon (simulated, 0.75 V) energy per operation, the conformance README's values, not
  silicon measurements. 23.6 pJ per synaptic op, 120 pJ per learning (STDP) synaptic update, 81 / 52 pJ
  per active / inactive compartment update, and per spike message 1.7 pJ within the tile plus 3.0 pJ
  per east-west and 4.0 pJ per north-south tile hop (the README's 3-4 pJ per hop). A spike is one
  message per destination core; a population's spikes are costed at its neurons' mean message
  energy (counters give counts per population, not which neurons fired). Input-port spikes enter
  at tile (0, 0) of chip 0.
  Static: ``STATIC_POWER_W`` (29 mW, measured idle power of a Loihi system; source at the constant)
  per chip the mapping uses, over the interval the steps take in real-time pacing (one step per
  ``dt_ms``, as the loop runs the network).
  Not counted: per-step barrier synchronisation and the embedded x86 cores' per-step work (part of
  measured dynamic power on silicon, absent from the per-op figures); moving spikes between the host
  and the chip (input injection, output readout); inter-chip links beyond the tile-hop rates; the
  host computer; how silicon differs from the pre-silicon figures; unthrottled runs (static power is
  charged for dt per step, not for the shorter chip time).

Chip time model
  Cores work in parallel and the step ends with a barrier. Estimated step time = 5.8 µs (the
  fastest published unthrottled Loihi step, taken as the fixed per-step cost of barrier and
  management) + the busiest core's serial work + the longest spike route of the step. Core work
  uses the per-op latencies of Davies et al. 2018, Table 1: 3.5 ns per synaptic op, 6.1 ns per
  STDP update, 8.4 / 5.3 ns per active / inactive compartment update; routes 2.1 ns within a
  tile plus 4.1 / 6.5 ns per east-west / north-south hop. A population's counts are spread evenly
  over its cores. Published multi-chip workloads took 5.8-13 µs per step.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.snn.counters import (
    ACTIVE_UPDATES,
    FIELDS,
    INACTIVE_UPDATES,
    LAST,
    LEARNING_UPDATES,
    SPIKES,
    SYNAPTIC_OPS,
    TOTAL,
    Counters,
)
from pipeline.snn.mapping_pack import FAIL_INPUT_AXONS, FAIL_MEMORY, FAIL_OUTPUT_AXONS, pack_population
from pipeline.snn.network import INPUT, Dense, Network
from pipeline.snn.weights import MIXED, sign_mode

MAX_PASSES = 6

#: Static (idle) power of a Loihi 1 system in W, charged per chip used. Source: Blouw, Choo, Hunsberger,
#: Eliasmith, "Benchmarking Keyword Spotting Efficiency on Neuromorphic Hardware", NICE 2019
#: (doi:10.1145/3320288.3320304, arXiv:1812.01739), Table 1: Loihi idle 0.029 W (running 0.110 W),
#: measured through NxSDK on a Wolf Mountain board running a network of a few cores; by the paper's
#: account idle covers silicon leakage while powered and the embedded x86 cores idling. The paper does
#: not say how many chips that figure covers: charging it per chip used is this model's assumption.
STATIC_POWER_W = 0.029
DYNAMIC_SOURCE = "Davies et al. 2018 pre-silicon dynamic energy per operation (0.75 V)"
STATIC_SOURCE = "Blouw et al. 2019 measured Loihi idle power"
NOT_COUNTED = ("barrier synchronisation and embedded x86 work per step, host<->chip spike I/O, inter-chip links "
               "beyond tile hops, the host computer, silicon vs pre-silicon differences")


class MappingError(ValueError):
    """The network does not fit: names the population and the Loihi limit it broke."""


@dataclass(frozen=True)
class LoihiSpec:
    """Loihi 1 resource limits, synapse encoding, dynamic energy (pJ) and latency (ns) per operation, static
    power (W per chip)."""

    compartments_per_core: int = 1024
    input_axons_per_core: int = 4096
    output_axons_per_core: int = 4096
    synaptic_memory_bytes: int = 128 * 1024
    cores_per_chip: int = 128
    max_chips: int = 32
    cores_per_tile: int = 4
    tiles_x: int = 8
    tiles_y: int = 4
    list_overhead_bits: int = 32
    index_bits: int = 10
    delay_bits: int = 6
    learning_weight_bits: int = 9
    tag_bits: int = 8 + 9
    synaptic_op_pj: float = 23.6
    learning_update_pj: float = 120.0
    active_update_pj: float = 81.0
    inactive_update_pj: float = 52.0
    tile_spike_pj: float = 1.7
    hop_ew_pj: float = 3.0
    hop_ns_pj: float = 4.0
    synaptic_op_ns: float = 3.5
    learning_update_ns: float = 6.1
    active_update_ns: float = 8.4
    inactive_update_ns: float = 5.3
    tile_spike_ns: float = 2.1
    hop_ew_ns: float = 4.1
    hop_ns_ns: float = 6.5
    step_floor_us: float = 5.8
    static_power_w: float = STATIC_POWER_W

    def __post_init__(self) -> None:
        if self.tiles_x * self.tiles_y * self.cores_per_tile != self.cores_per_chip:
            raise ValueError(f"{self.tiles_x} x {self.tiles_y} tiles x {self.cores_per_tile} cores != "
                             f"{self.cores_per_chip} cores per chip")

    def tile_xy(self, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global tile coordinates of global core numbers (chips side by side along x)."""
        core = np.asarray(core, dtype=np.int64)
        chip, local = np.divmod(core, self.cores_per_chip)
        tile = local // self.cores_per_tile
        return chip * self.tiles_x + tile % self.tiles_x, tile // self.tiles_x

    def route(self, src_core, dst_core) -> tuple[np.ndarray, np.ndarray]:
        """(energy pJ, latency ns) of one spike message between cores (src -1: the input port)."""
        src = np.asarray(src_core, dtype=np.int64)
        sx, sy = self.tile_xy(np.maximum(src, 0))
        dx, dy = self.tile_xy(dst_core)
        hx, hy = np.abs(sx - dx), np.abs(sy - dy)
        return (self.tile_spike_pj + self.hop_ew_pj * hx + self.hop_ns_pj * hy,
                self.tile_spike_ns + self.hop_ew_ns * hx + self.hop_ns_ns * hy)


@dataclass
class CoreLoad:
    """One core: which compartments of which population, and its resource use."""

    core: int
    chip: int
    population: str
    first: int
    compartments: int
    input_axons: int
    output_axons: int
    synaptic_bits: int

    @property
    def synaptic_bytes(self) -> int:
        return (self.synaptic_bits + 7) // 8


@dataclass
class PopulationPlacement:
    """Where a population went and what one of its spikes costs."""

    name: str
    size: int
    cores: list[int]
    chips: list[int]
    max_compartments: int
    max_input_axons: int
    max_output_axons: int
    max_synaptic_bytes: int
    synapses: int
    spike_message_pj: float      # mean energy of all messages one spike of this population sends
    spike_route_ns: float        # longest route of one of its spikes
    neuron_core: np.ndarray = field(repr=False)


@dataclass
class EnergyEstimate:
    """Energy (pJ) by term and estimated chip time (µs) for a step (or a total over ``steps``).

    synaptic_pj, learning_pj, neuron_pj, spike_pj: dynamic energy from Davies et al. 2018's pre-silicon
    per-operation figures; static_pj: STATIC_POWER_W per chip over the steps at real-time pacing (one
    step per dt). What neither counts: see the module docstring (``NOT_COUNTED``).
    """

    synaptic_pj: float
    learning_pj: float
    neuron_pj: float
    spike_pj: float
    chip_time_us: float
    busiest_population: str
    steps: int = 1
    static_pj: float = 0.0

    @property
    def dynamic_pj(self) -> float:
        """The per-operation (pre-silicon) terms summed."""
        return self.synaptic_pj + self.learning_pj + self.neuron_pj + self.spike_pj

    @property
    def total_pj(self) -> float:
        """Dynamic plus static energy."""
        return self.dynamic_pj + self.static_pj

    @property
    def per_step_uj(self) -> float:
        return self.total_pj / max(self.steps, 1) * 1e-6


@dataclass
class Mapping:
    """Result of map_network: per-population placement, per-core loads, totals."""

    spec: LoihiSpec
    populations: list[PopulationPlacement]
    cores: list[CoreLoad]
    input_message_pj: float
    input_route_ns: float
    dt_ms: float = 1.0

    @property
    def n_cores(self) -> int:
        return len(self.cores)

    @property
    def n_chips(self) -> int:
        return (self.n_cores + self.spec.cores_per_chip - 1) // self.spec.cores_per_chip

    def population(self, name: str) -> PopulationPlacement:
        for placement in self.populations:
            if placement.name == name:
                return placement
        raise KeyError(f"no population {name!r} in the mapping")

    def estimate(self, counters: Counters | np.ndarray, which: int = LAST, input_spikes: int = 0,
                 steps: int | None = None) -> EnergyEstimate:
        """Energy and chip time from a runtime's counters (LAST step, or TOTAL over ``steps``).

        ``counters``: a Counters object or an int array (n_populations, len(FIELDS)) in network
        order. ``input_spikes``: input-port spikes in the same interval. For TOTAL, the chip time
        is the per-step model applied to the mean counts per step. Static energy covers ``steps``
        steps of ``dt_ms`` on every chip used.
        """
        if isinstance(counters, Counters):
            if counters.population_names != [p.name for p in self.populations]:
                raise ValueError(f"counters are for populations {counters.population_names}, the mapping for "
                                 f"{[p.name for p in self.populations]}")
            counts = counters.array[which]
            if steps is None:
                steps = counters.steps if which == TOTAL else 1
        else:
            counts = np.asarray(counters)
            steps = 1 if steps is None else steps
        if counts.shape != (len(self.populations), len(FIELDS)):
            raise ValueError(f"counts must have shape ({len(self.populations)}, {len(FIELDS)}), got {counts.shape}")
        s = self.spec
        counts = counts.astype(np.float64)
        synaptic = s.synaptic_op_pj * counts[:, SYNAPTIC_OPS].sum()
        learning = s.learning_update_pj * counts[:, LEARNING_UPDATES].sum()
        neuron = (s.active_update_pj * counts[:, ACTIVE_UPDATES].sum()
                  + s.inactive_update_pj * counts[:, INACTIVE_UPDATES].sum())
        message = np.array([p.spike_message_pj for p in self.populations])
        spike = float(message @ counts[:, SPIKES]) + self.input_message_pj * input_spikes
        n = max(int(steps), 1)
        per_core = counts / n / np.array([len(p.cores) for p in self.populations])[:, None]
        busy_ns = (s.synaptic_op_ns * per_core[:, SYNAPTIC_OPS] + s.learning_update_ns * per_core[:, LEARNING_UPDATES]
                   + s.active_update_ns * per_core[:, ACTIVE_UPDATES]
                   + s.inactive_update_ns * per_core[:, INACTIVE_UPDATES])
        busiest = int(np.argmax(busy_ns))
        routes = [p.spike_route_ns for p, c in zip(self.populations, counts[:, SPIKES]) if c > 0]
        if input_spikes:
            routes.append(self.input_route_ns)
        chip_us = s.step_floor_us + (busy_ns[busiest] + max(routes, default=0.0)) * 1e-3
        static = s.static_power_w * self.n_chips * n * self.dt_ms * 1e-3 * 1e12
        return EnergyEstimate(float(synaptic), float(learning), float(neuron), spike, float(chip_us),
                              self.populations[busiest].name, n, float(static))

    def report(self) -> str:
        """A text table: cores, chips and the binding resources per population."""
        s = self.spec
        head = (f"{'population':<16}{'neurons':>9}{'cores':>7}{'chips':>9}{'cmp/core':>10}{'in-axons':>10}"
                f"{'out-axons':>11}{'syn KB':>8}{'synapses':>11}{'pJ/spike':>10}")
        lines = [head, "-" * len(head)]
        for p in self.populations:
            chips = f"{p.chips[0]}" if len(p.chips) == 1 else f"{p.chips[0]}-{p.chips[-1]}"
            lines.append(f"{p.name:<16}{p.size:>9}{len(p.cores):>7}{chips:>9}{p.max_compartments:>10}"
                         f"{p.max_input_axons:>10}{p.max_output_axons:>11}{p.max_synaptic_bytes / 1024:>8.1f}"
                         f"{p.synapses:>11}{p.spike_message_pj:>10.1f}")
        lines.append("-" * len(head))
        lines.append(f"total: {self.n_cores} cores on {self.n_chips} chip(s) (limits per core: "
                     f"{s.compartments_per_core} compartments, {s.input_axons_per_core} input axons, "
                     f"{s.output_axons_per_core} output axons, {s.synaptic_memory_bytes // 1024} KB; "
                     f"{s.cores_per_chip} cores/chip, {s.max_chips} chips)")
        lines.append(f"energy: pJ/spike above and per-op energy are {DYNAMIC_SOURCE}; static "
                     f"{s.static_power_w * 1e3:g} mW per chip x {self.n_chips} = {self.static_power_w() * 1e3:g} mW "
                     f"({STATIC_SOURCE}); not counted: {NOT_COUNTED}")
        return "\n".join(lines)

    def static_power_w(self) -> float:
        """Static power of the chips this mapping uses, W."""
        return self.spec.static_power_w * self.n_chips


# ---------------------------------------------------------------------- synapse encoding

def _synapse_bits(projection, spec: LoihiSpec) -> tuple[int, bool]:
    """(bits per synapse, dense list format) for a projection."""
    rule = projection.learning
    if rule is not None:
        bits = spec.learning_weight_bits
        if getattr(rule, "uses_tags", lambda: False)():
            bits += spec.tag_bits
    else:
        weights = np.asarray(Network.weights_of(projection))
        bits = int(projection.num_weight_bits) + (1 if weights.size and sign_mode(np.round(weights)) == MIXED else 0)
    if projection.max_delay() > 0:
        bits += spec.delay_bits
    dense = isinstance(projection, Dense)
    return bits + (0 if dense else spec.index_bits), dense


@dataclass
class _Incoming:
    """Fan-in of one population: dense sources (all axons, fixed bits per neuron) + sparse rows."""

    dense_axons: int
    dense_bits: int
    row_ptr: np.ndarray
    row_axon: np.ndarray
    row_bits: np.ndarray
    n_axon_ids: int
    synapses: int


def _incoming(network: Network, target: str, spec: LoihiSpec, source_offset: dict[str, int], n_axon_ids: int,
              csr_cache: dict) -> _Incoming:
    n_post = network.population(target).size
    dense_sources: dict[str, int] = {}
    dense_bits = 0
    synapses = 0
    posts, axons, bits = [], [], []
    for projection in network.projections:
        if projection.target != target:
            continue
        n_pre = network.source_size(projection.source)
        per_synapse, dense = _synapse_bits(projection, spec)
        if dense:
            dense_sources[projection.source] = n_pre
            dense_bits += per_synapse * n_pre
            synapses += n_pre * n_post
            continue
        indptr, post, _, _ = csr_cache.setdefault(projection.name, projection.synapses(n_pre, n_post))
        pre = np.repeat(np.arange(n_pre, dtype=np.int64), np.diff(indptr))
        posts.append(post.astype(np.int64))
        axons.append(source_offset[projection.source] + pre)
        bits.append(np.full(post.size, per_synapse, dtype=np.int64))
        synapses += post.size
    post = np.concatenate(posts) if posts else np.zeros(0, np.int64)
    axon = np.concatenate(axons) if axons else np.zeros(0, np.int64)
    bit = np.concatenate(bits) if bits else np.zeros(0, np.int64)
    # axons of dense sources are already present on every core: do not count them again
    for source in dense_sources:
        lo = source_offset[source]
        axon[(axon >= lo) & (axon < lo + network.source_size(source))] = -1
    order = np.argsort(post, kind="stable")
    row_ptr = np.zeros(n_post + 1, dtype=np.int64)
    np.cumsum(np.bincount(post, minlength=n_post), out=row_ptr[1:])
    return _Incoming(sum(dense_sources.values()), dense_bits, row_ptr, axon[order], bit[order],
                     n_axon_ids, synapses)


def _fanout(network: Network, source: str, neuron_core: dict[str, np.ndarray], spec: LoihiSpec,
            src_core: np.ndarray, csr_cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per source neuron: output axons (distinct destination cores), message energy pJ, longest route ns."""
    n_src = network.source_size(source)
    pairs = []
    for projection in network.projections:
        if projection.source != source or projection.target not in neuron_core:
            continue
        n_post = network.source_size(projection.target)
        cores = neuron_core[projection.target]
        if isinstance(projection, Dense):
            targets = np.unique(cores)
            pre = np.repeat(np.arange(n_src, dtype=np.int64), targets.size)
            pairs.append(np.stack([pre, np.tile(targets, n_src)]))
        else:
            indptr, post, _, _ = csr_cache.setdefault(projection.name, projection.synapses(n_src, n_post))
            pre = np.repeat(np.arange(n_src, dtype=np.int64), np.diff(indptr))
            pairs.append(np.stack([pre, cores[post]]))
    out = np.zeros(n_src, dtype=np.int64)
    energy = np.zeros(n_src)
    latency = np.zeros(n_src)
    if not pairs:
        return out, energy, latency
    stride = spec.cores_per_chip * spec.max_chips + 1
    keys = np.unique(np.concatenate([p[0] * stride + p[1] for p in pairs]))
    pre, dst = np.divmod(keys, stride)
    pj, ns = spec.route(src_core[pre], dst)
    np.add.at(out, pre, 1)
    np.add.at(energy, pre, pj)
    np.maximum.at(latency, pre, ns)
    return out, energy, latency


_LIMIT_TEXT = {
    FAIL_INPUT_AXONS: ("input axons", "input_axons_per_core"),
    FAIL_MEMORY: ("bits of synaptic memory", "synaptic_memory_bytes"),
    FAIL_OUTPUT_AXONS: ("output axons", "output_axons_per_core"),
}


def map_network(network: Network, spec: LoihiSpec = LoihiSpec()) -> Mapping:
    """Place ``network`` on Loihi 1 cores (see the module docstring); raises MappingError if it does not fit."""
    names = [p.name for p in network.populations]
    source_offset, offset = {INPUT: 0}, int(network.n_inputs)
    for population in network.populations:
        source_offset[population.name] = offset
        offset += population.size
    csr_cache: dict = {}
    incoming = {name: _incoming(network, name, spec, source_offset, offset, csr_cache) for name in names}
    out_axons = {name: np.zeros(network.population(name).size, dtype=np.int64) for name in names}
    memory_bits = spec.synaptic_memory_bytes * 8
    previous = None
    for _ in range(MAX_PASSES):
        neuron_core, stats, next_core = {}, {}, 0
        for name in names:
            size = network.population(name).size
            inc = incoming[name]
            core_of = np.zeros(size, dtype=np.int64)
            core_stats = np.zeros((size, 4), dtype=np.int64)
            mark = np.full(max(inc.n_axon_ids, 1), -1, dtype=np.int64)
            n_cores = pack_population(size, spec.compartments_per_core, spec.input_axons_per_core, memory_bits,
                                      spec.output_axons_per_core, inc.dense_axons, inc.dense_bits,
                                      spec.list_overhead_bits, inc.row_ptr, inc.row_axon, inc.row_bits,
                                      out_axons[name], mark, core_of, core_stats)
            if n_cores < 0:
                _raise_single(network, name, spec, -n_cores, inc, out_axons[name])
            neuron_core[name] = core_of + next_core
            stats[name] = core_stats[:n_cores]
            next_core += n_cores
            if next_core > spec.cores_per_chip * spec.max_chips:
                raise MappingError(f"population {name!r} needs cores up to #{next_core}, beyond {spec.max_chips} "
                                   f"chips x {spec.cores_per_chip} cores (limit max_chips={spec.max_chips})")
        fanout = {}
        for name in names:
            fanout[name] = _fanout(network, name, neuron_core, spec, neuron_core[name], csr_cache)
        placement = tuple(tuple(neuron_core[n].tolist()) for n in names)
        new_out = {name: fanout[name][0] for name in names}
        if placement == previous and all(np.array_equal(new_out[n], out_axons[n]) for n in names):
            break
        previous, out_axons = placement, new_out
    else:
        raise MappingError(f"placement did not settle in {MAX_PASSES} passes (output-axon limits keep moving "
                           f"populations {names})")
    return _result(network, spec, names, neuron_core, stats, fanout, incoming, csr_cache)


def _raise_single(network, name, spec, code, inc, out_axons):
    reason, neuron = divmod(code, 2 ** 40)
    what, limit_field = _LIMIT_TEXT[reason]
    lo, hi = inc.row_ptr[neuron], inc.row_ptr[neuron + 1]
    if reason == FAIL_INPUT_AXONS:
        need = inc.dense_axons + np.unique(inc.row_axon[lo:hi][inc.row_axon[lo:hi] >= 0]).size
        limit = spec.input_axons_per_core
    elif reason == FAIL_MEMORY:
        axons = inc.dense_axons + np.unique(inc.row_axon[lo:hi][inc.row_axon[lo:hi] >= 0]).size
        need = axons * spec.list_overhead_bits + inc.dense_bits + int(inc.row_bits[lo:hi].sum())
        limit = spec.synaptic_memory_bytes * 8
    else:
        need = int(out_axons[neuron])
        limit = spec.output_axons_per_core
    raise MappingError(f"population {name!r} does not fit a Loihi core: compartment {neuron} alone needs {need} "
                       f"{what}, the limit is {limit} per core ({limit_field})")


def _result(network, spec, names, neuron_core, stats, fanout, incoming, csr_cache) -> Mapping:
    cores, placements = [], []
    for name in names:
        core_ids = np.unique(neuron_core[name])
        first = np.searchsorted(neuron_core[name], core_ids)
        for core, start, row in zip(core_ids.tolist(), first.tolist(), stats[name].tolist()):
            cores.append(CoreLoad(core, core // spec.cores_per_chip, name, start, row[0], row[1], row[3], row[2]))
        out, energy, latency = fanout[name]
        st = stats[name]
        placements.append(PopulationPlacement(
            name=name, size=network.population(name).size, cores=core_ids.tolist(),
            chips=sorted({c // spec.cores_per_chip for c in core_ids.tolist()}),
            max_compartments=int(st[:, 0].max()), max_input_axons=int(st[:, 1].max()),
            max_output_axons=int(st[:, 3].max()), max_synaptic_bytes=int((st[:, 2].max() + 7) // 8),
            synapses=incoming[name].synapses, spike_message_pj=float(energy.mean()),
            spike_route_ns=float(latency.max()), neuron_core=neuron_core[name]))
    src = np.full(network.n_inputs, -1, dtype=np.int64)
    _, in_energy, in_latency = _fanout(network, INPUT, neuron_core, spec, src, csr_cache) if network.n_inputs else \
        (None, np.zeros(1), np.zeros(1))
    return Mapping(spec, placements, cores, float(in_energy.mean()) if in_energy.size else 0.0,
                   float(in_latency.max()) if in_latency.size else 0.0, float(network.dt_ms))


def map_runtime(runtime, spec: LoihiSpec = LoihiSpec()) -> Mapping:
    """The mapping of a built runtime's network (the loihi backend's network, unchanged)."""
    return map_network(runtime.network, spec)


def estimate_runtime(runtime, mapping: Mapping, total: bool = False) -> EnergyEstimate:
    """Energy / chip time of a runtime's last step (or of everything since build/reset if ``total``).

    Input-port spikes are not in the runtime's counters: for the last step they are read from its
    input group; the total leaves their message energy out.
    """
    if total:
        return mapping.estimate(runtime.counters, TOTAL)
    return mapping.estimate(runtime.counters, LAST, input_spikes=runtime.input_spikes)


def _main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.snn.mapping NETWORK.npz [--chips N] [--json]``: print the placement."""
    import argparse
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m pipeline.snn.mapping",
                                     description="Place a saved spikeloop network on Loihi 1 cores and chips.")
    parser.add_argument("network", help="network .npz written by Network.save")
    parser.add_argument("--chips", type=int, default=LoihiSpec.max_chips, help="chips available (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the placement as JSON")
    args = parser.parse_args(argv)
    try:
        mapping = map_network(Network.load(args.network), LoihiSpec(max_chips=args.chips))
    except (OSError, ValueError) as error:
        print(f"{args.network}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"cores": mapping.n_cores, "chips": mapping.n_chips,
                          "static_power_mw": mapping.static_power_w() * 1e3, "static_power_source": STATIC_SOURCE,
                          "spike_energy_source": DYNAMIC_SOURCE, "energy_not_counted": NOT_COUNTED, "populations": [
            {"name": p.name, "neurons": p.size, "cores": len(p.cores), "chips": p.chips,
             "max_compartments_per_core": p.max_compartments, "max_input_axons_per_core": p.max_input_axons,
             "max_output_axons_per_core": p.max_output_axons, "max_synaptic_bytes_per_core": p.max_synaptic_bytes,
             "synapses": p.synapses, "spike_message_pj": p.spike_message_pj} for p in mapping.populations]}))
    else:
        print(mapping.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
