"""Compare MD runs (simulation records) with the true potential's at the same state and seeds.

Per (state, force source) over its seeds:

- g(r) error: MDsim's `∫|g − g_true| dr` against the truth's run with the same seed (same
  initial placement), mean over seeds; beside it the truth's own seed-to-seed value (mean over
  pairs of true seeds), the noise floor; "ok" when the error is within 2× the floor;
- pressure, the **true** potential's energy per particle on the frames, diffusion coefficient:
  mean over seeds ± standard error (between seeds; one seed: its block error), and the
  difference from the truth in combined standard errors (`z`);
- NVE drift of the source's own energy and of kinetic + true energy, momentum drift, and how
  many seeds stayed stable to the end (MDsim's stability) with the shortest stable time.
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report import write_summary
from mdkeras import observables
from mdkeras.errors import MdkerasError
from mdkeras.records import load_record, read_json

GLOB = "*--*--seed*.json"
QUANTITIES = (  # column prefix -> path into observables
    ("pressure", ("pressure", "mean"), ("pressure", "sem")),
    ("energy", ("true_potential_energy", "mean"), ("true_potential_energy", "sem")),
    ("D", ("diffusion", "value"), ("diffusion", "error")),
)
Z_LIMIT = 2.0  # "indistinguishable": within this many combined standard errors
FLOOR_FACTOR = 2.0  # g(r) error allowed, in units of the truth's seed-to-seed value


def holds_simulations(directory: str | os.PathLike) -> bool:
    """True if `directory`'s first record file is a simulation record (`python -m benchmarks
    md` writes its own directories: records of one kind each)."""
    directory = Path(directory)
    paths = sorted(directory.glob(GLOB)) if directory.is_dir() else []
    return bool(paths) and read_json(paths[0]).get("kind") == "simulation"


def existing(directory: str | os.PathLike) -> list[dict]:
    """Every record already in `directory` (none if it is missing), each checked to be a
    simulation record: `md` calls it before any MD, so that a foreign file in `--out` is an
    error then, not after the runs."""
    directory = Path(directory)
    paths = sorted(directory.glob(GLOB)) if directory.is_dir() else []
    return [load_record(p, kind="simulation") for p in paths]


def load_dir(directory: str | os.PathLike) -> list[dict]:
    directory = Path(directory)
    paths = sorted(directory.glob(GLOB)) if directory.is_dir() else []
    if not paths:
        raise MdkerasError(
            f"no simulation records in {directory}: expected files named "
            "<state>--<source>--seed<k>.json; run `python -m benchmarks md` first."
        )
    return [load_record(p, kind="simulation") for p in paths]


def _get(obs: dict, path) -> float:
    value = obs
    for key in path:
        value = value[key]
    return float(value)


def _g_error(a: dict, b: dict) -> float:
    ra, rb = a["observables"]["rdf"], b["observables"]["rdf"]
    return observables.rdf_error(np.asarray(ra["r"]), np.asarray(ra["g"]), np.asarray(rb["g"]))


def _over_seeds(records: list[dict], value, error) -> tuple[float, float]:
    """Mean over seeds and its standard error (between seeds; one seed: its own error)."""
    xs = np.array([_get(r["observables"], value) for r in records])
    if len(xs) == 1:
        return float(xs[0]), _get(records[0]["observables"], error)
    return float(xs.mean()), float(xs.std(ddof=1) / math.sqrt(len(xs)))


def summarize(records: list[dict]) -> pd.DataFrame:
    by_state: dict[str, dict[str, dict[int, dict]]] = {}
    for r in records:
        by_state.setdefault(r["state"]["name"], {}).setdefault(r["source"]["tag"], {})[
            r["seed"]
        ] = r
    rows = []
    for state, sources in sorted(by_state.items()):
        truth = sources.get("true", {})
        floor = [_g_error(truth[a], truth[b]) for a, b in itertools.combinations(sorted(truth), 2)]
        g_floor = float(np.mean(floor)) if floor else math.nan
        for tag, runs in sorted(sources.items(), key=lambda kv: (kv[0] != "true", kv[0])):
            seeds = sorted(runs)
            recs = [runs[s] for s in seeds]
            row = {"state": state, "source": tag, "seeds": len(seeds)}
            paired = [_g_error(runs[s], truth[s]) for s in seeds if s in truth and tag != "true"]
            row["g_error"] = float(np.mean(paired)) if paired else math.nan
            row["g_floor"] = g_floor
            row["g_ok"] = (
                bool(row["g_error"] <= FLOOR_FACTOR * g_floor)
                if paired and not math.isnan(g_floor)
                else None
            )
            for name, value, error in QUANTITIES:
                mean, se = _over_seeds(recs, value, error)
                row[name], row[f"{name}_se"] = mean, se
                if truth and tag != "true":
                    t_mean, t_se = _over_seeds([truth[s] for s in sorted(truth)], value, error)
                    combined = math.hypot(se, t_se)
                    row[f"{name}_z"] = (mean - t_mean) / combined if combined > 0 else math.nan
                else:
                    row[f"{name}_z"] = math.nan
            nve = [r["observables"]["nve"] for r in recs]
            row["nve_drift"] = _mean_of(n.get("energy_drift") for n in nve)
            row["nve_true_drift"] = _mean_of(n.get("true_energy_drift") for n in nve)
            row["momentum_drift"] = _mean_of(n.get("momentum_drift") for n in nve)
            stab = [r["observables"]["stability"] for r in recs]
            row["stable"] = f"{sum(s['stable'] for s in stab)}/{len(stab)}"
            row["stable_time"] = min(float(s["time"]) for s in stab)
            rows.append(row)
    return pd.DataFrame(rows)


def _mean_of(items) -> float:
    values = [float(i["value"]) for i in items if i is not None]
    return float(np.mean(values)) if values else math.nan


def verdict(row) -> str:
    """ "indistinguishable" if g(r) is within the floor and every quantity within Z_LIMIT."""
    if row["source"] == "true":
        return "reference"
    zs = [row[f"{name}_z"] for name, _, _ in QUANTITIES]
    if row["g_ok"] is None or any(math.isnan(z) for z in zs):
        return "no truth to compare"
    ok = row["g_ok"] and all(abs(z) <= Z_LIMIT for z in zs)
    return "indistinguishable" if ok else "differs"


def to_markdown(df: pd.DataFrame) -> str:
    headers = [
        "state",
        "source",
        "seeds",
        "g(r) error (floor)",
        "pressure (z)",
        "U_true/N (z)",
        "D (z)",
        "NVE drift",
        "stable",
        "verdict",
    ]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, row in df.iterrows():
        z = {
            n: "" if math.isnan(row[f"{n}_z"]) else f" ({row[f'{n}_z']:+.1f})"
            for n, *_ in QUANTITIES
        }
        g = "" if math.isnan(row["g_error"]) else f"{row['g_error']:.4f}"
        floor = "" if math.isnan(row["g_floor"]) else f"{row['g_floor']:.4f}"
        drift = row["nve_drift"] if not math.isnan(row["nve_drift"]) else row["nve_true_drift"]
        cells = [
            row["state"],
            label(row["source"]),
            str(row["seeds"]),
            f"{g} ({floor})" if g else f"— ({floor})",
            f"{_num(row['pressure'])} ± {_num(row['pressure_se'])}{z['pressure']}",
            f"{_num(row['energy'])} ± {_num(row['energy_se'])}{z['energy']}",
            f"{_num(row['D'])} ± {_num(row['D_se'])}{z['D']}",
            f"{drift:.1e}",
            _stable(row),
            verdict(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(x: float) -> str:
    """4 decimals, or 3 significant digits for a value beyond 10⁴ (a run that blew up)."""
    return f"{x:.4f}" if abs(x) < 1e4 else f"{x:.3g}"


def label(tag: str) -> str:
    """A source tag as text: `recovered-shells_from_lj-rho0.50-w8-n28_paper-s250000_seed0` ->
    `recovered-shells from lj-rho0.50-w8-n28 paper-s250000 seed0`."""
    return tag.replace("_from_", " from ").replace("_", " ")


def _stable(row) -> str:
    ok, n = (int(v) for v in row["stable"].split("/"))
    if ok == n:
        return f"{ok}/{n} to the end"
    return f"{ok}/{n}; first failure at t = {row['stable_time']:.1f}"


def summarize_dir(directory: str | os.PathLike) -> pd.DataFrame:
    return summarize(load_dir(directory))


def report(directory: str | os.PathLike) -> pd.DataFrame:
    """Summarise `directory`'s simulation records into summary.csv and summary.md there."""
    df = summarize_dir(directory)
    return write_summary(directory, df, to_markdown(df))
