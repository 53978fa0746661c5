"""A recovered pair force as a LAMMPS `pair_style table` file, so MD can run with what was learned.

A recovery record (`mdkeras.recovery.recover`, `records.load_record`) holds two estimates of the
pair force `f(r)`: the parametric fit (the potential's model form with the fitted parameters)
and the free-form shell estimate (one value per radial shell). `recovered_force` turns either
into a vectorised `f(r)`, `recovered_energy` integrates it from the MD cut-off `r_c` inward (so
`U(r_c) = 0`, the shifted energy of SPEC §2b), and `export` tabulates both with
`engine.tabulated` from the radius where `U` reaches `engine.INNER_ENERGY` (50 kT at T = 1) out
to `r_c`. The file's header comment carries its `pair_style`/`pair_coeff` lines and where the
force came from, so a user can take it to their own LAMMPS. `true_table` tabulates a
potential's own `f(r)` the same way (the reference the recovered tables are checked against).

Inside the smallest fitted radius physical MD samples nothing, but a table must cover the
closest approach, or LAMMPS stops the run; each fit states how it extends inward:

- parametric: the model form itself (its leading repulsive power law dominates at small r);
- shells: a repulsive power law `f(r) = f_k (r / m_k)^-p` inside the innermost used shell's
  midpoint `m_k`, matched there in value, with `p` the log-slope between the two innermost
  used shells, `p = ln(f_k / f_k+1) / ln(m_k+1 / m_k)`, at least `MIN_EXPONENT` (2: the energy
  diverges, so it reaches 50 kT at a finite radius), and `FALLBACK_EXPONENT` (12) when the
  second shell is not repulsive.

Units: reduced (sigma = epsilon = 1); forces positive = repulsive.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdkeras import engine
from mdkeras.checks import check_choice
from mdkeras.errors import MdkerasError
from mdkeras.files import atomic_write
from mdkeras.potentials import get
from mdkeras.records import recovery_scale_label

FITS = ("parametric", "shells")
SIGNIFICANCE = 3.0  # the innermost used shell is repulsive by at least this many errors
MIN_EXPONENT = 2.0  # the shell core's power law is at least this steep ...
FALLBACK_EXPONENT = 12.0  # ... and this steep when only one shell is repulsive
QUADRATURE_ORDER = 8  # Gauss-Legendre nodes per interval of the energy integral
ENERGY_INTERVALS = 4096  # geometric intervals from the smallest radius asked for to r_c


# ------------------------------------------------------------------------------------ force


def recovered_force(record: Mapping, fit: str) -> Callable[[np.ndarray], np.ndarray]:
    """The pair force `f(r)` a recovery record estimates, vectorised (float64 `r > 0` in, same
    shape out).

    `fit="parametric"`: the potential's model form (`potentials.get(p).model`) with the
    record's fitted parameter values. `fit="shells"`: a `ShellForce` through the free-form
    shell estimate (see `shell_force`). One `MdkerasError` for another fit or record.
    """
    check_choice("fit", fit, FITS)
    potential = _recovery_potential(record)
    if fit == "shells":
        return shell_force(record)
    form = get(potential).model
    values = parameter_values(record, form.parameters)
    if values is None or not all(math.isfinite(v) for v in values.values()):
        raise MdkerasError(
            f"recovery record {_source(record)!r} has no finite values for the parameters "
            f"{list(form.parameters)} of {form.formula!r}: expected a record written by "
            "`python -m benchmarks recover`."
        )
    return functools.partial(_model_force, form, values)


def _model_force(form, params: dict, r) -> np.ndarray:
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return form.force(params, np.asarray(r, dtype=np.float64))


def _recovery_potential(record) -> str:
    """The record's potential, after checking it is a recovery record of the table's model."""
    if not isinstance(record, Mapping) or record.get("kind") != "recovery":
        kind = record.get("kind", "run") if isinstance(record, Mapping) else type(record).__name__
        raise MdkerasError(
            f"a {kind} record cannot be exported as a pair table: expected a recovery record "
            "(`python -m benchmarks recover`, read with `records.load_record`)."
        )
    potential = record.get("physics", {}).get("potential")
    entry = get(potential)
    if record.get("model") != entry.model.formula:
        raise MdkerasError(
            f"recovery record {_source(record)!r} fitted {record.get('model')!r}: expected the "
            f"{potential} model {entry.model.formula!r}; recover it again with this version."
        )
    return potential


@dataclass(frozen=True)
class ShellForce:
    """`f(r)` through the free-form shell estimate: a monotone cubic (Fritsch-Carlson) through
    `knots` `(r, f)` (float64 `(K,)` each), the repulsive power law `f_0 (r / r_0)^-exponent`
    inside the first knot, 0 beyond the last (the MD cut-off). `shells` are the indices of the
    record's shells the knots come from."""

    r: np.ndarray
    f: np.ndarray
    exponent: float
    shells: tuple[int, ...]

    def __call__(self, r) -> np.ndarray:
        r = np.asarray(r, dtype=np.float64)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            inner = self.f[0] * (r / self.r[0]) ** -self.exponent
        out = np.where(r < self.r[0], inner, pchip(self.r, self.f, r))
        return np.where(r > self.r[-1], 0.0, out)


