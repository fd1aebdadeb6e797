"""The segments table: one row per segment of the built cell, derived from NEURON.

Columns (binding contract): bmtk_id, x, type, sec_index, distance, coord_x, coord_y, coord_z,
diam, length.

Conventions, chosen to agree with BMTK BioNet (and with the reference pipeline's table):
- `bmtk_id` is the section's index in `cell.all`, which is exactly the `sec_id` BMTK gives
  the section (BMTK enumerates `hobj.all`);
- `distance` is NEURON's path distance from soma[0](0), the origin BMTK uses when it places
  synapses by `distance_range` (it calls `h.distance(sec=soma)`); for a soma-attached dendrite
  this is half the soma length plus the path along the dendrite;
- coordinates are segment centres interpolated along each section's 3-d points by arc length,
  with the origin at the mean of the soma's 3-d points (BMTK's `seg_coords.p05`);
- `length` is L/nseg and `diam` NEURON's segment diameter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from l5assets.cell.biophysics import DEFAULT_CELL
from l5assets.cell.builder import L5Cell, build_cell

COLUMNS: tuple[str, ...] = (
    "bmtk_id",
    "x",
    "type",
    "sec_index",
    "distance",
    "coord_x",
    "coord_y",
    "coord_z",
    "diam",
    "length",
)


def _pt3d(sec) -> tuple[np.ndarray, np.ndarray]:
    n = int(sec.n3d())
    xyz = np.array([[sec.x3d(i), sec.y3d(i), sec.z3d(i)] for i in range(n)]).reshape(n, 3)
    arc = np.array([sec.arc3d(i) for i in range(n)])
    return xyz, arc


def soma_centre(cell: L5Cell) -> np.ndarray:
    """Mean of the soma's 3-d points (BMTK's soma position)."""
    pts = np.concatenate([_pt3d(sec)[0] for sec in cell.soma])
    return pts.mean(axis=0)


def segments_table(cell: L5Cell) -> pd.DataFrame:
    """One row per segment of `cell`, in BMTK order (section by section of `cell.all`)."""
    from neuron import h

    origin = cell.soma[0](0.0)
    centre = soma_centre(cell)
    index_in_type = {}
    for kind in ("soma", "dend", "apic", "axon"):
        for i, sec in enumerate(getattr(cell, kind)):
            index_in_type[sec] = (kind, i)
    rows: dict[str, list] = {c: [] for c in COLUMNS}
    for bmtk_id, sec in enumerate(cell.all):
        kind, sec_index = index_in_type[sec]
        xyz, arc = _pt3d(sec)
        if len(arc) < 2:
            raise ValueError(f"section {sec.name()} has no 3-d points; call h.define_shape()")
        xs = np.array([seg.x for seg in sec])
        frac = arc / sec.L
        centres = np.column_stack([np.interp(xs, frac, xyz[:, k]) for k in range(3)]) - centre
        for j, seg in enumerate(sec):
            rows["bmtk_id"].append(bmtk_id)
            rows["x"].append(float(seg.x))
            rows["type"].append(kind)
            rows["sec_index"].append(sec_index)
            rows["distance"].append(h.distance(origin, seg))
            rows["coord_x"].append(centres[j, 0])
            rows["coord_y"].append(centres[j, 1])
            rows["coord_z"].append(centres[j, 2])
            rows["diam"].append(float(seg.diam))
            rows["length"].append(sec.L / sec.nseg)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df = df.astype(
        {
            "bmtk_id": "int64",
            "x": "float64",
            "type": "str",
            "sec_index": "int64",
            "distance": "float64",
            "coord_x": "float64",
            "coord_y": "float64",
            "coord_z": "float64",
            "diam": "float64",
            "length": "float64",
        }
    )
    return df


def build_segments_table(
    biophysics: str | Path = DEFAULT_CELL, morphology: str | Path | None = None, dL: float = 5.0
) -> pd.DataFrame:
    """Build the cell and return its segments table (a pure function of cell model and dL)."""
    return segments_table(build_cell(biophysics, morphology, dL))
