"""Functional groups and clusters of excitatory inputs (SPEC sections 3 and 4).

Excitatory input cells come in functional groups (shared rate fluctuations, see `exc_raster`).
Each group owns the candidate segments within `group_radius` (Euclidean, 3-D) of a random
centre segment; inside it, `clusters_per_group` distinct cluster-centre segments each define a
cluster: the group's segments within `cluster_radius` of that centre. Every input cell of the
group draws a synapse count uniformly in [exc_div_min, exc_div_max], picks that many distinct
clusters and puts one synapse on a uniformly drawn segment of each.

Candidates: basal = type 'dend' at path distance >= 50 um; apical = every 'apic' segment.
Basal groups are built first; node ids and group ids continue from basal into apical.

Random draws, in this fixed order, from the single generator passed in (stage
"functional_groups"): for each region (basal, then apical), for each group in order:
  1. the centre: one `integers(n_candidates)`;
  2. the cluster centres: `choice(n_group_segments, n_clusters, replace=False)`;
  3. the synapse count of each cell: `integers(min, max + 1, size=n_cells)`;
  4. the cluster order of each cell: `random((n_cells, n_clusters))`, argsorted per row (a
     uniform random permutation; a cell takes the first `count` clusters of its row);
  5. the segment of each synapse within its cluster: `integers(0, cluster_size)` per synapse,
     synapses in (cell, cluster-order) order.

Deviations from the reference, all of which leave the reference param sets unchanged:
- Group sizes: the remainder `n_cells % n_groups` is spread one cell each over the first
  groups (the reference spreads `n_cells % cells_per_group`, which silently drops cells when
  that remainder exceeds the number of groups), and a region with 0 < n_cells <
  cells_per_group gets one group instead of none. So the node count always equals
  the derived count. For the reference (2,008 basal, 3,214 apical) the sizes are identical:
  20 groups with 8 of 101 cells, 32 groups with 14 of 101 cells.
- Small morphologies: if a group sphere holds fewer segments than `clusters_per_group`, the
  group gets as many clusters as it has segments (the reference would fail); a cell's synapse
  count is then capped at the group's cluster count, because its clusters must be distinct.
  Both are visible in the `groups` table (`n_clusters`) and the synapse rows.
- An empty candidate set for a region that needs cells is a clear `ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from l5assets.params import ParamSet

BASAL_MIN_DISTANCE = 50.0  # um: basal candidates start here (closer ones get PV+ inputs)
REGIONS = ("basal", "apic")
COORDS = ["coord_x", "coord_y", "coord_z"]
SEGMENT_COLUMNS = ["bmtk_id", "x", "type", "distance", *COORDS]
# Location columns copied from the segments table into every output table.
_LOC = ["segment", "bmtk_id", "x", "distance", *COORDS]


@dataclass(frozen=True)
class FunctionalGroups:
    """Excitatory input layout.

    `synapses`: one row per excitatory synapse: node_id, group, cluster (index within the
    group), region, segment (row position in the segments table), bmtk_id, x, distance,
    coord_x/y/z; ordered by node id.
    `groups`: one row per group: group, region, first_node_id, n_cells, n_clusters,
    n_segments (segments in the group sphere), and the centre's segment, bmtk_id, x, distance,
    coord_x/y/z.
    `clusters`: one row per cluster: group, cluster, n_segments, and the centre's location.
    """

    synapses: pd.DataFrame
    groups: pd.DataFrame
    clusters: pd.DataFrame

    @property
    def n_cells(self) -> int:
        """Total excitatory input cells (node ids 0..n_cells-1)."""
        return int(self.groups["n_cells"].sum())

    def node_groups(self) -> pd.DataFrame:
        """Input node id -> functional group (the reference's FunctionalGroups.csv)."""
        g = self.groups
        reps = g["n_cells"].to_numpy()
        return pd.DataFrame(
            {
                "node_id": np.arange(int(reps.sum()), dtype=np.int64),
                "group": np.repeat(g["group"].to_numpy(), reps),
                "region": np.repeat(g["region"].to_numpy(), reps),
            }
        )


def group_sizes(n_cells: int, cells_per_group: int) -> np.ndarray:
    """Cells per group: n_cells // cells_per_group groups (at least one if n_cells > 0),
    the remainder spread one each over the first groups."""
    if n_cells < 0 or cells_per_group < 1:
        raise ValueError(f"group_sizes: bad n_cells={n_cells} / cells_per_group={cells_per_group}")
    if n_cells == 0:
        return np.zeros(0, dtype=np.int64)
    n_groups = max(1, n_cells // cells_per_group)
    base, extra = divmod(n_cells, n_groups)
    sizes = np.full(n_groups, base, dtype=np.int64)
    sizes[:extra] += 1
    return sizes


def candidate_segments(segments: pd.DataFrame, region: str) -> np.ndarray:
    """Row positions of the candidate segments of one region ('basal' or 'apic')."""
    seg_type = segments["type"].to_numpy()
    if region == "basal":
        mask = (seg_type == "dend") & (segments["distance"].to_numpy() >= BASAL_MIN_DISTANCE)
    elif region == "apic":
        mask = seg_type == "apic"
    else:
        raise ValueError(f"candidate_segments: region must be one of {REGIONS}, got {region!r}")
    return np.flatnonzero(mask)


def _check_segments(segments: pd.DataFrame) -> None:
    missing = [c for c in SEGMENT_COLUMNS if c not in segments.columns]
    if missing:
        raise ValueError(f"segments table lacks column(s) {missing}; needs {SEGMENT_COLUMNS}")
    xyz = segments[COORDS].to_numpy(dtype=np.float64)
    if not np.isfinite(xyz).all() or not np.isfinite(segments["distance"].to_numpy()).all():
        raise ValueError("segments table has non-finite coordinates or distances")


def _dist(points: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Euclidean distances of rows of `points` (n, 3) from `centre` (3,) or (k, 3) -> (k, n)."""
    return np.sqrt(((points[None, :, :] - np.atleast_2d(centre)[:, None, :]) ** 2).sum(-1))


def _build_region(
    cand: np.ndarray,
    xyz: np.ndarray,
    sizes: np.ndarray,
    n_clusters: int,
    group_radius: float,
    cluster_radius: float,
    div_min: int,
    div_max: int,
    rng: np.random.Generator,
    first_node: int,
    first_group: int,
    region: str,
) -> tuple[list[dict], list[pd.DataFrame], list[pd.DataFrame]]:
    """Groups of one region; returns group rows, cluster frames and synapse frames."""
    cand_xyz = xyz[cand]
    group_rows: list[dict] = []
    cluster_frames: list[pd.DataFrame] = []
    syn_frames: list[pd.DataFrame] = []
    node = first_node
    for k, n_cells in enumerate(sizes.tolist()):
        gid = first_group + k
        centre = int(rng.integers(cand.size))  # draw 1
        members = np.flatnonzero(_dist(cand_xyz, cand_xyz[centre])[0] <= group_radius)
        k_cl = min(n_clusters, members.size)  # members holds at least the centre itself
        cl_pos = rng.choice(members.size, size=k_cl, replace=False)  # draw 2
        cl_seg = members[cl_pos]  # candidate positions of the cluster centres
        # cluster membership: (k_cl, n_members); row-major nonzero lists each cluster's
        # members contiguously, so cluster c's members are flat[offsets[c]:offsets[c+1]]
        in_cl = _dist(cand_xyz[members], cand_xyz[cl_seg]) <= cluster_radius
        cl_col = np.nonzero(in_cl)[1]
        cl_size = in_cl.sum(axis=1)
        offsets = np.concatenate([[0], np.cumsum(cl_size)[:-1]])

        n_syn = rng.integers(div_min, div_max + 1, size=n_cells)  # draw 3
        n_syn = np.minimum(n_syn, k_cl)
        order = np.argsort(rng.random((n_cells, k_cl)), axis=1, kind="stable")  # draw 4
        take = np.arange(k_cl)[None, :] < n_syn[:, None]
        cell_of_syn = np.nonzero(take)[0]
        cluster_of_syn = order[take]
        pick = rng.integers(0, cl_size[cluster_of_syn])  # draw 5
        seg_cand = members[cl_col[offsets[cluster_of_syn] + pick]]

        syn_frames.append(
            pd.DataFrame(
                {
                    "node_id": node + cell_of_syn.astype(np.int64),
                    "group": gid,
                    "cluster": cluster_of_syn.astype(np.int64),
                    "region": region,
                    "segment": cand[seg_cand],
                }
            )
        )
        cluster_frames.append(
            pd.DataFrame(
                {
                    "group": gid,
                    "cluster": np.arange(k_cl, dtype=np.int64),
                    "n_segments": cl_size.astype(np.int64),
                    "segment": cand[cl_seg],
                }
            )
        )
        group_rows.append(
            {
                "group": gid,
                "region": region,
                "first_node_id": node,
                "n_cells": n_cells,
                "n_clusters": k_cl,
                "n_segments": int(members.size),
                "segment": int(cand[centre]),
            }
        )
        node += n_cells
    return group_rows, cluster_frames, syn_frames


def _with_location(df: pd.DataFrame, segments: pd.DataFrame) -> pd.DataFrame:
    """Append the location columns of the segment each row points at."""
    seg = df["segment"].to_numpy(dtype=np.int64)
    loc = {c: segments[c].to_numpy()[seg] for c in _LOC if c != "segment"}
    return df.assign(**loc).reset_index(drop=True)


def build_functional_groups(
    segments: pd.DataFrame, params: ParamSet, rng: np.random.Generator
) -> FunctionalGroups:
    """Lay out all excitatory input cells, groups, clusters and synapses (draw order: module
    docstring). Node counts are `params.counts.exc_basal` + `params.counts.exc_apic`."""
    _check_segments(segments)
    counts = params.counts
    if params.exc_div_min < 1 or params.exc_div_max < params.exc_div_min:
        raise ValueError("exc divergence must satisfy 1 <= min <= max")
    if counts.clusters_per_group < 1 and counts.exc_total > 0:
        raise ValueError(
            f"clusters per group = int(cells_per_group * mean_div // (exc_density * 10)) = "
            f"{counts.clusters_per_group}: need >= 1"
        )
    segs = segments.reset_index(drop=True)
    xyz = segs[COORDS].to_numpy(dtype=np.float64)
    group_rows: list[dict] = []
    cl_frames: list[pd.DataFrame] = []
    syn_frames: list[pd.DataFrame] = []
    node, gid = 0, 0
    for region, n_cells in (("basal", counts.exc_basal), ("apic", counts.exc_apic)):
        sizes = group_sizes(n_cells, params.cells_per_group)
        cand = candidate_segments(segs, region)
        if sizes.size and cand.size == 0:
            what = (
                "'dend' segments at distance >= 50 um" if region == "basal" else "'apic' segments"
            )
            raise ValueError(
                f"functional groups: {n_cells} {region} input cells but the cell has no {what}"
            )
        rows, cls, syns = _build_region(
            cand,
            xyz,
            sizes,
            counts.clusters_per_group,
            params.group_radius,
            params.cluster_radius,
            params.exc_div_min,
            params.exc_div_max,
            rng,
            node,
            gid,
            region,
        )
        group_rows += rows
        cl_frames += cls
        syn_frames += syns
        node += int(sizes.sum())
        gid += sizes.size

    groups = pd.DataFrame(
        group_rows,
        columns=[
            "group",
            "region",
            "first_node_id",
            "n_cells",
            "n_clusters",
            "n_segments",
            "segment",
        ],
    ).astype(
        {
            "group": np.int64,
            "first_node_id": np.int64,
            "n_cells": np.int64,
            "n_clusters": np.int64,
            "n_segments": np.int64,
            "segment": np.int64,
        }
    )
    empty_syn = pd.DataFrame(
        {"node_id": [], "group": [], "cluster": [], "region": [], "segment": []}
    ).astype({"node_id": np.int64, "group": np.int64, "cluster": np.int64, "segment": np.int64})
    empty_cl = pd.DataFrame(
        {"group": [], "cluster": [], "n_segments": [], "segment": []}, dtype=np.int64
    )
    synapses = pd.concat(syn_frames, ignore_index=True) if syn_frames else empty_syn
    clusters = pd.concat(cl_frames, ignore_index=True) if cl_frames else empty_cl
    return FunctionalGroups(
        synapses=_with_location(synapses, segs),
        groups=_with_location(groups, segs),
        clusters=_with_location(clusters, segs),
    )
