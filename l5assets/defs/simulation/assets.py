"""`simulation_config`, `simulation_outputs`, `simulation_summary`: one NEURON run per partition."""

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg

from l5assets import graph as G
from l5assets.layout import (
    CONFIG_FILE,
    RESULT_FILE,
    SUMMARY_FIGURE,
    SUMMARY_FILE,
    VOLATILE_OUTPUTS,
    mechanisms_record,
    raster_files,
)
from l5assets.network.build import CELL_POP
from l5assets.storage import atomic_write_text

from ..common import AssetStep, graph_asset, run_logged, upstream_file
from ..instance import NEURON_POOL
from ..resources import NeuronRuntime
from ..slurm import SlurmJob, SlurmResource, job_metadata


@graph_asset(
    G.SIMULATION_CONFIG,
    kinds={"bmtk", "json"},
    description=(
        "BMTK BioNet configuration of the run: `config.json` (give it to the runner), "
        "`circuit_config.json` (network files, components), `simulation_config.json` (tstop, "
        "dt, v_init -80 mV, 34 C, the three input spike files, reports), `node_sets.json`."
    ),
)
def simulation_config(step: AssetStep) -> dg.MaterializeResult:
    from l5assets.network.sim_config import write_sim_config

    params, seed = step.params, step.seed
    network_dir = step.read(G.NETWORK, f"{CELL_POP}_nodes.h5").parent
    step.inputs[G.NETWORK] = network_dir  # the whole folder is the input
    spikes = raster_files(step.root, step.param_set, seed)
    step.inputs.update({f"spikes_{k}": v for k, v in spikes.items()})
    written = write_sim_config(step.tmp, params, network_dir, spikes, seed=seed)
    return step.result(
        step.outputs_in_tmp(written.all_files()),
        counts={"input_populations": len(spikes)},
        extra={"tstop_ms": params.stop * 1000.0, "dt_ms": params.dt},
    )


def _runner_command(step: AssetStep, neuron: NeuronRuntime, config: Path, mech: Path) -> list:
    return [
        neuron.python_executable(),
        "-m",
        "l5assets.simulation.runner",
        str(config),
        "--output-dir",
        str(step.tmp),
        "--seed",
        str(step.seed),
        "--share-synapses" if neuron.share_synapses else "--no-share-synapses",
        "--mechanisms",
        str(mech),
    ]


def _run_simulation(
    step: AssetStep, neuron: NeuronRuntime, slurm: SlurmResource, cmd: list
) -> SlurmJob | None:
    """Run the runner command: in a subprocess here, or as a SLURM job through Pipes (the job
    runs the same command under `l5assets.simulation.pipes_report`); the job, or None."""
    if not slurm.enabled:
        run_logged(
            step.context,
            cmd,
            timeout_s=neuron.timeout_s,
            env=neuron.subprocess_env(),
            cwd=step.tmp,
        )
        return None
    job_cmd = [cmd[0], "-m", "l5assets.simulation.pipes_report", *cmd[3:]]
    job = slurm.run(
        step.context,
        job_cmd,
        cwd=step.tmp,
        env=neuron.subprocess_env(),
        storage_root=step.root,
        timeout_s=neuron.timeout_s,
    )
    step.context.log.info(f"SLURM job {job.job_id} {job.state} on {job.node or '?'}")
    return job


@graph_asset(
    G.SIMULATION_OUTPUTS,
    kinds={"neuron", "hdf5", "parquet"},
    description=(
        "The NEURON run, in a separate process (`python -m l5assets.simulation.runner CONFIG "
        "--engine E`; engine `coreneuron`, the project's driver in CoreNEURON, unless "
        "L5ASSETS_ENGINE says `neuron` or `bionet`), here or as a SLURM job through Dagster "
        "Pipes (the `slurm` resource, L5ASSETS_SIMULATION_EXECUTOR=slurm; job id in "
        "`slurm_job_id`): "
        "the cell's spike file (`spikes.h5`), membrane report(s) (`<var>_report.h5`), one row "
        "per synapse (`synapses.parquet`) and the runner's `result.json` (counts, wall times)."
    ),
    resources={"cell_model", "neuron", "slurm"},
    pool=NEURON_POOL,
)
def simulation_outputs(step: AssetStep) -> dg.MaterializeResult:
    neuron = step.resources.neuron
    engine = neuron.resolved_engine()
    if neuron.threads != 1:
        raise ValueError(
            f"NeuronRuntime.threads: {neuron.threads}, allowed: 1 (threads would change the "
            "results; run several seeds at once instead)"
        )
    t0 = time.perf_counter()
    config = step.read(G.SIMULATION_CONFIG, CONFIG_FILE)
    mechanisms = mechanisms_record(step.root, step.param_set)
    step.inputs[G.COMPILED_MECHANISMS] = mechanisms
    cmd = _runner_command(step, neuron, config, mechanisms) + ["--engine", engine]
    job = _run_simulation(step, neuron, step.resources.slurm, cmd)
    result = json.loads((step.tmp / RESULT_FILE).read_text())
    step.context.log.info(
        f"runner: {result['spike_count']} cell spikes, {result['n_synapses']} synapses, "
        f"wall seconds {result.get('wall_seconds')}"
    )
    outputs = sorted(
        p
        for p in step.tmp.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in VOLATILE_OUTPUTS
    )
    wall = time.perf_counter() - t0
    by_pop = result.get("n_synapses_by_population", {})
    return step.result(
        step.outputs_in_tmp(outputs),
        counts={
            "cell_spikes": int(result["spike_count"]),
            "synapses": int(result["n_synapses"]),
            "point_processes": int(result["n_point_processes"]),
            **{f"synapses_{k}": int(v) for k, v in by_pop.items()},
        },
        extra={
            "path_result": step.out / RESULT_FILE,
            "tstop_ms": float(result["tstop_ms"]),
            "mechanisms_hash": result.get("mechanisms_hash", ""),
            "share_synapses": neuron.share_synapses,
            "engine": engine,
            "wall_seconds": round(wall, 2),
            "run_seconds": float(result.get("wall_seconds", {}).get("run", 0.0)),
            **job_metadata(job),
        },
        manifest_extra={
            "engine": {
                "engine": engine,
                "threads": neuron.threads,
                "share_synapses": neuron.share_synapses,
            },
            "wall_time_s": round(wall, 3),
        },
    )


