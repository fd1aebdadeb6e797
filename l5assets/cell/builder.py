"""Build the L5 pyramidal cell in NEURON from a morphology and a biophysics file.

Steps (the order matters for the gradients):
1. import the morphology (SWC / ASC) into this cell's own Python sections;
2. replace the reconstructed axon by the biophysics file's stub (default two 30-um cylinders);
3. give every section an odd number of segments from dL: nseg = 1 + 2*int(L/(2*dL)), the rule
   BMTK's `set_segment_dl` applies, so BMTK re-segmenting with the same dL changes nothing;
4. apply the biophysics region by region (all, soma, dend, apic, axon), evaluating distance
   rules per segment at its path distance from soma[0](distance_origin_x).

`L5Cell.all` lists the sections in BMTK's order (soma, basal, apical, axon stub): BMTK's
section id (`sec_id`) of a section is its index in this list.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from l5assets.cell.biophysics import (
    DEFAULT_CELL,
    ION_NAMES,
    Biophysics,
    BiophysicsError,
    Distribution,
    load_biophysics,
)
from l5assets.cell.morphology import import_morphology, resolve_morphology

_COUNTER = itertools.count()


def nseg_for(length: float, dL: float) -> int:
    """Odd number of segments honouring the target segment length dL (BMTK's rule)."""
    return 1 + 2 * int(length / (2.0 * dL))


class L5Cell:
    """One instantiated cell: section lists by type plus `all` in BMTK order.

    Attributes: soma, dend (basal), apic, axon (lists of nrn.Section), all, morphology_path,
    biophysics_path (None if built from an in-memory dict), biophysics (validated spec), dL,
    celsius, v_init, distance_origin (the soma segment distances are measured from),
    longest_apical_path (um, from that origin; 0 if no apical dendrite).
    """

    def __init__(self, biophysics: Biophysics, morphology_path: Path, dL: float) -> None:
        self._index = next(_COUNTER)
        self.biophysics = biophysics
        self.biophysics_path = biophysics.path
        self.morphology_path = morphology_path
        self.dL = float(dL)
        self.celsius = biophysics.celsius
        self.v_init = biophysics.v_init
        self.soma: list = []
        self.dend: list = []
        self.apic: list = []
        self.axon: list = []
        self.all: list = []
        self.longest_apical_path = 0.0

    def __repr__(self) -> str:  # NEURON uses it to name the sections: "L5Cell[0].soma[0]"
        return f"L5Cell[{self._index}]"

    @property
    def distance_origin(self) -> Any:
        """The segment that distribution distances are measured from."""
        if self.biophysics.distance_origin_section == "apic" and self.apic:
            return self.apic[0](0.0)
        return self.soma[0](self.biophysics.distance_origin_x)

    def sections_of(self, region: str) -> list:
        """Sections of a region name ('all', 'soma', 'dend', 'apic', 'axon')."""
        return list(self.all) if region == "all" else list(getattr(self, region))

    def section_type(self, sec: Any) -> str:
        """'soma' | 'dend' | 'apic' | 'axon' of one of this cell's sections."""
        return sec.name().split(".")[-1].split("[")[0]

    @property
    def nseg_total(self) -> int:
        return int(sum(sec.nseg for sec in self.all))


def _replace_axon(cell: L5Cell) -> None:
    from neuron import h

    for sec in cell.axon:
        h.delete_section(sec=sec)
    stub = cell.biophysics.axon_stub
    cell.axon = [h.Section(name=f"axon[{i}]", cell=cell) for i in range(stub.n_sections)]
    parent = cell.soma[0](stub.attach_x)
    for sec, diam in zip(cell.axon, stub.diams, strict=True):
        sec.L = stub.length
        sec.diam = diam
        sec.connect(parent, 0.0)
        parent = sec(1.0)


def _ensure_mechanisms(names: list[str]) -> None:
    """Load the project's mechanism library if a needed mechanism is unknown to NEURON."""
    from neuron import h

    def missing() -> list[str]:
        mt = h.MechanismType(0)
        known = set()
        sref = h.ref("")
        for i in range(int(mt.count())):
            mt.select(i)
            mt.selected(sref)
            known.add(sref[0])
        return [n for n in names if n not in known]

    if not missing():
        return
    from l5assets.cell import mechanisms

    if mechanisms.loaded_library() is None:  # none of ours loaded: compile (cached), load
        mechanisms.load_mechanisms(mechanisms.compile_mechanisms())
    still = missing()
    if still:
        raise BiophysicsError(
            f"mechanisms {still} are not available in NEURON (not in the loaded library "
            f"{mechanisms.loaded_library() or 'none'})"
        )


def _set_param(seg: Any, mech: str, param: str, value: float, where: str) -> None:
    try:
        setattr(getattr(seg, mech), param, value)
    except (AttributeError, NameError, LookupError) as e:
        raise BiophysicsError(f"field '{where}': cannot set {mech}.{param}: {e}") from e


def apply_biophysics(cell: L5Cell) -> None:
    """Insert mechanisms and set parameters region by region (the cell's segments are final)."""
    from neuron import h

    bio = cell.biophysics
    _ensure_mechanisms(bio.mechanism_names())
    origin = cell.distance_origin
    cell.longest_apical_path = max((h.distance(origin, sec(1.0)) for sec in cell.apic), default=0.0)
    norm = cell.longest_apical_path or None
    for region, spec in bio.regions.items():
        secs = cell.sections_of(region)
        for sec in secs:
            if spec.Ra is not None:
                sec.Ra = spec.Ra
            if spec.cm is not None:
                sec.cm = spec.cm
            for mech in spec.mechanisms:
                try:
                    sec.insert(mech)
                except ValueError as e:
                    raise BiophysicsError(
                        f"biophysics {bio.name!r} field 'regions.{region}.mechanisms.{mech}': {e}"
                    ) from e
        for mech, params in spec.mechanisms.items():
            for param, dist in params.items():
                where = f"regions.{region}.mechanisms.{mech}.{param}"
                _apply_distribution(secs, mech, param, dist, origin, norm, where)
    # reversal potentials last: they only exist once a mechanism uses the ion
    for region, spec in bio.regions.items():
        for sec in cell.sections_of(region):
            for erev, val in spec.ions.items():
                if h.ismembrane(f"{ION_NAMES[erev]}_ion", sec=sec):
                    setattr(sec, erev, val)


def _apply_distribution(
    secs: list,
    mech: str,
    param: str,
    dist: Distribution,
    origin: Any,
    norm: float | None,
    where: str,
) -> None:
    from neuron import h

    segs = [seg for sec in secs for seg in sec]
    if not segs:
        return
    if dist.uses_distance:
        d = np.fromiter((h.distance(origin, seg) for seg in segs), float, len(segs))
        try:
            values = dist.evaluate(d, norm)
        except BiophysicsError as e:
            raise BiophysicsError(f"field '{where}': {e}") from e
    else:
        values = np.full(len(segs), dist.value)
    for seg, v in zip(segs, values, strict=True):
        _set_param(seg, mech, param, float(v), where)


def build_cell(
    biophysics: str | Path | Biophysics = DEFAULT_CELL,
    morphology: str | Path | None = None,
    dL: float = 5.0,
    set_celsius: bool = True,
) -> L5Cell:
    """Build the cell: morphology (default: the biophysics file's packaged one), axon stub,
    nseg from dL, biophysics. Loads the project's mechanisms if needed; sets h.celsius to the
    biophysics file's temperature unless `set_celsius` is False.
    """
    from neuron import h

    if not dL > 0:
        raise ValueError(f"dL must be > 0, got {dL}")
    bio = load_biophysics(biophysics)
    morph = resolve_morphology(bio, morphology)
    cell = L5Cell(bio, morph, dL)
    found = import_morphology(morph, cell)
    cell.soma, cell.dend, cell.apic = found["soma"], found["dend"], found["apic"]
    cell.axon = found["axon"]
    _replace_axon(cell)
    # BMTK order: soma, basal, apical, then the axon stub (as a template appends it last)
    cell.all = [*cell.soma, *cell.dend, *cell.apic, *cell.axon]
    h.define_shape()  # 3-d points for the stub, needed for coordinates (BMTK needs them too)
    for sec in cell.all:
        sec.nseg = nseg_for(sec.L, dL)
    apply_biophysics(cell)
    if set_celsius:
        h.celsius = bio.celsius
    return cell
