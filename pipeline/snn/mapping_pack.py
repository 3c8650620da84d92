"""numba kernel of the core mapper: greedy packing of one population's compartments onto cores."""
from __future__ import annotations

from numba import njit

#: Reasons a single compartment cannot be placed (returned as negative codes by pack_population).
FAIL_INPUT_AXONS = 1
FAIL_MEMORY = 2
FAIL_OUTPUT_AXONS = 3


@njit(cache=True)
def pack_population(n_neurons, max_compartments, max_input_axons, max_memory_bits, max_output_axons,
                    dense_axons, dense_bits_per_neuron, list_overhead_bits, row_ptr, row_axon, row_bits,
                    out_axons, axon_mark, core_of, core_stats):
    """Assign neurons 0..n-1 in order to cores, opening a new core when a limit would be exceeded.

    Per core: compartments <= max_compartments; distinct input axons (``dense_axons`` from dense
    sources, always present, plus the distinct ``row_axon`` ids of the neurons' sparse synapses)
    <= max_input_axons; synaptic memory bits (axons * list_overhead_bits + per-neuron dense bits
    + sparse synapse bits) <= max_memory_bits; output axons (sum of ``out_axons``) <=
    max_output_axons. ``axon_mark`` (n_axon_ids,) int64 scratch must be -1. Writes ``core_of``
    (n,) and ``core_stats`` (n, 4): compartments, input axons, memory bits, output axons.
    Returns the number of cores, or -(reason * 2**40 + neuron) when one compartment alone breaks
    a limit (reason FAIL_*).
    """
    core = 0
    count = 0
    axons = dense_axons
    bits = dense_axons * list_overhead_bits
    outs = 0
    for i in range(n_neurons):
        for attempt in range(2):
            new_axons = 0
            add_bits = dense_bits_per_neuron
            for q in range(row_ptr[i], row_ptr[i + 1]):
                a = row_axon[q]
                add_bits += row_bits[q]
                if a >= 0 and axon_mark[a] != core:
                    axon_mark[a] = core
                    new_axons += 1
            add_bits += new_axons * list_overhead_bits
            fits = (count + 1 <= max_compartments and axons + new_axons <= max_input_axons
                    and bits + add_bits <= max_memory_bits and outs + out_axons[i] <= max_output_axons)
            if fits:
                break
            if count == 0:
                if axons + new_axons > max_input_axons:
                    return -(FAIL_INPUT_AXONS * 2 ** 40 + i)
                if bits + add_bits > max_memory_bits:
                    return -(FAIL_MEMORY * 2 ** 40 + i)
                return -(FAIL_OUTPUT_AXONS * 2 ** 40 + i)
            core_stats[core, 0] = count
            core_stats[core, 1] = axons
            core_stats[core, 2] = bits
            core_stats[core, 3] = outs
            core += 1
            count = 0
            axons = dense_axons
            bits = dense_axons * list_overhead_bits
            outs = 0
        count += 1
        axons += new_axons
        bits += add_bits
        outs += out_axons[i]
        core_of[i] = core
    core_stats[core, 0] = count
    core_stats[core, 1] = axons
    core_stats[core, 2] = bits
    core_stats[core, 3] = outs
    return core + 1
