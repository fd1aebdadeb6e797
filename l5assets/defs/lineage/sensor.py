"""Sensor: register new params files as `param_set` partitions and report file changes.

Every tick it lists the params dir: a new, valid params file becomes a `param_set` dynamic
partition and is observed in the same tick; for registered param sets whose params file or
model-component files (.mod, biophysics, morphology, synaptic models) changed since the last
tick it records an observation of the source asset (`params_file`, `mechanism_files`,
`cell_model_files`, `synaptic_model_files`) with the new data version, so the UI marks the
affected partitions stale without a manual "Observe".
The cursor holds the last reported versions (JSON {param_set: [one per SOURCE_ASSETS]}).
"""

from __future__ import annotations

import json

import dagster as dg

from l5assets.params import ParamsError, list_param_sets, load_param_set

from ..dagster_private import DATA_VERSION_TAG
from ..params.sources import SOURCE_ASSETS, current_versions
from ..partitions import PARAM_SET_DIM
from ..resources import CellModelResource, StorageResource

SENSOR_NAME = "params_files_sensor"


def _observation(asset: str, partition: str, version: str) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=asset, partition=partition, tags={DATA_VERSION_TAG: version}
    )


@dg.sensor(
    name=SENSOR_NAME,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Registers every new valid params file as a param_set partition and records a new data "
        "version of params_file / mechanism_files / cell_model_files / synaptic_model_files "
        "when a params, .mod, biophysics, morphology or synaptic model file changes."
    ),
)
def params_files_sensor(
    context: dg.SensorEvaluationContext, storage: StorageResource, cell_model: CellModelResource
) -> dg.SensorResult:
    """New params files -> partitions; changed files -> observations (see module doc)."""
    known = set(context.instance.get_dynamic_partitions(PARAM_SET_DIM))
    new: list[str] = []
    for name in list_param_sets(storage.params_path()):
        if name in known:
            continue
        try:
            load_param_set(storage.params_file(name))
        except ParamsError as e:
            # an invalid file is not registered; it is retried every tick until fixed
            context.log.warning(f"params file {name!r} not registered: {e}")
            continue
        new.append(name)

    try:
        previous = json.loads(context.cursor) if context.cursor else {}
    except json.JSONDecodeError:
        previous = {}
    # New param sets are observed in the same tick as they are registered (the daemon stores
    # the observations, then adds the partitions: an observation is keyed by partition name
    # and needs no registered partition), so they are never shown without a data version.
    versions = current_versions(storage, cell_model, sorted(known | set(new)))
    events: list[dg.AssetObservation] = []
    for name, now in versions.items():
        old = previous.get(name) or []
        for i, (asset, version) in enumerate(zip(SOURCE_ASSETS, now, strict=True)):
            if version is not None and (i >= len(old) or version != old[i]):
                events.append(_observation(asset, name, version))
    if new:
        context.log.info(f"registering param sets {new}")
    return dg.SensorResult(
        dynamic_partitions_requests=(
            [dg.AddDynamicPartitionsRequest(PARAM_SET_DIM, new)] if new else []
        ),
        asset_events=events,
        cursor=json.dumps({k: list(v) for k, v in versions.items()}, sort_keys=True),
    )
