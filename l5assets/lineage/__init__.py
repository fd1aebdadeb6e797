"""Lineage: provenance manifests beside every output, and offline trace / diff / status.

- `l5assets.lineage.manifest.write_manifest(...)`: write `manifest.json` beside an output.
- `l5assets.lineage.trace.trace(path)` / `format_trace(d)`: walk from any output back to its
  params file and seed through the manifests.
- `l5assets.lineage.diff.diff(a, b)` / `format_diff(d)`: which params, seeds, code or inputs
  differ between two outputs.
- `l5assets.lineage.status.status(...)` / `format_status(rows)`: each param set x seed as
  missing / fresh / stale (with reasons), from manifests on disk (+ a Dagster instance if given).

Submodules are imported explicitly (no Dagster import anywhere in this package).
"""
