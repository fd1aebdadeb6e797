"""The SONATA network (SPEC section 5), written with BMTK's NetworkBuilder.

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

Byte determinism: the builder itself draws no random numbers here (all counts and locations
are given as lists). BMTK writes the node-/edge-types CSV columns in the iteration order of a
Python `set`, which depends on the per-process string-hash seed; `_normalise_types_csv`
rewrites those CSVs with a fixed column order. HDF5 files carry no timestamps (h5py default).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from l5assets import paths
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


def _group_pop_names(groups: pd.DataFrame) -> list[str]:
    """BMTK pop_name per functional group: `dend<i>` / `apic<i>`, i counted within the region."""
    names = []
    counters = {"basal": 0, "apic": 0}
    prefix = {"basal": "dend", "apic": "apic"}
    for region in groups["region"]:
        names.append(f"{prefix[region]}{counters[region]}")
        counters[region] += 1
    return names


def _normalise_types_csv(path: Path, first: tuple[str, ...]) -> None:
    """Rewrite a BMTK *_types.csv with columns `first` then the rest sorted (see module doc)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=" "))
    header, body = rows[0], rows[1:]
    order = [c for c in first if c in header] + sorted(c for c in header if c not in first)
    idx = [header.index(c) for c in order]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=" ")
        w.writerow(order)
        for r in body:
            w.writerow([r[i] for i in idx])


def _add_exc_inputs(net: Any, groups: FunctionalGroups, models_dir: Path | None) -> Any:
    """The excitatory input population (one pop_name and one edge type per functional group)
    and its edges onto the cell; returns its NetworkBuilder."""
    from bmtk.builder import NetworkBuilder

    syn = groups.synapses
    gtab = groups.groups.sort_values("first_node_id", kind="stable").reset_index(drop=True)
    n_exc = int(gtab["n_cells"].sum())
    exc = NetworkBuilder(EXC_POP)
    pop_names = _group_pop_names(gtab)
    next_id = 0
    for name, first, n in zip(pop_names, gtab["first_node_id"], gtab["n_cells"], strict=True):
        if int(first) != next_id:
            raise ValueError(
                f"functional groups are not contiguous: group {name} starts at "
                f"node {first}, expected {next_id}"
            )
        exc.add_nodes(N=int(n), pop_name=name, potential="exc", model_type="virtual")
        next_id += int(n)

    # Synapses of one input cell stay in the table's order (stable sort); BMTK writes one row
    # per synapse, sources in node order, each source's synapses consecutively.
    syn_sorted = syn.sort_values("node_id", kind="stable")
    node_ids = syn_sorted["node_id"].to_numpy(np.int64)
    if len(node_ids) and (node_ids.min() < 0 or node_ids.max() >= n_exc):
        raise ValueError("synapse table node_id outside the functional groups' node range")
    per_node = np.bincount(node_ids, minlength=n_exc)
    sec_ids = syn_sorted["bmtk_id"].to_numpy(np.int64)
    sec_xs = syn_sorted["x"].to_numpy(np.float64)
    bounds = np.concatenate([[0], np.cumsum(per_node)])

    pn2pn_template = synapse_model_template(EXC_MODEL, models_dir)
    for name, first, n in zip(pop_names, gtab["first_node_id"], gtab["n_cells"], strict=True):
        a, b = int(first), int(first) + int(n)
        counts = [int(k) for k in per_node[a:b]]
        if sum(counts) == 0:
            continue
        lo, hi = bounds[a], bounds[b]
        locs = [(int(s), float(x)) for s, x in zip(sec_ids[lo:hi], sec_xs[lo:hi], strict=True)]
        cm = net.add_edges(
            source=exc.nodes(pop_name=name),
            target=net.nodes(),
            connection_rule=counts,
            iterator="all_to_one",
            syn_weight=SYN_WEIGHT,
            delay=DELAY_MS,
            dynamics_params=EXC_MODEL,
            model_template=pn2pn_template,
        )
        cm.add_properties(["sec_id", "sec_x"], values=locs, dtypes=[np.int64, np.float64])
    return exc