def _summary_metadata(summary: dict[str, Any]) -> tuple[dict[str, int], dict[str, Any]]:
    """(counts, extra) of the summary's materialization metadata."""
    extra: dict[str, Any] = {
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
    return counts, extra


@graph_asset(
    G.SIMULATION_SUMMARY,
    kinds={"json", "numpy"},
    description=(
        "Summary of the run: the cell's firing rate and ISI CV, input spikes per population, "
        "mean soma V, dendritic Ca2+ spikes at the hot-zone site (`summary.json`), and its "
        "figure (`summary.png`, inline in the materialization): input raster sample and "
        "population rates, soma voltage with the spikes, hot-zone voltage with its Ca2+ spikes."
    ),
)
def simulation_summary(step: AssetStep) -> dg.MaterializeResult:
    from l5assets.simulation.summary import summarize

    params = step.params
    # result.json (wall times) is no hashed output of simulation_outputs and is not recorded
    # as an input either (its hash differs between identical runs): only its file list is
    # read; the spike file links the summary to simulation_outputs
    result_file = upstream_file(
        step.storage, G.SIMULATION_OUTPUTS, step.param_set, step.seed, RESULT_FILE
    )
    sim_dir = result_file.parent
    files = json.loads(result_file.read_text())["files"]
    spikes_out = step.inputs["output_spikes"] = sim_dir / files["spikes"]
    reports = [sim_dir / r for r in files.get("reports", [])]
    v_report = next((r for r in reports if r.name == "v_report.h5"), None)
    dend = sim_dir / files["dend_v"] if "dend_v" in files else None
    for name, path in (("v_report", v_report), ("dend_v", dend)):
        if path is not None:
            step.inputs[name] = path
    spikes_in = raster_files(step.root, step.param_set, step.seed)
    step.inputs.update({f"spikes_{k}": v for k, v in spikes_in.items()})
    summary = summarize(
        spikes_out,
        spikes_in,
        tstop_ms=params.stop * 1000.0,
        membrane_report=v_report,
        tstart_ms=params.start * 1000.0,
        dend_trace=dend,
    )
    summary = {"param_set": step.param_set, "seed": step.seed, **summary}
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    atomic_write_text(step.tmp / SUMMARY_FILE, text)
    inline = _summary_plot(summary, spikes_out, spikes_in, v_report, dend, step.tmp)
    counts, extra = _summary_metadata(summary)
    return step.result(
        {"summary": SUMMARY_FILE, "plot": SUMMARY_FIGURE},
        counts=counts,
        extra=extra,
        figures={"plot": inline},
    )


def _summary_plot(
    summary: dict[str, Any],
    spikes_out: Path,
    spikes_in: dict[str, Path],
    v_report: Path | None,
    dend: Path | None,
    out_dir: Path,
) -> bytes:
    """The run's figure, full size into `out_dir`; returns the inline copy."""
    from l5assets.science.spikes import read_sonata_spikes
    from l5assets.simulation.figures import read_dend_trace, render, summary_figure
    from l5assets.simulation.summary import read_soma_trace

    trains: dict[str, Any] = {}
    for path in spikes_in.values():
        trains.update(read_sonata_spikes(path))
    out = read_sonata_spikes(spikes_out).get(CELL_POP) if spikes_out.exists() else None
    fig = summary_figure(
        summary,
        trains,
        out.timestamps if out is not None else [],
        float(summary["duration_s"]) * 1000.0,
        soma=read_soma_trace(v_report) if v_report is not None and v_report.exists() else None,
        dend=read_dend_trace(dend) if dend is not None and dend.exists() else None,
    )
    return render(fig, out_dir / SUMMARY_FIGURE)
