"""The SONATA network (SPEC section 5), written from arrays in BMTK's file layout.

Populations:
- `biophysical`: one node, the L5 cell (built by `l5assets.cell.bmtk_hook`'s directive).
- `exc_stim` (virtual): one BMTK `pop_name` per functional group (`dend<i>` for basal groups,
  `apic<i>` for apical ones, as the reference names them), node ids = the functional-groups
  table's `node_id` (basal first, then apical).
- `prox_inh_stim` (virtual): PV+ cells, pop `on_soma` then `on_dend`.
- `dist_inh_stim` (virtual): SOM+ cells, pop `dend` then `apic`.

Edges all target the one cell with syn_weight 1 and delay 0.1 ms:
- excitatory: one edge row per synapse, with the exact (sec_id, sec_x) of the functional-groups
  synapse table (sec_id = the segments table's `bmtk_id`); one edge type per functional group.
- inhibitory: one row per connection carrying an `nsyns` count drawn by
  `science.connectivity.norm_divergence` (rng stage "inh_connectivity", drawn in the order
  PV soma, PV proximal dendrites, SOM basal, SOM apical). BMTK places these synapses itself
  at simulation time from `target_sections` + `distance_range` (see the runner for how that
  placement is seeded).

Type ids as BMTK's NetworkBuilder gives them: node types from 100 within each population
(one per functional group or inhibitory sub-population); edge types from 100 over all the
cell's incoming edges, in the order groups, on_soma, on_dend, dend, apic, skipping those
without edges. The files are written
by `sonata.py` with whole arrays; `builder="bmtk"` (`bmtk_builder.py`) builds the same network
with BMTK's builder, as the reference does, and the tests check both give the same datasets
and types tables. Byte determinism: nothing here draws random numbers but `draw_inh_nsyns`;
the types tables have a fixed column order and HDF5 files carry no timestamps (h5py default).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from l5assets import paths
from l5assets.network import sonata
from l5assets.params import NormDivergence, ParamSet
from l5assets.rng import stage_rng

if TYPE_CHECKING:
    from l5assets.science.functional_groups import FunctionalGroups

SYN_WEIGHT = 1.0
DELAY_MS = 0.1

EXC_POP = "exc_stim"
PROX_POP = "prox_inh_stim"
DIST_POP = "dist_inh_stim"
CELL_POP = "biophysical"
INPUT_POPULATIONS = (EXC_POP, PROX_POP, DIST_POP)

EXC_MODEL = "PN2PN.json"
PV_MODEL = "PV2PN.json"
SOM_MODEL = "SOM2PN.json"


@dataclass(frozen=True)
class InhTarget:
    """Where one inhibitory sub-population's synapses go (BMTK target_sections/distance_range)."""

    population: str
    pop_name: str
    dynamics_params: str
    target_sections: tuple[str, ...]
    distance_range: tuple[float, float]


# Order matters: it is the order of the nsyns draws from the "inh_connectivity" stream and of
# the edge types in the file (the reference's order).
def inh_targets(som_model: str = SOM_MODEL) -> tuple[InhTarget, ...]:
    """The four inhibitory targets; `som_model` is the SOM+ synapse file (params field
    synapses.som_model, default SOM2PN.json)."""
    som = som_model if som_model.endswith(".json") else f"{som_model}.json"
    return (
        InhTarget(PROX_POP, "on_soma", PV_MODEL, ("somatic",), (-2000.0, 2000.0)),
        InhTarget(PROX_POP, "on_dend", PV_MODEL, ("dend",), (0.0, 50.0)),
        InhTarget(DIST_POP, "dend", som, ("dend",), (50.0, 2000.0)),
        InhTarget(DIST_POP, "apic", som, ("apic",), (50.0, 2000.0)),
    )


INH_TARGETS = inh_targets()


@dataclass(frozen=True)
class NetworkFiles:
    """The files of one built network and what they contain."""

    network_dir: Path
    nodes: dict[str, Path]  # population -> <pop>_nodes.h5
    node_types: dict[str, Path]  # population -> <pop>_node_types.csv
    edges: dict[str, Path]  # source population -> <src>_biophysical_edges.h5
    edge_types: dict[str, Path]  # source population -> <src>_biophysical_edge_types.csv
    counts: dict[str, int] = field(default_factory=dict)
    build_seconds: float = 0.0

    def all_files(self) -> list[Path]:
        """Every file of the network, sorted."""
        files = [
            *self.nodes.values(),
            *self.node_types.values(),
            *self.edges.values(),
            *self.edge_types.values(),
        ]
        return sorted(files)


