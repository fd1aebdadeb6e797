"""`nwb_export`: one NWB file per partition, from the simulation's own files."""

import json
from pathlib import Path

import dagster as dg

from l5assets import graph as G
from l5assets.layout import NWB_FILE, RESULT_FILE, network_node_files, raster_files
from l5assets.lineage.manifest import MANIFEST_NAME, read_manifest
from l5assets.rng import all_stage_seeds

from ..common import AssetStep, graph_asset, upstream_file


def _upstream_manifests(step: AssetStep) -> tuple[dict[str, str], dict]:
    """(content hash of each upstream asset's outputs, by asset; the simulation's code
    versions): what the NWB file records of its lineage. Data hashes, not manifest digests:
    a manifest names the git commit, and the file must not change with a commit that changes
    no data (the manifests keep the full records)."""
    digests, code = {}, {}
    for asset in G.node(G.NWB_EXPORT).deps:
        folder = step.storage.partition_dir(asset, step.param_set, step.seed)
        manifest = read_manifest(folder / MANIFEST_NAME)
        digests[asset] = (manifest.get("extra") or {}).get("content_hash") or str(
            manifest.get("outputs_sha256")
        )
        if asset == G.SIMULATION_OUTPUTS:
            code = {"code_versions": dict(manifest.get("code_versions") or {})}
    return digests, code


def _simulation_files(step: AssetStep) -> tuple[Path, Path | None]:
    """(the cell's spike file, the soma membrane report or None), recorded as inputs.

    The runner's `result.json` lists its files; it holds wall times, so it is read but not
    recorded as an input (as `simulation_summary` does)."""
    result = upstream_file(
        step.storage, G.SIMULATION_OUTPUTS, step.param_set, step.seed, RESULT_FILE
    )
    files = json.loads(result.read_text())["files"]
    spikes = step.inputs["output_spikes"] = result.parent / files["spikes"]
    v_report = next(
        (result.parent / r for r in files.get("reports", []) if r == "v_report.h5"), None
    )
    if v_report is not None:
        step.inputs["v_report"] = v_report
    return spikes, v_report


@graph_asset(
    G.NWB_EXPORT,
    kinds={"nwb", "hdf5"},
    description=(
        "The run as one NWB file (`run.nwb`, pynwb): the cell's spikes (`/units`), the soma "
        "voltage (`/acquisition/soma_v`, CurrentClampSeries, volts, 1/dt Hz), the input spike "
        "trains (`/processing/misc/<population>`: exc_stim, prox_inh_stim PV+, dist_inh_stim "
        "SOM+, one row per node), and the params, seed, params hash and the upstream outputs' "
        "content hashes (`notes`, JSON). Byte-identical for the same params and seed."
    ),
)
def nwb_export(step: AssetStep) -> dg.MaterializeResult:
    from l5assets.simulation.nwb import (
        MODEL_SPECIES,
        Provenance,
        build_nwbfile,
        population_sizes,
        read_run_record,
        write_nwbfile,
    )

    params = step.params
    spikes, v_report = _simulation_files(step)
    if v_report is None:
        step.context.log.warning(
            "no soma membrane report (params record_cellvars): the NWB file has no voltage"
        )
    rasters = raster_files(step.root, step.param_set, step.seed)
    step.inputs.update({f"spikes_{k}": v for k, v in rasters.items()})
    node_files = network_node_files(step.root, step.param_set, step.seed)
    step.inputs.update({f"nodes_{k}": v for k, v in node_files.items()})
    run = read_run_record(
        cell_spikes=spikes,
        input_spikes=rasters,
        input_nodes=population_sizes(node_files),
        tstop_ms=params.stop * 1000.0,
        dt_ms=params.dt,
        membrane_report=v_report,
    )
    digests, code = _upstream_manifests(step)
    prov = Provenance(
        param_set=step.param_set,
        params_hash=params.params_hash,
        seed=int(step.seed),
        params=params.raw,
        manifests=digests,
        stage_seeds=all_stage_seeds(int(step.seed)),
        code=code,
        description=str(params.raw.get("description") or ""),
    )
    nwb = build_nwbfile(run, prov, cell_name=params.biophysics, species=MODEL_SPECIES)
    write_nwbfile(nwb, step.tmp / NWB_FILE)
    counts = {"cell_spikes": int(run.cell_spikes_ms.size)}
    for pop, trains in run.inputs.items():
        counts[f"{pop}_spikes"] = len(trains)
        counts[f"{pop}_nodes"] = int(run.input_nodes[pop])
    extra = {
        "nwb_identifier": nwb.identifier,
        "soma_v_samples": int(run.soma.v_mv.size) if run.soma is not None else 0,
        "soma_v_rate_hz": 1000.0 / run.soma.dt_ms if run.soma is not None else None,
        "upstream_content_hashes": digests,
    }
    return step.result({"nwb": NWB_FILE}, counts=counts, extra=extra)
