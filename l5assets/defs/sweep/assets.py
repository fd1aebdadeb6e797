"""`cross_seed_summary`: per param set, every seed's summary side by side, mean and spread.

Partitioned by param set; depends on `simulation_summary` of every seed of that param set
(the `param_set` dimension maps one param set to all its seed partitions). It reads the
summaries that are materialized on disk with the current params (a summary made with other
params is left out and named), so it can be refreshed as a sweep fills in. Not part of
`l5assets.graph` (like the cell validations): `l5assets status` does not list it.
"""

import hashlib
import json
import re
from pathlib import Path

import dagster as dg

from l5assets import graph as G
from l5assets.layout import SUMMARY_FILE
from l5assets.lineage.manifest import MANIFEST_NAME, read_manifest, write_manifest
from l5assets.simulation import cross_seed
from l5assets.simulation.figures import render
from l5assets.storage import atomic_dir

from ..common import figure_markdown, manifest_metadata, step_started_at
from ..partitions import by_param_set, param_set_partitions, partition_of
from ..resources import StorageResource

CROSS_SEED_SUMMARY = "cross_seed_summary"
CODE_VERSION = "1"
GROUP = "sweep"
TABLE_FILE, STATS_FILE, FIGURE_FILE = "seeds.csv", "stats.json", "cross_seed.png"
_SEED_DIR = re.compile(r"seed-(\d+)$")


def seed_summaries(root: Path, param_set: str, params_hash: str) -> tuple[dict[int, Path], list]:
    """The materialized simulation summaries of a param set made with these params:
    (seed -> summary.json, the seeds whose summary was made with other params)."""
    found, stale = {}, []
    for d in sorted((root / param_set).glob("seed-*")):
        m = _SEED_DIR.match(d.name)
        f = d / G.SIMULATION_SUMMARY / SUMMARY_FILE
        manifest = f.parent / MANIFEST_NAME
        if not (m and f.is_file() and manifest.is_file()):
            continue
        if read_manifest(manifest).get("params", {}).get("hash") == params_hash:
            found[int(m.group(1))] = f
        else:
            stale.append(int(m.group(1)))
    return dict(sorted(found.items())), sorted(stale)


@dg.asset(
    name=CROSS_SEED_SUMMARY,
    partitions_def=param_set_partitions,
    group_name=GROUP,
    kinds={"csv", "json", "matplotlib"},
    code_version=CODE_VERSION,
    deps=[dg.AssetDep(G.SIMULATION_SUMMARY, partition_mapping=by_param_set)],
    description=(
        "Across the seeds of one param set: firing rate, ISI CV and dendritic Ca2+ events per "
        f"seed (`{TABLE_FILE}`), their mean, SD, min and max (`{STATS_FILE}`) and a plot "
        f"(`{FIGURE_FILE}`, inline). Reads every seed's `simulation_summary` on disk."
    ),
)
def cross_seed_summary(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    param_set, _ = partition_of(context.partition_key)
    params = storage.load_params(param_set)  # a bad params file fails before any write
    files, stale = seed_summaries(storage.root_path(), param_set, params.params_hash)
    if not files:
        raise ValueError(
            f"cross_seed_summary {param_set}: no seed has a simulation_summary yet "
            "(materialize the seeds first)"
        )
    table = cross_seed.seed_table({s: json.loads(f.read_text()) for s, f in files.items()})
    stats = cross_seed.statistics(table)
    out = storage.partition_dir(CROSS_SEED_SUMMARY, param_set)
    with atomic_dir(out) as tmp:
        table.to_csv(tmp / TABLE_FILE, index=False, float_format="%.6g", lineterminator="\n")
        (tmp / STATS_FILE).write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        fig = cross_seed.figure(table, f"{param_set}: {len(files)} seeds")
        small = render(fig, tmp / FIGURE_FILE)
        # the data, not the figure (PNG bytes may differ across matplotlib builds)
        digest = hashlib.sha256(
            (tmp / TABLE_FILE).read_bytes() + (tmp / STATS_FILE).read_bytes()
        ).hexdigest()
        names = (TABLE_FILE, STATS_FILE, FIGURE_FILE)
        staged = write_manifest(
            out,
            asset=CROSS_SEED_SUMMARY,
            params=params,
            seed=None,
            code_version=CODE_VERSION,
            outputs=[out / n for n in names],
            inputs={f"seed_{s}_summary": f for s, f in files.items()},
            extra={
                "partition_key": param_set,
                "content_hash": digest,
                "started_at": step_started_at(context),
            },
            staging_dir=tmp,
        )
        meta = manifest_metadata(staged, out / "manifest.json")
    science: dict[str, object] = {"n_seeds": len(files), "seeds": list(files)}
    for col, st in stats.items():
        science[f"{col}_mean"] = st["mean"]
        science[f"{col}_sd"] = st["sd"]
    science["plot"] = figure_markdown("cross-seed summary", small)
    return dg.MaterializeResult(
        metadata={
            **science,
            "seeds_with_other_params": stale,
            "table": dg.MetadataValue.md(table.to_markdown(index=False)),
            "path_table": dg.MetadataValue.path(str(out / TABLE_FILE)),
            "path_figure": dg.MetadataValue.path(str(out / FIGURE_FILE)),
            "content_hash": digest,
            **meta,
        },
        data_version=dg.DataVersion(digest),
    )
