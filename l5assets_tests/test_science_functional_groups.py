"""Functional groups and clusters on a toy morphology with the reference params."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from l5assets.params import ParamSet
from l5assets.rng import stage_rng
from l5assets.science.functional_groups import (
    FunctionalGroups,
    build_functional_groups,
    group_sizes,
)

XYZ = ["coord_x", "coord_y", "coord_z"]


@pytest.fixture(scope="module")
def fg(toy_segments: pd.DataFrame, params_reference: ParamSet) -> FunctionalGroups:
    return build_functional_groups(
        toy_segments, params_reference, stage_rng(123, "functional_groups")
    )


def test_reference_param_counts(params_reference: ParamSet) -> None:
    c = params_reference.counts
    assert (c.exc_basal, c.exc_apic, c.exc_total) == (2008, 3214, 5222)
    assert (c.pv_soma, c.pv_prox, c.pv_total) == (53, 37, 90)
    assert (c.som_basal, c.som_apic, c.som_total) == (378, 136, 514)
    assert c.clusters_per_group == 23


def test_group_and_node_counts(fg: FunctionalGroups) -> None:
    g = fg.groups
    assert fg.n_cells == 5222
    basal, apic = g[g.region == "basal"], g[g.region == "apic"]
    assert len(basal) == 20 and basal.n_cells.sum() == 2008
    assert len(apic) == 32 and apic.n_cells.sum() == 3214
    assert (basal.n_cells == 101).sum() == 8 and (apic.n_cells == 101).sum() == 14
    assert set(g.n_cells) == {100, 101}
    assert (g.n_clusters == 23).all()
    # basal first, node ids contiguous from 0, group ids 0..51
    assert list(g.group) == list(range(52))
    assert list(g.first_node_id) == list(np.concatenate([[0], np.cumsum(g.n_cells)[:-1]]))
    assert list(g.region) == ["basal"] * 20 + ["apic"] * 32
    s = fg.synapses
    assert np.array_equal(np.unique(s.node_id), np.arange(5222))
    assert np.all(np.diff(s.node_id) >= 0)
    ng = fg.node_groups()
    assert len(ng) == 5222 and ng.group.iloc[2007] == 19 and ng.group.iloc[2008] == 20
    # every synapse's group is the node's group
    assert np.array_equal(ng.group.to_numpy()[s.node_id], s.group.to_numpy())


def test_geometry(
    fg: FunctionalGroups, toy_segments: pd.DataFrame, params_reference: ParamSet
) -> None:
    s, cl, g = fg.synapses, fg.clusters, fg.groups
    centre = cl.set_index(["group", "cluster"]).loc[list(zip(s.group, s.cluster, strict=True))]
    d_syn = np.linalg.norm(s[XYZ].to_numpy() - centre[XYZ].to_numpy(), axis=1)
    assert d_syn.max() <= params_reference.cluster_radius
    gc = g.set_index("group").loc[cl.group]
    d_cl = np.linalg.norm(cl[XYZ].to_numpy() - gc[XYZ].to_numpy(), axis=1)
    assert d_cl.max() <= params_reference.group_radius
    # cluster centres within a group are distinct segments
    assert not cl.duplicated(["group", "segment"]).any()
    # location columns are those of the segment row
    seg = toy_segments.iloc[s.segment]
    assert np.array_equal(seg.bmtk_id.to_numpy(), s.bmtk_id.to_numpy())
    assert np.array_equal(seg.x.to_numpy(), s.x.to_numpy())
    # candidates: basal = dend >= 50 um, apical = apic
    basal = s.region == "basal"
    assert (seg.type.to_numpy()[basal.to_numpy()] == "dend").all()
    assert (s.distance[basal] >= 50).all()
    assert (seg.type.to_numpy()[~basal.to_numpy()] == "apic").all()
    # the 50-um boundary is really used: basal segments below 50 um exist but get no synapse
    assert ((toy_segments.type == "dend") & (toy_segments.distance < 50)).any()


def test_synapses_per_cell(fg: FunctionalGroups, params_reference: ParamSet) -> None:
    s = fg.synapses
    per_cell = s.groupby("node_id").size()
    assert per_cell.min() >= params_reference.exc_div_min
    assert per_cell.max() <= params_reference.exc_div_max
    assert set(per_cell) == set(range(2, 9))
    assert abs(per_cell.mean() - 5.0) < 0.15  # uniform on 2..8: sd 2, n 5222
    assert not s.duplicated(["node_id", "cluster"]).any()  # distinct clusters per cell
    # every cluster gets used and segments vary within a cluster
    assert s.groupby("group").cluster.nunique().min() == 23
    assert s.groupby(["group", "cluster"]).segment.nunique().max() > 1


def test_deterministic(
    fg: FunctionalGroups, toy_segments: pd.DataFrame, params_reference: ParamSet
) -> None:
    again = build_functional_groups(
        toy_segments, params_reference, stage_rng(123, "functional_groups")
    )
    pd.testing.assert_frame_equal(fg.synapses, again.synapses)
    pd.testing.assert_frame_equal(fg.groups, again.groups)
    other = build_functional_groups(
        toy_segments, params_reference, stage_rng(124, "functional_groups")
    )
    assert not fg.groups.segment.equals(other.groups.segment)


def test_group_sizes() -> None:
    assert list(group_sizes(2008, 100)) == [101] * 8 + [100] * 12
    assert list(group_sizes(250, 100)) == [125, 125]  # the reference would drop 48 cells
    assert list(group_sizes(50, 100)) == [50]
    assert group_sizes(0, 100).size == 0


def test_tiny_morphology_uses_available_clusters(
    tiny_segments: pd.DataFrame, params_quick: ParamSet
) -> None:
    p = dataclasses.replace(params_quick, basal_dist=60.0, apic=30.0, cells_per_group=10)
    assert (p.counts.exc_basal, p.counts.exc_apic, p.counts.clusters_per_group) == (25, 12, 2)
    out = build_functional_groups(tiny_segments, p, stage_rng(1, "functional_groups"))
    assert out.n_cells == 37
    assert list(out.groups.n_cells) == [13, 12, 12]
    assert (out.groups.n_clusters == 2).all()
    # fewer segments than clusters: segments are 10 um apart, a 5-um group sphere holds one
    q = dataclasses.replace(p, cells_per_group=100, cluster_radius=5.0, group_radius=5.0)
    assert q.counts.clusters_per_group == 23
    out = build_functional_groups(tiny_segments, q, stage_rng(1, "functional_groups"))
    assert (out.groups.n_clusters == 1).all() and (out.groups.n_segments == 1).all()
    per_cell = out.synapses.groupby("node_id").size()
    assert (per_cell == 1).all() and len(per_cell) == out.n_cells


def test_no_candidates_is_an_error(tiny_segments: pd.DataFrame, params_quick: ParamSet) -> None:
    no_apic = tiny_segments[tiny_segments.type != "apic"]
    with pytest.raises(ValueError, match="no 'apic' segments"):
        build_functional_groups(no_apic, params_quick, stage_rng(1, "functional_groups"))
    with pytest.raises(ValueError, match="lacks column"):
        build_functional_groups(
            tiny_segments.drop(columns="coord_z"), params_quick, stage_rng(1, "functional_groups")
        )