@dataclass(frozen=True)
class NetworkSpec:
    """What a network writer needs: the param set, its functional groups, the inhibitory
    nsyns draws (`draw_inh_nsyns`), the cell node's properties, the synapse models folder."""

    params: ParamSet
    groups: FunctionalGroups
    nsyns: Mapping[str, np.ndarray]
    node_props: Mapping[str, Any]
    models_dir: Path | None


def network_files(network_dir: Path) -> NetworkFiles:
    """The files present in a network folder written by `build_network` (counts not filled).

    A population without nodes (e.g. no PV+ cells when basal_prox and n_soma_syns are 0) has
    no files at all, and neither have edges from it.
    """
    d = Path(network_dir)
    pops = [p for p in (CELL_POP, *INPUT_POPULATIONS) if (d / f"{p}_nodes.h5").exists()]
    srcs = [s for s in INPUT_POPULATIONS if (d / f"{s}_{CELL_POP}_edges.h5").exists()]
    return NetworkFiles(
        network_dir=d,
        nodes={p: d / f"{p}_nodes.h5" for p in pops},
        node_types={p: d / f"{p}_node_types.csv" for p in pops},
        edges={s: d / f"{s}_{CELL_POP}_edges.h5" for s in srcs},
        edge_types={s: d / f"{s}_{CELL_POP}_edge_types.csv" for s in srcs},
    )


def synapse_model_template(dynamics_file: str, models_dir: Path | None = None) -> str:
    """The BMTK `model_template` of a synapse model: its JSON's `level_of_detail`."""
    path = Path(models_dir or paths.synaptic_models_dir()) / dynamics_file
    with open(path) as f:
        data = json.load(f)
    if "level_of_detail" not in data:
        raise ValueError(f"{path}: no 'level_of_detail' (the BMTK synapse model name)")
    return str(data["level_of_detail"])


def cell_node_properties(params: ParamSet) -> dict[str, Any]:
    """Properties of the one biophysical node, per the cell owner's BMTK hook.

    `dynamics_params` names the biophysics file (found in the config's
    biophysical_neuron_models_dir); `morphology` is only set for a user morphology (absolute
    path): without it the hook uses the biophysics file's packaged default.
    """
    from l5assets.cell.bmtk_hook import MODEL_TEMPLATE

    props: dict[str, Any] = {
        "model_type": "biophysical",
        "model_template": MODEL_TEMPLATE,
        "dynamics_params": f"{params.biophysics}.json",
    }
    if params.morphology is not None:
        props["morphology"] = str(params.morphology)
    return props


def draw_inh_nsyns(params: ParamSet, seed: int) -> dict[str, np.ndarray]:
    """Synapses per inhibitory input cell, per sub-population (keys `<population>/<pop_name>`).

    One "inh_connectivity" stream, drawn in INH_TARGETS order.
    """
    from l5assets.science.connectivity import norm_divergence

    c = params.counts
    sizes: dict[str, tuple[int, NormDivergence]] = {
        "on_soma": (c.pv_soma, params.peri_inh),
        "on_dend": (c.pv_prox, params.peri_inh),
        "dend": (c.som_basal, params.basal_inh),
        "apic": (c.som_apic, params.apic_inh),
    }
    rng = stage_rng(seed, "inh_connectivity")
    out: dict[str, np.ndarray] = {}
    for t in INH_TARGETS:
        n, div = sizes[t.pop_name]
        out[f"{t.population}/{t.pop_name}"] = np.asarray(
            norm_divergence(n, div, rng), dtype=np.int64
        )
    return out


def group_pop_names(groups: pd.DataFrame) -> list[str]:
    """BMTK pop_name per functional group: `dend<i>` / `apic<i>`, i counted within the region."""
    names = []
    counters = {"basal": 0, "apic": 0}
    prefix = {"basal": "dend", "apic": "apic"}
    for region in groups["region"]:
        names.append(f"{prefix[region]}{counters[region]}")
        counters[region] += 1
    return names


