"""Voltage traces of one protocol: in memory, and saved as deterministic .npy + .json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ProtocolTraces:
    """Voltage traces of one protocol: v[sweep][site] sampled every `dt` ms from t = 0."""

    protocol: str
    dt: float
    sweeps: list[str]
    sites: list[str]
    data: np.ndarray  # (n_sweeps, n_sites, n_samples), mV
    site_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    runtime_s: float = 0.0

    @property
    def t(self) -> np.ndarray:
        return np.arange(self.data.shape[2]) * self.dt

    def v(self, sweep: str, site: str) -> np.ndarray:
        return self.data[self.sweeps.index(sweep), self.sites.index(site)]

    def save(self, folder: Path) -> tuple[Path, Path]:
        """Write `<protocol>_traces.npy` and `<protocol>_traces.json` (both deterministic)."""
        from l5assets.storage import atomic_path, atomic_write_text

        folder = Path(folder)
        npy = folder / f"{self.protocol}_traces.npy"
        meta = folder / f"{self.protocol}_traces.json"
        with atomic_path(npy) as tmp, open(tmp, "wb") as f:
            np.save(f, self.data)
        atomic_write_text(meta, json.dumps(self.meta(), indent=2, sort_keys=True) + "\n")
        return npy, meta

    def meta(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "dt": self.dt,
            "sweeps": self.sweeps,
            "sites": self.sites,
            "site_info": self.site_info,
            "shape": list(self.data.shape),
        }

    @classmethod
    def load(cls, folder: Path, protocol: str) -> ProtocolTraces:
        folder = Path(folder)
        meta = json.loads((folder / f"{protocol}_traces.json").read_text())
        data = np.load(folder / f"{protocol}_traces.npy")
        return cls(protocol, meta["dt"], meta["sweeps"], meta["sites"], data, meta["site_info"])
