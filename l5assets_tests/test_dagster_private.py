"""The private Dagster APIs behind `l5assets.defs.dagster_private` still work as used: this is
the test that fails first when a Dagster upgrade moves or changes one of them."""

import dagster as dg

from l5assets.defs.dagster_private import DATA_VERSION_TAG, is_valid_cron, stale_status


def test_cron_validation():
    assert is_valid_cron("0 3 * * *")
    assert not is_valid_cron("not a cron")
    assert not is_valid_cron("61 3 * * *")


def test_data_version_tag_is_what_observations_carry():
    assert DATA_VERSION_TAG == "dagster/data_version"
    obs = dg.AssetObservation(asset_key="src", tags={DATA_VERSION_TAG: "abc"})
    assert obs.tags[DATA_VERSION_TAG] == "abc"


def test_stale_status_follows_a_source_version():
    parts = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.observable_source_asset(partitions_def=parts)
    def src() -> dg.DataVersionsByPartition:
        return dg.DataVersionsByPartition({"a": dg.DataVersion("1"), "b": dg.DataVersion("1")})

    @dg.asset(partitions_def=parts, deps=[src], code_version="1")
    def child() -> dg.MaterializeResult:
        return dg.MaterializeResult()

    defs = dg.Definitions(assets=[src, child])
    graph = defs.resolve_asset_graph()
    with dg.instance_for_test() as instance:
        for pk in ("a", "b"):
            dg.materialize([src, child], selection=[src], instance=instance, partition_key=pk)
        pairs = [("child", "a"), ("child", "b")]
        assert stale_status(instance, graph, pairs) == {p: "missing" for p in pairs}
        for pk in ("a", "b"):
            dg.materialize([src, child], selection=[child], instance=instance, partition_key=pk)
        assert stale_status(instance, graph, pairs) == {p: "fresh" for p in pairs}
        # a new data version of the source for partition "a" only
        instance.report_runless_asset_event(
            dg.AssetObservation(asset_key="src", partition="a", tags={DATA_VERSION_TAG: "2"})
        )
        assert stale_status(instance, graph, pairs) == {
            ("child", "a"): "stale",
            ("child", "b"): "fresh",
        }