def network_counts(groups: FunctionalGroups, nsyns: Mapping[str, np.ndarray]) -> dict[str, int]:
    counts = {
        "exc_nodes": int(groups.groups["n_cells"].sum()),
        "exc_edges": int(len(groups.synapses)),
        "exc_groups": int(len(groups.groups)),
    }
    for t in INH_TARGETS:
        k = nsyns[f"{t.population}/{t.pop_name}"]
        counts[f"{t.population}.{t.pop_name}.nodes"] = int(len(k))
        counts[f"{t.population}.{t.pop_name}.nsyns"] = int(k.sum())
    counts["pv_synapses"] = sum(counts[f"{PROX_POP}.{p}.nsyns"] for p in ("on_soma", "on_dend"))
    counts["som_synapses"] = sum(counts[f"{DIST_POP}.{p}.nsyns"] for p in ("dend", "apic"))
    counts["total_synapses"] = counts["exc_edges"] + counts["pv_synapses"] + counts["som_synapses"]
    return counts


def _exc_edges(
    groups: FunctionalGroups, models_dir: Path | None, first_type_id: int
) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Excitatory node types per node, edge columns and the two types tables (one node and
    one edge type per functional group; a group without synapses gets no edge type)."""
    syn = groups.synapses
    gtab = groups.groups.sort_values("first_node_id", kind="stable").reset_index(drop=True)
    first = gtab["first_node_id"].to_numpy(np.int64)
    sizes = gtab["n_cells"].to_numpy(np.int64)
    starts = np.cumsum(sizes) - sizes  # where each group would start if contiguous
    if not np.array_equal(first, starts):
        k = int(np.flatnonzero(first != starts)[0])
        raise ValueError(
            f"functional groups are not contiguous: group {k} starts at node {first[k]}, "
            f"expected {starts[k]}"
        )
    n_exc = int(sizes.sum())
    names = group_pop_names(gtab)
    node_type = np.repeat(np.arange(len(names)), sizes)  # group rank of each node
    node_types = [
        {
            "node_type_id": sonata.FIRST_TYPE_ID + i,
            "model_type": "virtual",
            "pop_name": name,
            "potential": "exc",
        }
        for i, name in enumerate(names)
    ]
    # one row per synapse, sources in node order, each source's synapses in table order
    syn_sorted = syn.sort_values("node_id", kind="stable")
    src = syn_sorted["node_id"].to_numpy(np.int64)
    if len(src) and (src.min() < 0 or src.max() >= n_exc):
        raise ValueError("synapse table node_id outside the functional groups' node range")
    has_edges = np.bincount(node_type[src], minlength=len(names)) > 0
    type_id = np.full(len(names), -1, dtype=np.int64)
    type_id[has_edges] = first_type_id + np.arange(int(has_edges.sum()))
    template = synapse_model_template(EXC_MODEL, models_dir)
    edge_types = [
        {
            "edge_type_id": int(type_id[i]),
            "target_query": "*",
            "source_query": f"pop_name=='{names[i]}'",
            "delay": DELAY_MS,
            "dynamics_params": EXC_MODEL,
            "model_template": template,
            "syn_weight": SYN_WEIGHT,
        }
        for i in np.flatnonzero(has_edges)
    ]
    edges = {
        "source": src,
        "type": type_id[node_type[src]],
        "props": {
            "sec_id": syn_sorted["bmtk_id"].to_numpy(np.int64),
            "sec_x": syn_sorted["x"].to_numpy(np.float64),
        },
    }
    return node_type + sonata.FIRST_TYPE_ID, edges, node_types, edge_types


def _cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def _inh_population(
    population: str,
    params: ParamSet,
    nsyns: Mapping[str, np.ndarray],
    models_dir: Path | None,
    first_type_id: int,
) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One inhibitory population's node types per node, edge columns (one edge per
    connection, `nsyns` as its property) and types tables."""
    node_type: list[np.ndarray] = []
    node_types: list[dict[str, Any]] = []
    src: list[np.ndarray] = []
    etype: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    edge_types: list[dict[str, Any]] = []
    offset = 0
    for t in inh_targets(params.som_model):
        if t.population != population:
            continue
        k = np.asarray(nsyns[f"{t.population}/{t.pop_name}"], dtype=np.int64)
        if not len(k):
            continue
        node_type.append(np.full(len(k), sonata.FIRST_TYPE_ID + len(node_types)))
        node_types.append(
            {
                "node_type_id": sonata.FIRST_TYPE_ID + len(node_types),
                "model_type": "virtual",
                "pop_name": t.pop_name,
                "potential": "inh",
            }
        )
        # every cell connects: nsyns >= divergence min >= 1 (norm_divergence)
        tid = first_type_id + len(edge_types)
        src.append(offset + np.arange(len(k)))
        etype.append(np.full(len(k), tid))
        counts.append(k)
        edge_types.append(
            {
                "edge_type_id": tid,
                "target_query": "*",
                "source_query": f"pop_name=='{t.pop_name}'",
                "delay": DELAY_MS,
                "distance_range": list(t.distance_range),
                "dynamics_params": t.dynamics_params,
                "model_template": synapse_model_template(t.dynamics_params, models_dir),
                "syn_weight": SYN_WEIGHT,
                "target_sections": list(t.target_sections),
            }
        )
        offset += len(k)
    edges = {
        "source": _cat(src, np.int64),
        "type": _cat(etype, np.int64),
        "props": {"nsyns": _cat(counts, np.uint32)},
    }
    return _cat(node_type, np.int64), edges, node_types, edge_types


