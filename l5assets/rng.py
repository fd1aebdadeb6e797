"""Per-stage random streams.

Each stage draws from its own stream spawned from (seed, stage name), so that changing one
stage's code or draw count never shifts another stage's draws (unlike the reference, which
re-seeds numpy's global generator with seed + k before every stage).
"""

from __future__ import annotations

import zlib

import numpy as np

# Stage names are part of the data contract: renaming one changes that stage's draws.
STAGES = (
    "functional_groups",
    "exc_raster",
    "inh_raster_proximal",
    "inh_raster_distal",
    "inh_connectivity",
    "synapse_weights",
    "synapse_release",
)


def stage_key(stage: str) -> int:
    """Stable 32-bit key of a stage name (crc32, independent of Python's hash seed)."""
    return zlib.crc32(stage.encode())


def stage_seed_sequence(seed: int, stage: str) -> np.random.SeedSequence:
    """SeedSequence for one stage of one seed."""
    return np.random.SeedSequence(entropy=int(seed), spawn_key=(stage_key(stage),))


def stage_rng(seed: int, stage: str) -> np.random.Generator:
    """A fresh PCG64 generator for one stage of one seed."""
    return np.random.Generator(np.random.PCG64(stage_seed_sequence(seed, stage)))


def stage_seed(seed: int, stage: str) -> int:
    """A 32-bit integer seed for one stage (for NEURON's Random123 ids and the manifest)."""
    return int(stage_seed_sequence(seed, stage).generate_state(1, dtype=np.uint32)[0])


def all_stage_seeds(seed: int) -> dict[str, int]:
    """Every stage's derived integer seed, for provenance records."""
    return {s: stage_seed(seed, s) for s in STAGES}
