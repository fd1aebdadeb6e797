"""The asset graph, spelled once, without Dagster.

Every asset of the study with its group, partitioning level, upstream assets and the source
files it reads itself. The Dagster layer (`l5assets.defs`) builds its deps, jobs and source
edges from this table, `l5assets status` its asset lists and readers, and the definitions test
checks the loaded Dagster graph against it.

Levels: "source" (observable source, partitioned by param set), "param_set" (seed-independent
assets), "seed" (param set x seed). Cell-validation assets (partitioned by cell) are not part of
this graph: they read no param set (`l5assets.defs.cell_validation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["source", "param_set", "seed"]

# Partition dimensions.
PARAM_SET_DIM = "param_set"
SEED_DIM = "seed"

# Asset keys.
PARAMS_FILE = "params_file"
MECHANISM_FILES = "mechanism_files"
CELL_MODEL_FILES = "cell_model_files"
SYNAPTIC_MODEL_FILES = "synaptic_model_files"
COMPILED_MECHANISMS = "compiled_mechanisms"
SEGMENTS_TABLE = "segments_table"
FUNCTIONAL_GROUPS = "functional_groups"
EXC_RASTER = "exc_raster"
INH_RASTERS = "inh_rasters"
NETWORK = "network"
SIMULATION_CONFIG = "simulation_config"
SIMULATION_OUTPUTS = "simulation_outputs"
SIMULATION_SUMMARY = "simulation_summary"
NWB_EXPORT = "nwb_export"

# Model components recorded in every manifest, and the observable source that versions each.
CELL_COMPONENTS = ("mechanisms", "biophysics", "morphology", "synaptic_models")
COMPONENT_SOURCE = {
    "mechanisms": MECHANISM_FILES,
    "biophysics": CELL_MODEL_FILES,
    "morphology": CELL_MODEL_FILES,
    "synaptic_models": SYNAPTIC_MODEL_FILES,
}


@dataclass(frozen=True)
class Node:
    """One asset: where it sits and what it reads.

    deps: upstream assets whose outputs it reads. reads_params: whether its output depends on
    the param set's values (a dep on `params_file`). reads_components: the model-component
    files it reads itself (a dep on their source); components read only through an upstream
    output make it stale once that upstream is re-made with other content.
    """

    name: str
    group: str
    level: Level
    deps: tuple[str, ...] = ()
    reads_params: bool = True
    reads_components: tuple[str, ...] = ()
    # bump when the asset's code changes what it writes: its partitions become stale (in the
    # UI and in `status`, with or without the instance)
    code_version: str | None = None

    @property
    def source_deps(self) -> tuple[str, ...]:
        """The observable sources it depends on directly (params file first, then components)."""
        comps = dict.fromkeys(COMPONENT_SOURCE[c] for c in self.reads_components)
        return ((PARAMS_FILE,) if self.reads_params else ()) + tuple(comps)

    @property
    def parents(self) -> tuple[str, ...]:
        """Every direct parent in the Dagster graph: sources, then upstream assets."""
        return self.source_deps + self.deps


SOURCES: tuple[Node, ...] = (
    Node(PARAMS_FILE, "params", "source", reads_params=False),
    Node(MECHANISM_FILES, "params", "source", reads_params=False),
    Node(CELL_MODEL_FILES, "params", "source", reads_params=False),
    Node(SYNAPTIC_MODEL_FILES, "params", "source", reads_params=False),
)

ASSETS: tuple[Node, ...] = (
    # validates the params but does not read them: a params edit leaves it fresh
    Node(
        COMPILED_MECHANISMS,
        "cell",
        "param_set",
        reads_params=False,
        reads_components=("mechanisms",),
        code_version="1",
    ),
    # NEURON builds the cell from the biophysics + morphology files
    Node(
        SEGMENTS_TABLE,
        "cell",
        "param_set",
        (COMPILED_MECHANISMS,),
        reads_components=("biophysics", "morphology"),
        code_version="1",
    ),
    Node(FUNCTIONAL_GROUPS, "inputs", "seed", (SEGMENTS_TABLE,), code_version="3"),
    Node(EXC_RASTER, "inputs", "seed", (FUNCTIONAL_GROUPS,), code_version="4"),
    Node(INH_RASTERS, "inputs", "seed", (EXC_RASTER,), code_version="4"),
    # BMTK edge types read the synapse dynamics files
    Node(
        NETWORK,
        "network",
        "seed",
        (FUNCTIONAL_GROUPS,),
        reads_components=("synaptic_models",),
        code_version="2",
    ),
    Node(
        SIMULATION_CONFIG,
        "simulation",
        "seed",
        (NETWORK, EXC_RASTER, INH_RASTERS),
        code_version="2",
    ),
    # the runner builds the cell and the synapses from the component files itself
    Node(
        SIMULATION_OUTPUTS,
        "simulation",
        "seed",
        (SIMULATION_CONFIG, COMPILED_MECHANISMS),
        reads_components=("biophysics", "morphology", "synaptic_models"),
        code_version="4",
    ),
    Node(
        SIMULATION_SUMMARY,
        "simulation",
        "seed",
        (SIMULATION_OUTPUTS, EXC_RASTER, INH_RASTERS),
        code_version="5",
    ),
    # the network's node files give each input population's size (silent nodes included)
    Node(
        NWB_EXPORT,
        "export",
        "seed",
        (SIMULATION_OUTPUTS, NETWORK, EXC_RASTER, INH_RASTERS),
        code_version="3",
    ),
)

NODES: dict[str, Node] = {n.name: n for n in (*SOURCES, *ASSETS)}
SOURCE_ASSETS: tuple[str, ...] = tuple(n.name for n in SOURCES)
SHARED_ASSETS: tuple[str, ...] = tuple(n.name for n in ASSETS if n.level == "param_set")
SEED_ASSETS: tuple[str, ...] = tuple(n.name for n in ASSETS if n.level == "seed")
# Readers, for `status`: which assets a params or component edit makes stale directly.
PARAMS_READERS: dict[str, bool] = {n.name: n.reads_params for n in ASSETS}
COMPONENT_READERS: dict[str, tuple[str, ...]] = {n.name: n.reads_components for n in ASSETS}
CODE_VERSIONS: dict[str, str | None] = {n.name: n.code_version for n in ASSETS}


def node(name: str) -> Node:
    """The graph node of an asset key (KeyError naming the known keys)."""
    try:
        return NODES[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known: {sorted(NODES)}") from None