def build_network(
    out_dir: Path,
    params: ParamSet,
    groups: FunctionalGroups,
    seed: int,
    *,
    cell_node: Mapping[str, Any] | None = None,
    models_dir: Path | None = None,
    builder: str = "arrays",
) -> NetworkFiles:
    """Write the SONATA network into `out_dir` (created; an earlier network there is replaced).

    `groups` is the functional-groups result of the same (params, seed); `cell_node` overrides
    the biophysical node's properties (default: `cell_node_properties(params)`). A population
    without nodes gets no files, nor do edges from it. `builder`: "arrays" (ours) or "bmtk"
    (BMTK's NetworkBuilder, the cross-check: the same datasets, ~15x slower on L5_reference).
    """
    if builder not in ("arrays", "bmtk"):
        raise ValueError(f"builder must be 'arrays' or 'bmtk', got {builder!r}")
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in network_files(out).all_files():  # a population may now be empty: no stale files
        old.unlink()
    node_props = dict(cell_node) if cell_node is not None else cell_node_properties(params)
    nsyns = draw_inh_nsyns(params, seed)
    spec = NetworkSpec(params, groups, nsyns, node_props, models_dir)
    if builder == "bmtk":
        from l5assets.network.bmtk_builder import write_network_bmtk

        write_network_bmtk(out, spec)
    else:
        _write_network(out, spec)

    files = network_files(out)
    return NetworkFiles(
        network_dir=out,
        nodes=files.nodes,
        node_types=files.node_types,
        edges=files.edges,
        edge_types=files.edge_types,
        counts=network_counts(groups, nsyns),
        build_seconds=time.perf_counter() - t0,
    )


def _write_network(out: Path, spec: NetworkSpec) -> None:
    """The network's files from arrays (`sonata.py`), into the empty folder `out`."""
    params, groups, nsyns, node_props, models_dir = (
        spec.params,
        spec.groups,
        spec.nsyns,
        spec.node_props,
        spec.models_dir,
    )

    sonata.write_nodes(out / f"{CELL_POP}_nodes.h5", CELL_POP, np.array([sonata.FIRST_TYPE_ID]))
    sonata.write_types_csv(
        out / f"{CELL_POP}_node_types.csv",
        ("node_type_id",),
        [
            {
                "node_type_id": sonata.FIRST_TYPE_ID,
                "pop_name": "Pyrc",
                "potential": "exc",
                **node_props,
            }
        ],
    )
    next_type = sonata.FIRST_TYPE_ID  # edge type ids run on over the cell's incoming edges
    pops = [(EXC_POP, _exc_edges(groups, models_dir, next_type))]
    next_type += len(pops[0][1][3])
    for pop in (PROX_POP, DIST_POP):
        pops.append((pop, _inh_population(pop, params, nsyns, models_dir, next_type)))
        next_type += len(pops[-1][1][3])
    for pop, (node_type, edges, node_types, edge_types) in pops:
        if not len(node_type):
            continue
        sonata.write_nodes(out / f"{pop}_nodes.h5", pop, node_type)
        sonata.write_types_csv(out / f"{pop}_node_types.csv", ("node_type_id",), node_types)
        if not len(edges["source"]):
            continue
        stem = out / f"{pop}_{CELL_POP}"
        sonata.write_edges(
            Path(f"{stem}_edges.h5"),
            pop,
            CELL_POP,
            edges["source"],
            np.zeros(len(edges["source"]), dtype=np.int64),
            edges["type"],
            edges["props"],
        )
        sonata.write_types_csv(
            Path(f"{stem}_edge_types.csv"),
            ("edge_type_id", "target_query", "source_query"),
            edge_types,
        )
