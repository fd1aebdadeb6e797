"""BMTK BioNet configuration files for one simulation (SPEC section 7).

Writes what `bmtk.utils.sim_setup.build_env_bionet` would write for the reference, but
deterministically and without copying anything:
- `circuit_config.json`: the network files and the components folders,
- `simulation_config.json`: run/conditions/inputs/outputs/reports,
- `node_sets.json`,
- `config.json`: the top-level file naming the two above (what the runner is given).

Paths inside the config folder are written relative to it (`${configdir}`), so the folder can
be built in a temporary directory and renamed into place. Files of other assets (network,
spike rasters, components) are absolute paths to their final locations.

No `mechanisms_dir` is given: the runner loads the compiled mechanism library itself
(`l5assets.cell.mechanisms`), so BMTK never compiles or loads .mod files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l5assets import paths
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


def circuit_config(network_dir: Path, components_dir: Path | None = None) -> dict[str, Any]:
    """The circuit section: node/edge files of the network and the component folders."""
    comp = Path(components_dir or paths.components_dir()).resolve()
    files = network_files(Path(network_dir).resolve())
    nodes = [
        {"nodes_file": str(files.nodes[p]), "node_types_file": str(files.node_types[p])}
        for p in (CELL_POP, *INPUT_POPULATIONS)
        if p in files.nodes
    ]
    edges = [
        {"edges_file": str(files.edges[s]), "edge_types_file": str(files.edge_types[s])}
        for s in INPUT_POPULATIONS
        if s in files.edges
    ]
    return {
        "manifest": {"$COMPONENTS_DIR": str(comp)},
        "components": {
            "biophysical_neuron_models_dir": "$COMPONENTS_DIR/cells",
            "synaptic_models_dir": "$COMPONENTS_DIR/synaptic_models",
        },
        "networks": {"nodes": nodes, "edges": edges, "gap_juncs": []},
    }


def simulation_config(
    params: ParamSet,
    spike_inputs: Mapping[str, Path],
    seed: int,
    current_clamp_file: Path | None = None,
    populations: tuple[str, ...] = INPUT_POPULATIONS,
) -> dict[str, Any]:
    """The simulation section (run, conditions, inputs, output, reports).

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
            "input_file": str(Path(spike_inputs[pop]).resolve()),
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
    SONATA spike file.
    """
    d = Path(config_dir)
    d.mkdir(parents=True, exist_ok=True)
    files = SimConfigFiles(
        config=d / "config.json",
        circuit=d / "circuit_config.json",
        simulation=d / "simulation_config.json",
        node_sets=d / "node_sets.json",
    )
    _dump(files.circuit, circuit_config(network_dir, components_dir))
    present = network_files(Path(network_dir)).nodes
    pops = tuple(p for p in INPUT_POPULATIONS if p in present)
    _dump(files.simulation,
          simulation_config(params, spike_inputs, seed, current_clamp_file, populations=pops))
    _dump(files.node_sets, node_sets())
    _dump(files.config, {
        "network": "circuit_config.json",
        "simulation": "simulation_config.json",
    })
    return files
