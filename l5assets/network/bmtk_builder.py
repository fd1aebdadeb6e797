"""The SONATA network written by BMTK's NetworkBuilder: the cross-check of `build.py`.

`build.build_network` writes the network from arrays (`sonata.py`); with `builder="bmtk"` it
calls this module, which builds the same network the way the reference pipeline does (one
`add_edges` per functional group and per inhibitory sub-population, counts and locations
given as lists, so the builder draws no random numbers). `l5assets_tests/test_network.py`
checks that both give the same datasets and types tables. BMTK takes ~2.3 s per L5_reference
seed (its node queries and per-edge Python): that is why it is not the asset's path.

BMTK writes the types-CSV columns in the iteration order of a Python `set` (it depends on the
string-hash seed); `_normalise_types_csv` rewrites them with a fixed column order.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from l5assets.network.build import (
    CELL_POP,
    DELAY_MS,
    DIST_POP,
    EXC_MODEL,
    EXC_POP,
    INH_TARGETS,
    PROX_POP,
    SYN_WEIGHT,
    NetworkSpec,
    group_pop_names,
    inh_targets,
    network_files,
    synapse_model_template,
)
from l5assets.params import ParamSet

if TYPE_CHECKING:
    from l5assets.science.functional_groups import FunctionalGroups


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
    pop_names = group_pop_names(gtab)
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


def write_network_bmtk(out: Path, spec: NetworkSpec) -> None:
    """Write `build.build_network`'s network into the empty folder `out` with BMTK's
    NetworkBuilder (`build_network(..., builder="bmtk")`)."""
    from bmtk.builder import NetworkBuilder

    params, groups, nsyns, models_dir = spec.params, spec.groups, spec.nsyns, spec.models_dir
    net = NetworkBuilder(CELL_POP)
    net.add_nodes(N=1, pop_name="Pyrc", potential="exc", **spec.node_props)
    exc = _add_exc_inputs(net, groups, models_dir)
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
