"""BMTK BioNet configuration files for one simulation (SPEC section 7).

Writes what `bmtk.utils.sim_setup.build_env_bionet` would write for the reference, but
deterministically and without copying anything:
- `circuit_config.json`: the network files and the components folders,
- `simulation_config.json`: run/conditions/inputs/outputs/reports,
- `node_sets.json`,
- `config.json`: the top-level file naming the two above (what the runner is given).

Every path is written relative to the config folder (BMTK's `${configdir}`, resolved per file
to the folder of the JSON file that contains it), so the files embed no storage root: the
same run gives byte-identical configs under any root, and a storage tree can be moved. In the
storage layout `<root>/<param_set>/seed-<n>/{network,exc_raster,inh_rasters,
simulation_config}` the network is `${configdir}/../network` and the spike files
`${configdir}/../exc_raster/...`; the config folder may be written in a temporary folder beside
its final place and renamed (the relative paths are the same from both). Only a user's current
clamp file (outside the storage tree) is written as an absolute path.

Components: by default no `components` section is written (it would embed the checkout path):
the runner (`l5assets.simulation.runner`) supplies the project's `biophysical_neuron_models_dir`
and `synaptic_models_dir` (`l5assets.paths`, which honours L5ASSETS_COMPONENTS_DIR). An explicit
`components_dir` is written as an absolute path. No `mechanisms_dir` is given either: the
runner loads the compiled mechanism library itself (`l5assets.cell.mechanisms`), so BMTK never
compiles or loads .mod files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l5assets.network.build import CELL_POP, INPUT_POPULATIONS, network_files
from l5assets.params import ParamSet

V_INIT = -80.0
CELSIUS = 34.0
SPIKE_THRESHOLD = -10.0
NSTEPS_BLOCK = 5000
OUTPUT_SUBDIR = "output"
SPIKES_FILE = "spikes.h5"
RECORDED_NODE_SET = "biophysical_nodes"


@dataclass(frozen=True)
class SimConfigFiles:
    """The files written by `write_sim_config`."""

    config: Path  # top-level config.json (give this to the runner / bionet.Config)
    circuit: Path
    simulation: Path
    node_sets: Path

    def all_files(self) -> list[Path]:
        return [self.config, self.circuit, self.simulation, self.node_sets]


def _dump(path: Path, obj: Any) -> None:
    # Key order as built (BMTK's own layout); stable because every dict here is built in code.
    path.write_text(json.dumps(obj, indent=2) + "\n")


def report_specs(params: ParamSet) -> dict[str, dict[str, Any]]:
    """Membrane reports: one per recorded variable, variable i at location i (reference rule).

    Each report is written by BMTK to `<output_dir>/<var>_report.h5` (no `file_name` key: BMTK
    would resolve a relative one against the working directory).

    As in the reference, `record_cellvars.locs` is paired with `vars` by position; a variable
    without a location is recorded at the soma.
    """
    reports: dict[str, dict[str, Any]] = {}
    for i, var in enumerate(params.record_vars):
        loc = params.record_locs[i] if i < len(params.record_locs) else "soma"
        reports[f"{var}_report"] = {
            "variable_name": var,
            "cells": RECORDED_NODE_SET,
            "module": "membrane_report",
            "sections": loc,
            # BMTK 1.2.0's config schema wrongly requires `input_type` on reports too;
            # the report modules ignore it, and with it `Config.validate()` passes.
            "input_type": "membrane_report",
        }
    return reports


def config_relative(path: Path, config_dir: Path) -> str:
    """`path` as a BMTK path relative to the config folder: `${configdir}/<relative path>`."""
    rel = os.path.relpath(Path(path).resolve(), Path(config_dir).resolve())
    return "${configdir}/" + Path(rel).as_posix()


def circuit_config(
    network_dir: Path, config_dir: Path, components_dir: Path | None = None
) -> dict[str, Any]:
    """The circuit section: node/edge files of the network (relative to `config_dir`) and,
    only if `components_dir` is given, the component folders (absolute)."""
    files = network_files(Path(network_dir))
    net = "$NETWORK_DIR"

    def rel(p: Path) -> str:
        return f"{net}/{p.name}"

    nodes = [
        {"nodes_file": rel(files.nodes[p]), "node_types_file": rel(files.node_types[p])}
        for p in (CELL_POP, *INPUT_POPULATIONS)
        if p in files.nodes
    ]
    edges = [
        {"edges_file": rel(files.edges[s]), "edge_types_file": rel(files.edge_types[s])}
        for s in INPUT_POPULATIONS
        if s in files.edges
    ]
    manifest = {net: config_relative(Path(network_dir), config_dir)}
    out: dict[str, Any] = {"manifest": manifest}
    if components_dir is not None:
        comp = Path(components_dir).resolve()
        manifest["$COMPONENTS_DIR"] = str(comp)
        out["components"] = {
            "biophysical_neuron_models_dir": "$COMPONENTS_DIR/cells",
            "synaptic_models_dir": "$COMPONENTS_DIR/synaptic_models",
        }
    out["networks"] = {"nodes": nodes, "edges": edges, "gap_juncs": []}
    return out


def simulation_config(
    params: ParamSet,
    spike_inputs: Mapping[str, Path],
    seed: int,
    config_dir: Path,
    current_clamp_file: Path | None = None,
    populations: tuple[str, ...] = INPUT_POPULATIONS,
) -> dict[str, Any]:
    """The simulation section (run, conditions, inputs, output, reports); spike files are
    written relative to `config_dir`.

    BMTK ignores the extra `l5assets` section; the runner reads the partition seed and the
    synapse options from it, so the config folder alone defines the run. `populations`: the
    input populations present in the network (one without nodes gets no input entry).
    """
    missing = [p for p in populations if p not in spike_inputs]
    if missing:
        raise ValueError(f"spike input files missing for populations {missing}")
    inputs: dict[str, Any] = {}
    for pop in populations:
        inputs[f"{pop}_spikes"] = {
            "input_type": "spikes",
            "module": "sonata",
            "input_file": config_relative(Path(spike_inputs[pop]), config_dir),
            "node_set": pop,
        }
    clamp = current_clamp_file or params.current_clamp_file
    if clamp is not None:
        inputs["file_current_clamp"] = {
            "input_type": "current_clamp",
            "module": "FileIClamp",
            "node_set": "all",
            "input_file": str(Path(clamp).resolve()),
        }
    return {
        "manifest": {"$BASE_DIR": "${configdir}", "$OUTPUT_DIR": f"$BASE_DIR/{OUTPUT_SUBDIR}"},
        "target_simulator": "NEURON",
        "run": {
            "tstart": 0.0,
            "tstop": params.stop * 1000.0,
            "dt": params.dt,
            "dL": params.dL,
            "spike_threshold": SPIKE_THRESHOLD,
            "nsteps_block": NSTEPS_BLOCK,
        },
        "conditions": {"celsius": CELSIUS, "v_init": V_INIT},
        "inputs": inputs,
        "output": {
            "log_file": "log.txt",
            "output_dir": "$OUTPUT_DIR",
            "spikes_file": SPIKES_FILE,
        },
        "reports": report_specs(params),
        "node_sets_file": "$BASE_DIR/node_sets.json",
        "l5assets": {
            "param_set": params.name,
            "params_hash": params.params_hash,
            "seed": int(seed),
            "exc_release_gates_transmission": params.exc_release_gates_transmission,
            # only when asked for: configs of exact-rate param sets stay as they were
            **({"rate_tables": True} if params.rate_tables else {}),
        },
    }


def node_sets() -> dict[str, Any]:
    """Node sets used by the reports.

    The recorded set selects the cell's population: BMTK 1.2.0's node-set filter does not see
    `model_type` when it is a node-types column (sim_setup's `{"model_type": "biophysical"}`
    set comes out empty and the membrane report records nothing).
    """
    return {RECORDED_NODE_SET: {"population": CELL_POP}}


def write_sim_config(
    config_dir: Path,
    params: ParamSet,
    network_dir: Path,
    spike_inputs: Mapping[str, Path],
    *,
    seed: int,
    current_clamp_file: Path | None = None,
    components_dir: Path | None = None,
) -> SimConfigFiles:
    """Write config.json, circuit_config.json, simulation_config.json, node_sets.json.

    `spike_inputs` maps each input population (exc_stim, prox_inh_stim, dist_inh_stim) to its
    SONATA spike file. The network and spike files are referenced relative to `config_dir`
    (see the module doc): keep their relative location when moving the files. Without
    `components_dir` the runner supplies the project's component folders.
    """
    d = Path(config_dir)
    d.mkdir(parents=True, exist_ok=True)
    files = SimConfigFiles(
        config=d / "config.json",
        circuit=d / "circuit_config.json",
        simulation=d / "simulation_config.json",
        node_sets=d / "node_sets.json",
    )
    _dump(files.circuit, circuit_config(network_dir, d, components_dir))
    present = network_files(Path(network_dir)).nodes
    pops = tuple(p for p in INPUT_POPULATIONS if p in present)
    _dump(
        files.simulation,
        simulation_config(params, spike_inputs, seed, d, current_clamp_file, populations=pops),
    )
    _dump(files.node_sets, node_sets())
    _dump(
        files.config,
        {
            "network": "circuit_config.json",
            "simulation": "simulation_config.json",
        },
    )
    return files
