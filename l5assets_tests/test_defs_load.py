"""The code location loads: every asset, its partitioning, group, kinds, code version, deps,
the jobs, resources and the workspace file."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from l5assets import graph as G
from l5assets import paths
from l5assets.definitions import defs
from l5assets.defs.partitions import param_set_partitions, run_partitions
from l5assets.defs.resources import NeuronRuntime, StorageResource

SHARED = set(G.SHARED_ASSETS)
SEEDED = set(G.SEED_ASSETS)


def test_graph_spec_is_consistent():
    """The spec itself: every parent is a node, sources are param-set-level, no cycles."""
    seen: set[str] = set()
    for node in G.ASSETS:  # listed in topological order
        assert set(node.deps) <= seen, node.name
        assert set(node.source_deps) <= set(G.SOURCE_ASSETS), node.name
        seen.add(node.name)
    assert SHARED.isdisjoint(SEEDED) and SHARED | SEEDED == seen
    # what the rest of the project reads from the spec
    assert G.PARAMS_READERS[G.COMPILED_MECHANISMS] is False
    assert G.node(G.SIMULATION_OUTPUTS).source_deps == (
        G.PARAMS_FILE,
        G.CELL_MODEL_FILES,
        G.SYNAPTIC_MODEL_FILES,
    )


@pytest.fixture(scope="module")
def graph():
    return defs.resolve_asset_graph()


def test_definitions_validate_loadable():
    dg.Definitions.validate_loadable(defs)


def test_every_domain_is_merged():
    from l5assets import definitions

    merged = set(defs.resolve_asset_graph().get_all_asset_keys())
    for domain in definitions.DOMAINS:
        own = {
            k
            for a in (domain.defs.assets or [])
            for k in (a.keys if isinstance(a, dg.AssetsDefinition) else [a.key])
        }
        assert own <= merged, domain.__name__
        assert own or domain.defs.schedules or domain.defs.sensors, domain.__name__
    # the whole spec is defined, nothing more outside the cell validation and the sweeps
    names = {k.to_user_string() for k in merged}
    assert {n for n in names if not n.startswith("validation_")} == set(G.NODES) | {
        "cross_seed_summary"
    }


def test_cross_seed_summary_maps_a_param_set_to_all_its_seeds(graph):
    node = graph.get(dg.AssetKey("cross_seed_summary"))
    assert node.group_name == "sweep" and node.code_version and node.kinds
    dep = dg.AssetKey(G.SIMULATION_SUMMARY)
    assert dep in node.parent_keys
    mapping = node.partition_mappings[dep]
    assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping)
    assert mapping.partition_dimension_name == G.PARAM_SET_DIM


def test_every_asset_is_documented_grouped_kinded_and_versioned(graph):
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert SHARED | SEEDED | {"params_file"} <= keys
    for name in SHARED | SEEDED:
        node = graph.get(dg.AssetKey(name))
        assert node.group_name == G.node(name).group, name
        assert node.code_version, name
        assert node.kinds, name
        assert node.description and len(node.description) > 40, name
    for name in G.SOURCE_ASSETS:
        src = graph.get(dg.AssetKey(name))
        assert src.is_observable and src.group_name == "params", name
        assert src.partitions_def == param_set_partitions, name


def test_partitioning_and_mappings(graph):
    for name in SHARED:
        assert graph.get(dg.AssetKey(name)).partitions_def == param_set_partitions
    for name in SEEDED:
        assert graph.get(dg.AssetKey(name)).partitions_def == run_partitions
    # seed-independent parents feed every seed through the param_set dimension
    m = graph.get_partition_mapping(dg.AssetKey("functional_groups"), dg.AssetKey("segments_table"))
    assert isinstance(m, dg.MultiToSingleDimensionPartitionMapping)
    assert m.partition_dimension_name == "param_set"
    m = graph.get_partition_mapping(
        dg.AssetKey("simulation_outputs"), dg.AssetKey("compiled_mechanisms")
    )
    assert isinstance(m, dg.MultiToSingleDimensionPartitionMapping)


def test_dependencies(graph):
    """The loaded Dagster graph has exactly the spec's edges (sources included), and every
    parent below a seed-level asset's level fans out through the param_set dimension."""
    for node in G.ASSETS:
        key = dg.AssetKey(node.name)
        got = {p.to_user_string() for p in graph.get(key).parent_keys}
        assert got == set(node.parents), (node.name, got ^ set(node.parents))
        for parent in node.parents:
            m = graph.get_partition_mapping(key, dg.AssetKey(parent))
            fan_out = node.level == "seed" and G.node(parent).level != "seed"
            assert isinstance(m, dg.MultiToSingleDimensionPartitionMapping) == fan_out, (
                node.name,
                parent,
            )
    # a few edges spelled out, against a spec that drifts with the code it describes
    parents = {n.name: set(n.parents) for n in G.ASSETS}
    assert parents["compiled_mechanisms"] == {"mechanism_files"}
    assert parents["network"] == {"params_file", "synaptic_model_files", "functional_groups"}


def test_jobs_and_executor():
    cell_job = defs.resolve_job_def("cell_job")
    seed_job = defs.resolve_job_def("seed_job")
    assert cell_job.partitions_def == param_set_partitions
    assert seed_job.partitions_def == run_partitions
    assert cell_job.executor_def.name == "in_process"
    seed_keys = {k.to_user_string() for k in seed_job.asset_layer.executable_asset_keys}
    assert seed_keys == SEEDED
    observe = defs.resolve_job_def("observe_sources_job")
    assert observe is not None


def test_resources_fields_take_env_vars(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("L5_TEST_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("L5_TEST_THREADS", "3")

    @dg.asset
    def probe(storage: StorageResource, neuron: NeuronRuntime) -> dg.MaterializeResult:
        return dg.MaterializeResult(
            metadata={"root": str(storage.root_path()), "threads": neuron.threads}
        )

    with dg.instance_for_test() as instance:
        res = dg.materialize(
            [probe],
            instance=instance,
            resources={
                "storage": StorageResource(root=dg.EnvVar("L5_TEST_ROOT")),
                "neuron": NeuronRuntime(threads=dg.EnvVar.int("L5_TEST_THREADS")),
            },
        )
        md = res.get_asset_materialization_events()[0].materialization.metadata
        assert md["root"].value == str(tmp_path / "root")
        assert md["threads"].value == 3
    # unset fields fall back to the environment-aware defaults of l5assets.paths
    monkeypatch.setenv("L5ASSETS_STORAGE_ROOT", str(tmp_path / "other"))
    assert StorageResource().root_path() == tmp_path / "other"
    assert StorageResource().params_path() == paths.params_dir()


def test_workspace_yaml_loads_the_code_location():
    text = (paths.PROJECT_ROOT / "workspace.yaml").read_text()
    assert "module_name: l5assets.definitions" in text
    # what `dagster dev -w workspace.yaml` does first: load the module and list its assets
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "asset", "list", "-m", "l5assets.definitions"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=paths.PROJECT_ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for name in SHARED | SEEDED:
        assert name in out.stdout


def test_code_versions_come_from_the_graph_spec():
    """The definitions' code versions are the graph's, which `status --no-dagster` uses."""
    from l5assets import graph as G

    graph = defs.resolve_asset_graph()
    for name, version in G.CODE_VERSIONS.items():
        assert version, name
        assert graph.get(dg.AssetKey(name)).code_version == version, name