def constrained_shells(record: Mapping) -> np.ndarray:
    """Indices of the shells `shell_force` uses, in order of radius.

    The shell values are least-squares piecewise-constant estimates of `f` (a shell's value is
    `f` averaged over the shell as the cells see it, about `f` at the midpoint where `f` varies
    little across a shell). A shell is used when its value and bootstrap error are finite (error
    > 0) and its midpoint lies inside the MD cut-off. The innermost used shell is the first
    that is repulsive by `SIGNIFICANCE` errors and larger than the next used shell: a repulsive
    core decreases outward, so shells inside it whose values rise outward were reached by no
    pair and constrain nothing (LJ rho = 0.05 on a 56 grid: 2.4e-12 and 9.3e-10 before 1.1e4).
    One `MdkerasError` if no shell qualifies.
    """
    edges, value, error = _shell_arrays(record)
    mid = 0.5 * (edges[:-1] + edges[1:])
    cutoff = get(record["physics"]["potential"]).md_cutoff
    finite = np.isfinite(value) & np.isfinite(error) & (error > 0) & (mid < cutoff)
    used = np.flatnonzero(finite)
    if used.size == 0:
        raise MdkerasError(
            f"recovery record {_source(record)!r} has no constrained shell inside r_c = "
            f"{cutoff:g} (every shell value or error is missing or NaN): expected at least "
            "two; use the parametric fit."
        )
    for i, j in enumerate(used[:-1]):
        nxt = used[i + 1]
        if value[j] > SIGNIFICANCE * error[j] and value[j] > value[nxt]:
            return used[i:]
    raise MdkerasError(
        f"the shell estimate of {_source(record)!r} has no repulsive core (no shell inside "
        f"r_c = {cutoff:g} is {SIGNIFICANCE:g} errors above zero and above the next; innermost "
        f"value {value[used[0]]:.4g} at r = {mid[used[0]]:.4g}): expected one to extend the "
        "table inward from; use the parametric fit or a finer grid."
    )


def shell_force(record: Mapping) -> ShellForce:
    """The shell estimate of a recovery record as a `ShellForce`.

    Knots at the midpoints of the `constrained_shells` with their values; the last value is
    held to the last used shell's outer edge (or r_c, if nearer), and when the shells end before
    r_c the force falls linearly to 0 at r_c (the estimate says nothing beyond its last shell).
    Inside the first midpoint: the power law of the module docstring.
    """
    _recovery_potential(record)
    edges, value, _ = _shell_arrays(record)
    cutoff = get(record["physics"]["potential"]).md_cutoff
    used = constrained_shells(record)
    mid = 0.5 * (edges[:-1] + edges[1:])
    r, f = list(mid[used]), list(value[used])
    outer = min(float(edges[used[-1] + 1]), cutoff)
    if outer > r[-1]:
        r.append(outer)
        f.append(f[-1])
    if outer < cutoff:
        r.append(cutoff)
        f.append(0.0)
    exponent = FALLBACK_EXPONENT
    if len(used) > 1 and value[used[1]] > 0:
        slope = math.log(value[used[0]] / value[used[1]]) / math.log(mid[used[1]] / mid[used[0]])
        exponent = max(MIN_EXPONENT, slope)
    return ShellForce(np.array(r), np.array(f), float(exponent), tuple(int(j) for j in used))


def _shell_arrays(record) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shells = record.get("shells")
    try:
        edges = np.asarray(shells["edges"], dtype=np.float64)
        value = np.asarray(shells["value"], dtype=np.float64)
        error = np.asarray(shells["error"], dtype=np.float64)
        ok = edges.ndim == 1 and value.shape == error.shape == (edges.size - 1,)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok or edges.size < 2:
        raise MdkerasError(
            f"recovery record {_source(record)!r} has no shell estimate (shells.edges, .value, "
            ".error of J + 1, J, J numbers): expected a record written by `python -m "
            "benchmarks recover`."
        )
    return edges, value, error


