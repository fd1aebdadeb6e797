"""`params_file`: the param set JSON files, observed by their content hash."""

import dagster as dg

from l5assets import graph as G
from l5assets.params import list_param_sets
from l5assets.storage import file_sha256

from ..partitions import PARAM_SET_DIM, param_set_partitions
from ..resources import StorageResource


@dg.observable_source_asset(
    key=G.PARAMS_FILE,
    partitions_def=param_set_partitions,
    group_name=G.node(G.PARAMS_FILE).group,
    tags={"dagster/kind/json": ""},
    description=(
        "One JSON param set per file in the params dir; the file stem is the `param_set` "
        "partition key. The data version of each partition is the sha256 of the file's bytes, "
        "so editing a params file marks everything built from it stale."
    ),
)
def params_file(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.DataVersionsByPartition:
    """Content hash of every registered param set whose file exists."""
    registered = set(context.instance.get_dynamic_partitions(PARAM_SET_DIM))
    on_disk = set(list_param_sets(storage.params_path()))
    versions = {
        name: dg.DataVersion(file_sha256(storage.params_file(name)))
        for name in sorted(registered & on_disk)
    }
    missing = sorted(registered - on_disk)
    if missing:
        context.log.warning(f"registered param sets without a file: {missing}")
    return dg.DataVersionsByPartition(versions)
