"""Figures of MD runs (simulation records), one set per state: g(r) of every force source over the
truth's, MSD curves, and the temperature and energy traces (NVT, then NVE).

Needs matplotlib (`pip install "mdkeras[plot]"`); `figures` says so in one line without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks import simulation_report
from mdkeras.errors import MdkerasError


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MdkerasError(
            'MD figures need matplotlib, which is not installed: pip install "mdkeras[plot]".'
        ) from None
    return plt


def _by_state(records: list[dict]) -> dict[str, dict[str, list[dict]]]:
    out: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        out.setdefault(r["state"]["name"], {}).setdefault(r["source"]["tag"], []).append(r)
    return out


def figures(directory: str | os.PathLike, out: str | os.PathLike | None = None) -> list[Path]:
    """Write `<state>-rdf.png`, `<state>-msd.png` and `<state>-traces.png` for every state of
    `directory`'s simulation records into `out` (default: `directory`); return the paths."""
    plt = _pyplot()
    records = simulation_report.load_dir(directory)
    out = Path(out or directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for state, sources in sorted(_by_state(records).items()):
        order = sorted(sources, key=lambda t: (t != "true", t))
        fig, (ax, dax) = plt.subplots(
            2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
        )
        truth = None
        if "true" in sources:
            truth = np.mean([r["observables"]["rdf"]["g"] for r in sources["true"]], axis=0)
        for tag in order:
            runs = sources[tag]
            r = np.asarray(runs[0]["observables"]["rdf"]["r"])
            g = np.mean([run["observables"]["rdf"]["g"] for run in runs], axis=0)
            style = {"lw": 2.0, "color": "black"} if tag == "true" else {"lw": 1.2}
            ax.plot(r, g, label=f"{simulation_report.label(tag)} ({len(runs)} seeds)", **style)
            if truth is not None and tag != "true":
                dax.plot(r, g - truth, lw=1.0)
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_ylabel("g(r)")
        ax.set_title(f"{state}: radial distribution function (mean over seeds)")
        ax.legend(fontsize=7)
        dax.axhline(0.0, color="black", lw=0.5)
        dax.set_xlabel("r")
        dax.set_ylabel("g − g_true")
        written.append(_save(fig, out / f"{state}-rdf.png", plt))

        fig, ax = plt.subplots(figsize=(6, 4.5))
        for tag in order:
            msd = sources[tag][0]["observables"]["msd"]
            d = np.mean([run["observables"]["diffusion"]["value"] for run in sources[tag]])
            ax.loglog(
                msd["lag"], msd["value"], label=f"{simulation_report.label(tag)} (D = {d:.4f})"
            )
        ax.set_xlabel("lag t")
        ax.set_ylabel("MSD (centre of mass removed), seed " + str(sources[order[0]][0]["seed"]))
        ax.set_title(f"{state}: mean-squared displacement, Langevin NVT")
        ax.legend(fontsize=7)
        written.append(_save(fig, out / f"{state}-msd.png", plt))

        fig, (tax, eax, nax) = plt.subplots(3, 1, figsize=(7, 8))
        for tag in order:
            tr = sources[tag][0]["observables"]["traces"]
            tax.plot(tr["time"], tr["temperature"], lw=0.8, label=simulation_report.label(tag))
            if any(v is not None for v in tr["potential_energy"]):
                eax.plot(
                    tr["time"], tr["potential_energy"], lw=0.8, label=simulation_report.label(tag)
                )
            if tr["nve_time"]:
                nax.plot(
                    tr["nve_time"],
                    tr["nve_true_energy"],
                    lw=0.8,
                    label=simulation_report.label(tag),
                )
        tax.set_ylabel("T (NVT)")
        eax.set_ylabel("own PE/N (NVT)")
        nax.set_ylabel("KE/N + true PE/N (NVE)")
        nax.set_xlabel("time since the phase began")
        tax.set_title(f"{state}: traces of seed {sources[order[0]][0]['seed']}")
        tax.legend(fontsize=7)
        written.append(_save(fig, out / f"{state}-traces.png", plt))
    return written


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
