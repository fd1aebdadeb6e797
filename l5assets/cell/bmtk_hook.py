"""Register our cell builder with BMTK BioNet (1.2.0) as a cell-model function.

Directive: a biophysical node whose ``model_template`` is ``"l5assets:L5Cell"`` (any name after
the colon works; the directive is the part before it) is built by `load_l5_cell`, which calls
`build_cell` and returns the `L5Cell` as BMTK's ``hobj``.

What the node must carry (NetworkBuilder.add_nodes):
- ``model_type="biophysical"``, ``model_template=MODEL_TEMPLATE``;
- ``dynamics_params="<cell>.json"``, e.g. "L5PC_bbp.json": BMTK loads it from the config's
  ``components.biophysical_neuron_models_dir``, which must be `l5assets.paths.cells_dir()`,
  and hands us the parsed dict (a biophysics file, see `l5assets.cell.biophysics`);
- ``morphology``: an absolute path to an .asc/.swc file, or omitted/None for the biophysics
  file's default (the packaged C060114A7.asc of L5PC_bbp). With ``morphologies_dir`` set,
  BMTK joins it with the value (an absolute path survives the join);
- no ``model_processing`` (the builder already replaces the axon and applies biophysics).

The runner must, before building the network: call `register()`, load the project's
mechanisms (`l5assets.cell.mechanisms.load_mechanisms(compile_mechanisms())`; leave the
config's ``mechanisms_dir`` unset so BMTK does not load a second library), and set ``run.dL``
(the segment length target; it is passed to the builder, and BMTK's own re-segmentation with
the same dL is then a no-op) and ``conditions.celsius`` to the biophysics file's temperature
(34 C).

What BMTK uses from the returned object: ``hobj.all`` (iterated: a section's index is its
``sec_id``; segment properties and synapse placement follow this order), ``hobj.soma``
(``soma[0](0.5)`` for the spike detector, recordings and clamps; its 3-d points for the cell
position) and section names (``<cell>.<type>[i]``, type = soma/dend/apic/axon).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from l5assets.cell.biophysics import BiophysicsError, load_biophysics, parse_biophysics
from l5assets.cell.builder import L5Cell, build_cell

DIRECTIVE = "l5assets"
TEMPLATE_NAME = "L5Cell"
MODEL_TEMPLATE = f"{DIRECTIVE}:{TEMPLATE_NAME}"
DEFAULT_DL = 5.0


def _node_value(node: Any, key: str) -> Any:
    try:
        return node[key] if key in node else None
    except (KeyError, TypeError):
        return None


def cell_from_node(
    dynamics_params: Any, morphology: Any, dl: float = DEFAULT_DL, template: str = TEMPLATE_NAME
) -> L5Cell:
    """Build our cell for one biophysical node from its `dynamics_params` (the parsed
    biophysics dict BMTK hands over, or a biophysics file name) and `morphology` (a path or
    None for the biophysics file's default), with segment length target `dl`.

    Shared by the BMTK hook and the project's own driver (`l5assets.simulation.driver`), so
    both build the same cell from the same node.
    """
    if isinstance(dynamics_params, Mapping):
        bio = parse_biophysics(dynamics_params)
        try:  # point at the shipped file when the dict is one of ours, for provenance
            shipped = load_biophysics(bio.name)
            if shipped.raw == bio.raw:
                bio = shipped
        except BiophysicsError:
            pass
    elif isinstance(dynamics_params, str) and dynamics_params:
        bio = load_biophysics(dynamics_params)
    else:
        raise BiophysicsError(
            f"node with model_template '{DIRECTIVE}:{template}' needs dynamics_params "
            "naming a biophysics file (e.g. 'L5PC_bbp.json')"
        )
    return build_cell(bio, morphology, dl)


def load_l5_cell(node: Any, template_name: str, dynamics_params: Any) -> L5Cell:
    """BMTK cell-model function: build our cell for one SONATA node."""
    morphology = getattr(node, "morphology_file", None)
    if morphology is None:
        morphology = _node_value(node, "morphology")
    dl = DEFAULT_DL
    network = getattr(node, "network", None)
    if network is not None and getattr(network, "dL", None):
        dl = float(network.dL)
    return cell_from_node(dynamics_params, morphology, dl, template_name)


def register(overwrite: bool = True) -> None:
    """Make BMTK BioNet build nodes with model_template 'l5assets:...' through our builder."""
    from bmtk.simulator.bionet.pyfunction_cache import add_cell_model

    add_cell_model(load_l5_cell, directive=DIRECTIVE, model_type="biophysical", overwrite=overwrite)
