"""`network`: the SONATA network of the cell and its virtual input populations, in BMTK's
file layout (written from arrays; `network/bmtk_builder.py` is the BMTK cross-check)."""

import dagster as dg

from l5assets import graph as G
from l5assets.layout import load_functional_groups

from ..common import AssetStep, graph_asset


@graph_asset(
    G.NETWORK,
    kinds={"hdf5", "sonata"},
    description=(
        "SONATA network in BMTK's layout (SPEC 5), the same datasets BMTK's NetworkBuilder "
        "writes: populations `biophysical` (the L5 cell), "
        "`exc_stim`, `prox_inh_stim`, `dist_inh_stim`; one excitatory edge per synapse at its "
        "functional-group location, inhibitory edges with nsyns counts placed by BMTK."
    ),
)
def network(step: AssetStep) -> dg.MaterializeResult:
    from l5assets.network.build import build_network

    fg, fg_paths = load_functional_groups(step.root, step.param_set, step.seed)
    step.inputs.update(fg_paths)
    built = build_network(step.tmp, step.params, fg, step.seed)
    return step.result(
        step.outputs_in_tmp(built.all_files()),
        counts=built.counts,
        extra={"build_seconds": round(built.build_seconds, 3)},
    )
