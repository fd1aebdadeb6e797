"""`simulation_config`, `simulation_outputs`, `simulation_summary`: one NEURON run per partition."""

import json
import time

import dagster as dg

from l5assets.storage import atomic_dir, atomic_write_text

from ..cell.assets import mechanisms_record
from ..common import asset_result, run_logged, upstream_file
from ..inputs.assets import raster_files
from ..partitions import (
    CELL_FILES_DEP,
    PARAMS_DEP,
    SYNAPTIC_MODELS_DEP,
    by_param_set,
    partition_of,
    run_partitions,
)
from ..resources import CellModelResource, NeuronRuntime, StorageResource

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
# Outputs of the runner that hold wall times / log lines: kept, but not content-hashed.
VOLATILE_OUTPUTS = ("result.json", "log.txt")


@dg.asset(
    key="simulation_config",
    partitions_def=run_partitions,
    group_name="simulation",
    kinds={"bmtk", "json"},
    code_version="2",
    deps=[PARAMS_DEP, "network", "exc_raster", "inh_rasters"],
    description=(
        "BMTK BioNet configuration of the run: `config.json` (give it to the runner), "
        "`circuit_config.json` (network files, components), `simulation_config.json` (tstop, "
        "dt, v_init -80 mV, 34 C, the three input spike files, reports), `node_sets.json`."
    ),
)
def simulation_config(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    from l5assets.network.build import CELL_POP
    from l5assets.network.sim_config import write_sim_config

    param_set, seed = partition_of(context.partition_key)
    params = storage.load_params(param_set)
    network_dir = storage.partition_dir("network", param_set, seed)
    upstream_file(storage, "network", param_set, seed, f"{CELL_POP}_nodes.h5")
    spikes = raster_files(storage, param_set, seed)
    out = storage.partition_dir("simulation_config", param_set, seed)
    with atomic_dir(out) as tmp:
        written = write_sim_config(tmp, params, network_dir, spikes, seed=seed)
        names = [p.relative_to(tmp) for p in written.all_files()]
        files = {n.stem: out / n for n in names}
        return asset_result(
            context,
            asset="simulation_config",
            params=params,
            seed=seed,
            out_dir=out,
            tmp_dir=tmp,
            files=files,
            counts={"input_populations": len(spikes)},
            inputs={"network": network_dir, **{f"spikes_{k}": v for k, v in spikes.items()}},
            extra={"tstop_ms": params.stop * 1000.0, "dt_ms": params.dt},
            params_file=storage.params_file(param_set),
        )


@dg.asset(
    key="simulation_outputs",
    partitions_def=run_partitions,
    group_name="simulation",
    kinds={"neuron", "hdf5", "parquet"},
    code_version="2",
    deps=[
        PARAMS_DEP,  # stop, dt, record_vars, ... are read by the runner
        "simulation_config",
        dg.AssetDep("compiled_mechanisms", partition_mapping=by_param_set),
        # the runner builds the cell from the biophysics + morphology files and the synapses
        # from the synaptic model files itself
        CELL_FILES_DEP,
        SYNAPTIC_MODELS_DEP,
    ],
    description=(
        "The NEURON run, in a separate process (`python -m l5assets.simulation.runner CONFIG`): "
        "the cell's spike file (`spikes.h5`), membrane report(s) (`<var>_report.h5`), one row "
        "per synapse (`synapses.parquet`) and the runner's `result.json` (counts, wall times)."
    ),
)
def simulation_outputs(
    context: dg.AssetExecutionContext,
    storage: StorageResource,
    neuron: NeuronRuntime,
    cell_model: CellModelResource,
) -> dg.MaterializeResult:
    param_set, seed = partition_of(context.partition_key)
    params = storage.load_params(param_set)
    if neuron.engine != "neuron" or neuron.threads != 1:
        raise ValueError(
            f"NeuronRuntime(engine={neuron.engine!r}, threads={neuron.threads}): the runner "
            "drives BMTK BioNet, which supports engine 'neuron' with 1 thread only"
        )
    config = upstream_file(storage, "simulation_config", param_set, seed, CONFIG_FILE)
    mechanisms = mechanisms_record(storage, param_set)
    out = storage.partition_dir("simulation_outputs", param_set, seed)
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        cmd = [
            neuron.python_executable(), "-m", "l5assets.simulation.runner", str(config),
            "--output-dir", str(tmp), "--seed", str(seed),
            "--share-synapses" if neuron.share_synapses else "--no-share-synapses",
            "--mechanisms", str(mechanisms),
        ]
        run_logged(context, cmd, timeout_s=neuron.timeout_s, env=neuron.subprocess_env(), cwd=tmp)
        result = json.loads((tmp / "result.json").read_text())
        context.log.info(
            f"runner: {result['spike_count']} cell spikes, {result['n_synapses']} synapses, "
            f"wall seconds {result.get('wall_seconds')}"
        )
        names = sorted(
            p.relative_to(tmp) for p in tmp.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.name not in VOLATILE_OUTPUTS
        )
        wall = time.perf_counter() - t0
        files = {str(n.with_suffix("")).replace("/", "_"): out / n for n in names}
        by_pop = result.get("n_synapses_by_population", {})
        return asset_result(
            context,
            asset="simulation_outputs",
            params=params,
            seed=seed,
            out_dir=out,
            tmp_dir=tmp,
            files=files,
            counts={
                "cell_spikes": int(result["spike_count"]),
                "synapses": int(result["n_synapses"]),
                "point_processes": int(result["n_point_processes"]),
                **{f"synapses_{k}": int(v) for k, v in by_pop.items()},
            },
            inputs={"simulation_config": config, "compiled_mechanisms": mechanisms},
            extra={
                "path_result": out / "result.json",
                "tstop_ms": float(result["tstop_ms"]),
                "mechanisms_hash": result.get("mechanisms_hash", ""),
                "share_synapses": neuron.share_synapses,
                "wall_seconds": round(wall, 2),
                "run_seconds": float(result.get("wall_seconds", {}).get("run", 0.0)),
            },
            manifest_extra={
                "engine": {"engine": neuron.engine, "threads": neuron.threads,
                           "share_synapses": neuron.share_synapses},
                "wall_time_s": round(wall, 3),
            },
            params_file=storage.params_file(param_set),
            mod_dir=cell_model.mod_path(),
        )


@dg.asset(
    key="simulation_summary",
    partitions_def=run_partitions,
    group_name="simulation",
    kinds={"json", "numpy"},
    code_version="3",
    deps=[PARAMS_DEP, "simulation_outputs", "exc_raster", "inh_rasters"],  # reads stop
    description=(
        "Summary of the run: the cell's firing rate and ISI CV, input spikes per population, "
        "mean soma V, dendritic Ca2+ spikes at the hot-zone site (`summary.json`)."
    ),
)
def simulation_summary(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    from l5assets.simulation.summary import summarize

    param_set, seed = partition_of(context.partition_key)
    params = storage.load_params(param_set)
    result_file = upstream_file(storage, "simulation_outputs", param_set, seed, "result.json")
    sim_dir = result_file.parent
    result = json.loads(result_file.read_text())
    spikes_out = sim_dir / result["files"]["spikes"]
    reports = [sim_dir / r for r in result["files"].get("reports", [])]
    v_report = next((r for r in reports if r.name == "v_report.h5"), None)
    dend = sim_dir / result["files"]["dend_v"] if "dend_v" in result["files"] else None
    inputs = raster_files(storage, param_set, seed)
    summary = summarize(
        spikes_out, inputs, tstop_ms=params.stop * 1000.0, membrane_report=v_report,
        tstart_ms=params.start * 1000.0, dend_trace=dend,
    )
    summary = {"param_set": param_set, "seed": seed, **summary}
    out = storage.partition_dir("simulation_summary", param_set, seed)
    extra = {
        "firing_rate_hz": float(summary["firing_rate_hz"]),
        "isi_cv": summary["isi_cv"],  # None below 3 spikes
        "soma_v_mean_mv": summary.get("soma_v_mean_mv"),
    }
    if "dend_ca_spikes" in summary:
        ca = summary["dend_ca_spikes"]
        extra["dend_ca_spikes"] = int(ca["count"])
        extra["dend_ca_spike_rate_hz"] = float(ca["rate_hz"])
        extra["dend_ca_site_um"] = float(ca["site"]["distance_um"])
    counts = {"cell_spikes": int(summary["spike_count"])}
    for pop, rec in summary["input_spikes"].items():
        counts[f"{pop}_spikes"] = int(rec["spike_count"])
        extra[f"{pop}_rate_hz"] = float(rec["mean_rate_per_active_node_hz"])
    with atomic_dir(out) as tmp:
        atomic_write_text(tmp / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return asset_result(
            context,
            asset="simulation_summary",
            params=params,
            seed=seed,
            out_dir=out,
            tmp_dir=tmp,
            files={"summary": out / SUMMARY_FILE},
            counts=counts,
            # result.json (wall times) is no hashed output of simulation_outputs: it is
            # recorded with its own hash, linked upstream through the spike file
            inputs={"result": result_file, "output_spikes": spikes_out,
                    **({"v_report": v_report} if v_report else {}),
                    **({"dend_v": dend} if dend else {}),
                    **{f"spikes_{k}": v for k, v in inputs.items()}},
            extra=extra,
            params_file=storage.params_file(param_set),
        )