def _add_inh_inputs(
    net: Any, params: ParamSet, nsyns: Mapping[str, np.ndarray], models_dir: Path | None
) -> dict[str, Any]:
    """The two inhibitory input populations and their edges onto the cell (nsyns per
    connection: BMTK places them at simulation time); returns their NetworkBuilders."""
    from bmtk.builder import NetworkBuilder

    inh_builders = {PROX_POP: NetworkBuilder(PROX_POP), DIST_POP: NetworkBuilder(DIST_POP)}
    targets = inh_targets(params.som_model)
    for t in targets:
        k = nsyns[f"{t.population}/{t.pop_name}"]
        if len(k):
            inh_builders[t.population].add_nodes(
                N=len(k), pop_name=t.pop_name, potential="inh", model_type="virtual"
            )
    for t in targets:
        k = nsyns[f"{t.population}/{t.pop_name}"]
        if not len(k):
            continue
        net.add_edges(
            source=inh_builders[t.population].nodes(pop_name=t.pop_name),
            target=net.nodes(),
            connection_rule=[int(v) for v in k],
            iterator="all_to_one",
            syn_weight=SYN_WEIGHT,
            delay=DELAY_MS,
            dynamics_params=t.dynamics_params,
            model_template=synapse_model_template(t.dynamics_params, models_dir),
            target_sections=list(t.target_sections),
            distance_range=list(t.distance_range),
        )
    return inh_builders


def _network_counts(groups: FunctionalGroups, nsyns: Mapping[str, np.ndarray]) -> dict[str, int]:
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


def build_network(
    out_dir: Path,
    params: ParamSet,
    groups: FunctionalGroups,
    seed: int,
    *,
    cell_node: Mapping[str, Any] | None = None,
    models_dir: Path | None = None,
) -> NetworkFiles:
    """Write the SONATA network into `out_dir` (created; an earlier network there is replaced).

    `groups` is the functional-groups result of the same (params, seed); `cell_node` overrides
    the biophysical node's properties (default: `cell_node_properties(params)`).
    """
    from bmtk.builder import NetworkBuilder

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in network_files(out).all_files():  # a population may now be empty: no stale files
        old.unlink()
    node_props = dict(cell_node) if cell_node is not None else cell_node_properties(params)

    net = NetworkBuilder(CELL_POP)
    net.add_nodes(N=1, pop_name="Pyrc", potential="exc", **node_props)
    exc = _add_exc_inputs(net, groups, models_dir)
    nsyns = draw_inh_nsyns(params, seed)
    inh_builders = _add_inh_inputs(net, params, nsyns, models_dir)

    net.build()
    net.save_nodes(output_dir=str(out))
    net.save_edges(output_dir=str(out))
    n_nodes = {EXC_POP: int(groups.groups["n_cells"].sum())}
    for t in INH_TARGETS:
        k = len(nsyns[f"{t.population}/{t.pop_name}"])
        n_nodes[t.population] = n_nodes.get(t.population, 0) + k
    for b in (exc, *inh_builders.values()):
        if n_nodes[b.name]:  # a population without nodes gets no files
            b.build()
            b.save_nodes(output_dir=str(out))

    files = network_files(out)
    for p in files.node_types.values():
        _normalise_types_csv(p, ("node_type_id",))
    for p in files.edge_types.values():
        _normalise_types_csv(p, ("edge_type_id", "target_query", "source_query"))

    return NetworkFiles(
        network_dir=out,
        nodes=files.nodes,
        node_types=files.node_types,
        edges=files.edges,
        edge_types=files.edge_types,
        counts=_network_counts(groups, nsyns),
        build_seconds=time.perf_counter() - t0,
    )
