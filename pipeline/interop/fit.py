"""Does an imported network fit the loihi backend's integer ranges? Each misfit names its layer and by how much.

* A float (NIR) network goes through :func:`pipeline.snn.convert.to_loihi`: a weight whose mantissa
  would need an exponent above Loihi's 7 is clipped (named with the factor by which the projection's
  largest weight exceeds 255 << 7), a bias too large for the 13-bit mantissa is named by
  ``to_loihi`` itself.
* A Loihi (netx) network's weights run as stored; a kernel outside the 9-bit signed mantissa range
  [-256, 255] (what Loihi's synapses hold; Lava's CPU Conv model does not clip) is named with the
  amount by which it exceeds it.
"""
from __future__ import annotations

import numpy as np

from pipeline.snn.network import Network

#: Loihi weight mantissas (mixed sign): 9-bit signed.
WEIGHT_RANGE = (-256, 255)


def loihi_misfits(network: Network) -> tuple[Network | None, list[str]]:
    """(the network as it runs on the loihi backend or None when it cannot, one line per misfit)."""
    from pipeline.snn.convert import to_loihi

    problems = []
    if network.is_float:
        try:
            loihi, report = to_loihi(network)
        except ValueError as error:
            return None, [str(error)]
        for projection, error in zip(network.projections, report.projections):
            if error.n_clipped:
                weights = np.abs(np.asarray(network.weights_of(projection), dtype=np.float64))
                scale = next(p.scale for p in report.populations if p.name == projection.target)
                factor = float(weights.max()) * scale / 2.0 ** (7 + 6) / 255
                problems.append(f"projection {projection.name!r} (into {projection.target!r}): {error.n_clipped} weights "
                                f"do not fit Loihi's 8-bit mantissa at weight_exp 7; the largest exceeds it "
                                f"{factor:.3g}x (relative weight error up to {error.max_rel_error:.3g})")
        return loihi, problems
    for projection in network.projections:
        weights = np.asarray(network.weights_of(projection))
        low, high = int(weights.min(initial=0)), int(weights.max(initial=0))
        if low < WEIGHT_RANGE[0] or high > WEIGHT_RANGE[1]:
            over = max(WEIGHT_RANGE[0] - low, high - WEIGHT_RANGE[1])
            problems.append(f"projection {projection.name!r} (into {projection.target!r}): weights {low}..{high} "
                            f"exceed Loihi's mantissa range [{WEIGHT_RANGE[0]}, {WEIGHT_RANGE[1]}] by {over}")
    return network, problems
