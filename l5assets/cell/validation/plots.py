"""One PNG per protocol (matplotlib Agg): traces with the features next to their targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from l5assets.cell.validation.features import DEND_THRESHOLD
from l5assets.cell.validation.protocols import PROTOCOLS
from l5assets.cell.validation.report import _fmt
from l5assets.cell.validation.traces import ProtocolTraces
from l5assets.simulation.figures import inline_png


def plot_protocol(tr: ProtocolTraces, evaluation: dict[str, Any], path: Path) -> Path:
    """One PNG per protocol: traces with the features next to their targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = tr.t
    rows = evaluation["features"]
    m = evaluation["measures"]
    if tr.protocol == "fi":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        c = m["fi.curve"]
        axes[0].plot(c["amps_nA"], c["rates_Hz"], "o-")
        axes[0].set(xlabel="step (nA)", ylabel="rate (Hz)", title="F-I curve (1 s steps)")
        for a in (0.5, 1.0, 1.5):
            name = f"{a:.1f}nA"
            if name in tr.sweeps:
                axes[1].plot(t, tr.v(name, "soma"), lw=0.6, label=name)
        axes[1].set(xlabel="t (ms)", ylabel="V soma (mV)")
        axes[1].legend(fontsize=7)
    elif tr.protocol == "ref_fi":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        c = m["ref_fi.curve"]
        axes[0].plot(c["amps_nA"], c["rates_Hz"], "o-")
        axes[0].set(
            xlabel="step (nA)",
            ylabel="rate over 1-3 s (Hz)",
            title="reference pipeline's F-I (dt 0.1 ms, -10 mV)",
        )
        for name in ("0.8nA", "2.0nA"):
            if name in tr.sweeps:
                axes[1].plot(t, tr.v(name, "soma"), lw=0.5, label=name)
        axes[1].set(xlabel="t (ms)", ylabel="V soma (mV)")
        axes[1].legend(fontsize=7)
    elif tr.protocol in ("steps", "hay_steps"):
        fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
        for ax, s in zip(axes, tr.sweeps, strict=True):
            ax.plot(t, tr.v(s, "soma"), lw=0.5)
            f = m.get(f"{tr.protocol}.{s}.mean_frequency")
            ax.set(ylabel="V (mV)", title=f"{s}: {_fmt(f)} Hz")
        axes[-1].set_xlabel("t (ms)")
    elif tr.protocol == "bap":
        fig, ax = plt.subplots(figsize=(8, 4.5))
        win = (t >= 285) & (t <= 340)
        for site in tr.sites:
            d = tr.site_info.get(site, {}).get("distance")
            ax.plot(t[win], tr.v("bap", site)[win], label=f"{site} ({_fmt(d)} um)")
        ax.set(xlabel="t (ms)", ylabel="V (mV)", title="bAP after a 1.9 nA x 5 ms pulse")
        ax.legend(fontsize=8)
    else:
        n = len(tr.sweeps)
        cols = min(n, 4)
        rows_n = -(-n // cols)
        fig, axes = plt.subplots(
            rows_n, cols, figsize=(3.2 * cols, 3.0 * rows_n + 0.8), sharey=True, squeeze=False
        )
        win = (t >= 285) & (t <= 420)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        axes = axes.flat[:n]
        for ax, s in zip(axes, tr.sweeps, strict=True):
            for site in tr.sites:
                ax.plot(t[win], tr.v(s, site)[win], lw=0.8, label=site)
            ax.axhline(DEND_THRESHOLD, color="grey", lw=0.5, ls=":")
            ax.set(title=s, xlabel="t (ms)")
        np.atleast_1d(axes)[0].set_ylabel("V (mV)")
        np.atleast_1d(axes)[0].legend(fontsize=7)
    text = "\n".join(
        f"{'✓' if r['passed'] else '✗'} {r['label']}: {_fmt(r['value'])} (target {r['target']})"
        for r in rows
        if r["gating"]
    )
    title = PROTOCOLS[tr.protocol].title
    pulses = tr.site_info.get("soma", {}).get("pulse_nA") or {}
    if tr.protocol == "ca_train" and pulses:
        lo = min(min(a) for a in pulses.values())
        hi = max(max(a) for a in pulses.values())
        title = (
            f"Ca2+ spike after 5 somatic APs: 2 ms pulses, each just above its threshold "
            f"({lo:.2f}-{hi:.2f} nA)"
        )
    fig.suptitle(f"{tr.protocol}: {title}", fontsize=10)
    fig.text(0.01, 0.005, text, fontsize=7, va="bottom", family="monospace")
    n_lines = text.count("\n") + 1
    fig.tight_layout(rect=(0, min(0.45, 0.03 * n_lines + 0.02), 1, 0.95))
    return _save(fig, Path(path))


def _save(fig: Any, path: Path) -> Path:
    """Full-size PNG at `path`, and a small copy kept for `inline_copy`."""
    import matplotlib.pyplot as plt

    from l5assets.storage import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    small = inline_png(fig, (60, 45, 34))  # the inline copy for the materialization
    plt.close(fig)
    _INLINE[str(path)] = small
    return path


_INLINE: dict[str, bytes | None] = {}


def inline_copy(path: Path) -> bytes | None:
    """The small PNG `plot_protocol` made beside the full one at `path` (this process), or
    None if it could not get under INLINE_MAX_BYTES."""
    return _INLINE.get(str(Path(path)))
