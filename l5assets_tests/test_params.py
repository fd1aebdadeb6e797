"""Param sets: validation names the field and the allowed range; counts match SPEC section 3."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from l5assets import params as P
from l5assets import rng


@pytest.fixture(scope="module")
def reference_raw() -> dict:
    return json.loads(P.param_set_path("L5_reference").read_text())


def test_reference_counts_match_spec() -> None:
    p = P.load_param_set("L5_reference")
    c = p.counts
    assert (c.exc_basal, c.exc_apic, c.exc_total) == (2008, 3214, 5222)
    assert (c.som_basal, c.som_apic, c.som_total) == (378, 136, 514)
    assert (c.pv_soma, c.pv_prox, c.pv_total) == (53, 37, 90)
    assert c.clusters_per_group == 23
    assert p.stop == 30 and p.dt == 0.1 and p.inh_shift == 2


def test_shipped_param_sets_are_valid() -> None:
    names = P.list_param_sets()
    assert {"L5_reference", "L5_quick", "L5_rhythmic"} <= set(names)
    quick = P.load_param_set("L5_quick")
    assert quick.stop == 1
    rhythmic = P.load_param_set("L5_rhythmic")
    assert rhythmic.proximal.rhythm is not None and rhythmic.distal.rhythm is not None
    assert quick.proximal.rhythm is None


def test_none_string_and_null_hash_the_same(reference_raw: dict) -> None:
    a = copy.deepcopy(reference_raw)
    b = copy.deepcopy(reference_raw)
    b["file_current_clamp"]["input_file"] = None
    b["inh_frs"]["proximal"]["rhythmicity"] = {"f": None, "mod": None}
    assert P.validate_params(a).params_hash == P.validate_params(b).params_hash


def test_hash_changes_with_any_value(reference_raw: dict) -> None:
    a = P.validate_params(reference_raw).params_hash
    b = copy.deepcopy(reference_raw)
    b["groups"]["cluster_radius"] = 11
    assert P.validate_params(b).params_hash != a


@pytest.mark.parametrize(
    "path, value, field, allowed",
    [
        (("divergence", "exc", "min"), 0, "divergence.exc.min", "[1, 1000]"),
        (("divergence", "exc", "max"), 1, "divergence.exc.max", "[2, 1000]"),
        (("time", "stop"), -1, "time.stop", "(0.0, 3600"),
        (("dt",), "0.1", "dt", "must be a number"),
        (("groups", "cluster_radius"), 500, "groups.cluster_radius", "(0, 100.0]"),
        (("inh_shift",), 2.5, "inh_shift", "integer"),
        (("syn_density", "exc"), 0, "syn_density.exc", "(0, 100]"),
        (("record_cellvars", "locs"), ["nowhere"], "record_cellvars.locs", "soma"),
        (("cell", "biophysics"), "NoSuchCell", "cell.biophysics", "available"),
        (("cell", "morphology"), "/no/such/file.asc", "cell.morphology", "not found"),
    ],
)
def test_bad_values_name_the_field(
    reference_raw: dict, path: tuple, value: object, field: str, allowed: str
) -> None:
    raw = copy.deepcopy(reference_raw)
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(P.ParamsError) as e:
        P.validate_params(raw, "bad")
    assert field in str(e.value)
    assert allowed in str(e.value)


def test_missing_and_unknown_keys(reference_raw: dict) -> None:
    raw = copy.deepcopy(reference_raw)
    del raw["groups"]["cells_per_group"]
    with pytest.raises(P.ParamsError, match="groups.cells_per_group' is missing"):
        P.validate_params(raw)
    raw = copy.deepcopy(reference_raw)
    raw["grups"] = {}
    with pytest.raises(
        P.ParamsError, match=r"^params file: unknown top-level key\(s\) \['grups'\]"
    ):
        P.validate_params(raw)


def test_rhythm_needs_both_and_depth_below_one(reference_raw: dict) -> None:
    raw = copy.deepcopy(reference_raw)
    raw["inh_frs"]["distal"]["rhythmicity"] = {"f": 8, "mod": "None"}
    with pytest.raises(P.ParamsError, match="inh_frs.distal.rhythmicity"):
        P.validate_params(raw)
    raw["inh_frs"]["distal"]["rhythmicity"] = {"f": 8, "mod": 1.0}
    with pytest.raises(P.ParamsError, match=r"mod': must be in \(0, 1\)"):
        P.validate_params(raw)


@pytest.mark.parametrize("seed", ["-1", "abc", 2**31, "1.5", None])
def test_bad_seeds(seed: object) -> None:
    with pytest.raises(P.ParamsError, match=r"seed: must be an integer in \[0, 2147483647\]"):
        P.validate_seed(seed)


def test_good_seeds_and_names() -> None:
    assert P.validate_seed("123") == 123 and P.validate_seed(0) == 0
    with pytest.raises(P.ParamsError, match=r"\[A-Za-z0-9_-\]"):
        P.validate_param_set_name("bad name|x")


def test_stage_streams_are_independent_and_reproducible() -> None:
    a = rng.stage_rng(123, "exc_raster").random(5)
    assert np.array_equal(a, rng.stage_rng(123, "exc_raster").random(5))
    assert not np.array_equal(a, rng.stage_rng(124, "exc_raster").random(5))
    assert not np.array_equal(a, rng.stage_rng(123, "functional_groups").random(5))
    seeds = rng.all_stage_seeds(123)
    assert len(set(seeds.values())) == len(rng.STAGES)
    assert all(0 <= s < 2**32 for s in seeds.values())


def test_reference_cell_needs_a_morphology(reference_raw: dict) -> None:
    raw = copy.deepcopy(reference_raw)
    raw["cell"]["biophysics"] = "L5PC_reference"
    with pytest.raises(P.ParamsError, match="'cell.morphology'.*no default morphology"):
        P.validate_params(raw)


def test_reference_cell_keys_are_accepted_but_hay_template_needs_a_choice(
    reference_raw: dict,
) -> None:
    raw = copy.deepcopy(reference_raw)
    raw["cell"].update(
        {
            "model_template": "hoc:L5PCtemplate",
            "segments_file": "L5Segments.csv",
            "dynamic_params": "L5PC.json",
            "model_processing": "None",
        }
    )
    assert P.validate_params(raw).biophysics == "L5PC_hay_C060114A7"  # explicit one wins
    del raw["cell"]["biophysics"]
    with pytest.raises(P.ParamsError, match="'cell.biophysics' is missing.*L5PC_reference"):
        P.validate_params(raw)


def test_som_model_choice(reference_raw: dict) -> None:
    """SOM+ synapses: the reference as it runs (SOM2PN, gbar 1 uS) unless asked otherwise."""
    raw = copy.deepcopy(reference_raw)
    assert P.validate_params(raw).som_model == "SOM2PN"
    raw.setdefault("synapses", {})["som_model"] = "SOM2PN_file_gbar"
    assert P.validate_params(raw).som_model == "SOM2PN_file_gbar"
    raw["synapses"]["som_model"] = "SOM2PN_typo"
    with pytest.raises(P.ParamsError, match="'synapses.som_model'.*SOM2PN_file_gbar"):
        P.validate_params(raw)


def test_rate_tables_option(reference_raw: dict, tmp_path) -> None:
    """`rate_tables` (default false, the exact rate equations): absent and false are one
    model with one hash; true is another model, written into the simulation config."""
    from l5assets.network.sim_config import simulation_config

    plain = P.validate_params(copy.deepcopy(reference_raw))
    off = P.validate_params({**copy.deepcopy(reference_raw), "rate_tables": False})
    on = P.validate_params({**copy.deepcopy(reference_raw), "rate_tables": True})
    assert not plain.rate_tables and not off.rate_tables and on.rate_tables
    assert plain.params_hash == off.params_hash != on.params_hash

    def section(p: P.ParamSet) -> dict:
        return simulation_config(p, {}, 1, tmp_path, populations=())["l5assets"]

    assert "rate_tables" not in section(plain)
    assert section(on)["rate_tables"] is True
    with pytest.raises(P.ParamsError, match="^params field 'rate_tables': must be true or false"):
        P.validate_params({**copy.deepcopy(reference_raw), "rate_tables": "yes"})