def pchip(x: np.ndarray, y: np.ndarray, t) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (Fritsch-Carlson, the slopes of SciPy's
    `PchipInterpolator`) of knots `(x, y)` (`x` increasing, `(K,)`, K >= 2) at `t`; the end
    cubics extend beyond the knots. No overshoot: between knots it stays within their values."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    h = np.diff(x)
    delta = np.diff(y) / h
    d = np.zeros_like(y)
    if x.size == 2:
        d[:] = delta[0]
    else:
        w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
        same = delta[:-1] * delta[1:] > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
        d[1:-1] = np.where(same, mean, 0.0)
        d[0] = _end_slope(h[0], h[1], delta[0], delta[1])
        d[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    t = np.asarray(t, dtype=np.float64)
    k = np.clip(np.searchsorted(x, t, side="right") - 1, 0, x.size - 2)
    s = (t - x[k]) / h[k]
    h00, h10 = (1 + 2 * s) * (1 - s) ** 2, s * (1 - s) ** 2
    h01, h11 = s * s * (3 - 2 * s), s * s * (s - 1)
    return h00 * y[k] + h10 * h[k] * d[k] + h01 * y[k + 1] + h11 * h[k] * d[k + 1]


def _end_slope(h0, h1, m0, m1) -> float:
    """The shape-preserving three-point end slope of the PCHIP scheme."""
    d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
    if np.sign(d) != np.sign(m0):
        return 0.0
    if np.sign(m0) != np.sign(m1) and abs(d) > abs(3 * m0):
        return 3 * m0
    return float(d)


# ----------------------------------------------------------------------------------- energy


def recovered_energy(force: Callable, cutoff: float) -> Callable[[np.ndarray], np.ndarray]:
    """The energy `U(r) = int_r^r_c f(s) ds` of a pair force, shifted to zero at `cutoff`
    (0 beyond it), as a vectorised function of `r > 0` (float64 of `r`'s shape).

    Gauss-Legendre quadrature (`QUADRATURE_ORDER` nodes) on every interval between the radii
    asked for and `ENERGY_INTERVALS` geometric knots from the smallest of them to `cutoff`,
    summed from `cutoff` inward: for LJ's `r^-13` core the relative error is round-off.
    """
    cutoff = float(cutoff)
    nodes, weights = np.polynomial.legendre.leggauss(QUADRATURE_ORDER)
    nodes, weights = 0.5 * (nodes + 1.0), 0.5 * weights

    def energy(r):
        r = np.asarray(r, dtype=np.float64)
        flat = r.ravel()
        out = np.zeros(flat.shape)
        inside = (flat > 0) & (flat < cutoff)
        out[~(flat > 0)] = np.nan  # no energy at r <= 0 (or NaN)
        if inside.any():
            q = flat[inside]
            knots = np.unique(np.concatenate([q, np.geomspace(q.min(), cutoff, ENERGY_INTERVALS)]))
            knots = knots[knots <= cutoff]
            if knots[-1] < cutoff:
                knots = np.append(knots, cutoff)
            width = np.diff(knots)
            s = knots[:-1, None] + width[:, None] * nodes[None, :]
            with np.errstate(over="ignore", invalid="ignore"):
                pieces = width * (np.asarray(force(s), dtype=np.float64) @ weights)
                tail = np.append(np.cumsum(pieces[::-1])[::-1], 0.0)  # U at every knot
            out[inside] = tail[np.searchsorted(knots, q)]
        return out.reshape(r.shape)[()] if r.ndim == 0 else out.reshape(r.shape)

    return energy


# ----------------------------------------------------------------------------------- tables


def table_name(record: Mapping, fit: str) -> str:
    """The file name of a record's table: potential, fit, then the source data's setting
    (sampler first), scale and seed, e.g.
    `lj-parametric--uniform-rho0.50-w8-n28--paper-s250000--seed0.table`."""
    check_choice("fit", fit, FITS)
    return f"{_stem(record, fit)}.table"


def _stem(record: Mapping, fit: str) -> str:
    potential = _recovery_potential(record)
    sampler = record["physics"].get("sampler", "uniform")
    parts = [p for p in str(record.get("setting", "")).split("-") if p]
    if potential in parts:
        parts.remove(potential)
    if not parts or parts[0] != sampler:
        parts.insert(0, sampler)
    scale = recovery_scale_label(record)
    return f"{potential}-{fit}--{'-'.join(parts)}--{scale}--seed{record.get('seed')}"


def parameter_values(record: Mapping, names) -> dict[str, float] | None:
    """`{name: value}` of a recovery record's fitted `names`, each `parameters[name]["value"]`
    a real number (int or float, not a string or a bool); None if any is missing or not one."""
    params = record.get("parameters")
    if not isinstance(params, Mapping):
        return None
    values = {}
    for name in names:
        entry = params.get(name)
        value = entry.get("value") if isinstance(entry, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        values[name] = float(value)
    return values


def _number(value) -> float:
    """`value` as a float (NaN where a record has none)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _source(record: Mapping) -> str:
    return f"{record.get('setting')}--{record.get('scale')}--seed{record.get('seed')}"


def export(
    record: Mapping,
    fit: str,
    *,
    points: int = engine.TABLE_POINTS,
    barrier: float = engine.INNER_ENERGY,
) -> engine.Interaction:
    """A recovery record's `f(r)` (`fit`: `"parametric"` or `"shells"`) as a spline table
    interaction cut at the potential's MD cut-off, energy by `recovered_energy`, from the
    radius where it reaches `barrier` (`engine.inner_radius`; a thermal run never gets there,
    but an energy minimisation's trial steps can: raise it for those). Its name is the table's
    stem (`table_name`); the header states the source record, fit and parameters."""
    force = recovered_force(record, fit)
    potential = record["physics"]["potential"]
    if fit == "parametric":
        names = get(potential).model.parameters
        values = parameter_values(record, names)  # checked by recovered_force
        shown = ", ".join(
            f"{k} = {values[k]:.10g} +- {_number(record['parameters'][k].get('error')):.3g}"
            for k in names
        )
        how = [
            f"f(r) = {record['model']} with {shown} (bootstrap errors)",
            "inside the fitted radii: the model form itself",
        ]
    else:
        used = force.shells
        how = [
            f"f(r): monotone cubic through {len(used)} free-form shell values at their "
            f"midpoints (shells {used[0]}..{used[-1]} of the record), r = {force.r[0]:.6g} to "
            f"{force.r[-1]:.6g}",
            f"inside r = {force.r[0]:.6g}: f = {force.f[0]:.6g} (r / {force.r[0]:.6g})^-"
            f"{force.exponent:.6g} (log-slope of the two innermost used shells, at least "
            f"{MIN_EXPONENT:g})",
        ]
    header = (
        f"source: recovery record {_source(record)} ({record['physics'].get('sampler')} "
        f"sampler, {record.get('samples')} samples, dataset {record.get('dataset_key')})",
        f"fit: {fit}",
        *how,
        f"energy: integral of f from r_c inward; table from U = {barrier:g}",
    )
    return _tabulate(_stem(record, fit), force, get(potential).md_cutoff, header, points, barrier)


def true_table(
    potential: str, *, points: int = engine.TABLE_POINTS, barrier: float = engine.INNER_ENERGY
) -> engine.Interaction:
    """A potential's own `f(r)` as a table, by the code path of `export` (energy integrated from
    the cut-off): the reference a recovered table is checked against."""
    entry = get(potential)

    def force(r):
        r = np.asarray(r, dtype=np.float64)
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return r * entry.force_over_r(r * r)

    header = (
        f"f(r): the true {entry.label} pair force",
        f"energy: integral of f from r_c inward; table from U = {barrier:g}",
    )
    return _tabulate(f"{potential}-true", force, entry.md_cutoff, header, points, barrier)


def model_table(
    potential: str,
    params: Mapping,
    *,
    name: str,
    header: tuple[str, ...] = (),
    points: int = engine.TABLE_POINTS,
    barrier: float = engine.INNER_ENERGY,
) -> engine.Interaction:
    """The potential's model form with parameter values `params` (`{name: float}`) as a table,
    by the code path of `export`: what an iterative recovery runs MD with at each step."""
    form = get(potential).model
    values = {k: float(params[k]) for k in form.parameters}
    shown = ", ".join(f"{k} = {v:.10g}" for k, v in values.items())
    lines = (f"f(r) = {form.formula} with {shown}", *header)
    force = functools.partial(_model_force, form, values)
    return _tabulate(name, force, get(potential).md_cutoff, lines, points, barrier)


def _tabulate(name, force, cutoff, header, points, barrier) -> engine.Interaction:
    energy = recovered_energy(force, cutoff)
    inner = engine.inner_radius(energy, cutoff, barrier=barrier)
    return engine.tabulated(
        name, force, energy, cutoff=cutoff, inner=inner, points=points, header=tuple(header)
    )


def write_table(interaction: engine.Interaction, path: str | os.PathLike) -> Path:
    """Write a tabulated interaction's file to `path` atomically; return the path."""
    if interaction.table is None:
        raise MdkerasError(
            f"interaction {interaction.name!r} has no table (a native pair style): expected one "
            "from `export` or `true_table`."
        )
    return atomic_write(path, interaction.table, fix="choose a writable directory")
