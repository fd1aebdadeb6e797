"""Science core: pure, vectorised NumPy/pandas re-implementation of the study's input model.

No Dagster or NEURON here. Every stochastic function takes an `np.random.Generator` (one per
stage, from `l5assets.rng.stage_rng`) and draws in a fixed, documented order, so equal
params + seed give identical results.

- `noise`: 1/f noise rate profiles in [0.5, 1.5] (`pink_noise`).
- `functional_groups`: excitatory input cells, functional groups, clusters and synapse
  locations on a segments table (`build_functional_groups` -> `FunctionalGroups`).
- `exc_raster`: excitatory spike raster, one shared noise trace per group, Levy-stable rate
  factors per cell (`exc_raster`).
- `inh_raster`: PV+/SOM+ rasters following lagged excitation, or rhythmic
  (`inh_profile`, `inh_raster`).
- `connectivity`: inhibitory synapse counts (`norm_divergence`), excitatory weights
  (`exc_weights`).
- `spikes`: `SpikeTrains` and SONATA spike file I/O (`write_sonata_spikes`,
  `read_sonata_spikes`), atomic and byte-deterministic.
"""
