"""`network`: the SONATA network of the cell and its virtual input populations, via BMTK."""

import dagster as dg

from l5assets.storage import atomic_dir

from ..common import asset_result
from ..inputs.assets import load_functional_groups
from ..partitions import PARAMS_DEP, SYNAPTIC_MODELS_DEP, partition_of, run_partitions
from ..resources import StorageResource


@dg.asset(
    key="network",
    partitions_def=run_partitions,
    group_name="network",
    kinds={"bmtk", "hdf5", "sonata"},
    code_version="1",
    deps=[PARAMS_DEP, SYNAPTIC_MODELS_DEP, "functional_groups"],
    description=(
        "SONATA network written with BMTK (SPEC 5): populations `biophysical` (the L5 cell), "
        "`exc_stim`, `prox_inh_stim`, `dist_inh_stim`; one excitatory edge per synapse at its "
        "functional-group location, inhibitory edges with nsyns counts placed by BMTK."
    ),
)
def network(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    from l5assets.network.build import build_network

    param_set, seed = partition_of(context.partition_key)
    params = storage.load_params(param_set)
    fg, fg_paths = load_functional_groups(storage, param_set, seed)
    out = storage.partition_dir("network", param_set, seed)
    with atomic_dir(out) as tmp:
        built = build_network(tmp, params, fg, seed)
        names = [p.relative_to(tmp) for p in built.all_files()]
        files = {str(n.with_suffix("")).replace("/", "_"): out / n for n in names}
        return asset_result(
            context,
            asset="network",
            params=params,
            seed=seed,
            out_dir=out,
            tmp_dir=tmp,
            files=files,
            counts=built.counts,
            inputs=fg_paths,
            extra={"build_seconds": round(built.build_seconds, 3)},
            params_file=storage.params_file(param_set),
        )
