"""Pair potentials in reduced units (sigma = epsilon = 1, unit charges): one table entry each.

Pair force magnitude `f(r) = -dU/dr`, positive = repulsive (SPEC §1):

- Lennard-Jones, `U(r) = 4 (r^-12 - r^-6)`, so `f(r) = 48 r^-13 - 24 r^-7`; zero at
  `r = 2^(1/6)`, most attractive at `r = (26/7)^(1/6)`.
- Coulomb between like unit charges, `U(r) = 1/r`, so `f(r) = 1/r^2`.

The force on a target from a neighbour at displacement `d = r_j - r_t` is
`-f(|d|) d / |d|`: repulsion pushes the target away from the neighbour. Everything is float64:
uniform random placement produces near-overlaps whose LJ forces overflow float32.

`POTENTIALS` maps each name to a `Potential`: its pair force, the parametric form that recovery
fits (with the parameters that reproduce the truth), its label in plots and its MD cut-off
(SPEC §2b). Adding a potential is one entry here (and its tests); every other module reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mdkeras.checks import check_choice, check_number
from mdkeras.errors import MdkerasError


@dataclass(frozen=True)
class Term:
    """One term `sign * coefficient * r^-exponent` of a model `f(r)`; `exponent` is a number
    (fixed) or the name of a fitted parameter."""

    coefficient: str
    exponent: float | str
    sign: float = 1.0


@dataclass(frozen=True)
class ModelForm:
    """The parametric `f(r)` that recovery deconvolves the learned kernel into.

    A sum of power-law `terms`, linear in their coefficients, with at most one fitted exponent
    (searched within `bounds`). `truth` are the parameters that give the potential's `f(r)`;
    `derived` maps parameters (arrays broadcast) to named points of the curve (e.g. the zero
    crossing), `{}` if the form has none.
    """

    formula: str
    terms: tuple[Term, ...]
    truth: dict[str, float]
    bounds: tuple[float, float] | None = None
    derived: Callable[[dict], dict] = field(default=lambda params: {}, repr=False, compare=False)

    def __post_init__(self):
        free = [t.exponent for t in self.terms if isinstance(t.exponent, str)]
        if len(free) > 1 or (free and self.bounds is None):
            raise MdkerasError(
                f"model {self.formula!r} has fitted exponents {free}: expected at most one, "
                "with bounds."
            )
        if set(self.truth) != set(self.parameters):
            raise MdkerasError(
                f"model {self.formula!r} truth {sorted(self.truth)} does not name its "
                f"parameters {list(self.parameters)}."
            )

    @property
    def parameters(self) -> tuple[str, ...]:
        """Parameter names: the coefficients in term order, then the fitted exponent."""
        free = tuple(t.exponent for t in self.terms if isinstance(t.exponent, str))
        return tuple(t.coefficient for t in self.terms) + free

    @property
    def free_exponent(self) -> str | None:
        """The name of the fitted exponent, or None when every exponent is fixed."""
        return next((t.exponent for t in self.terms if isinstance(t.exponent, str)), None)

    def exponents(self, params: dict | None = None) -> list:
        """Each term's exponent: the fixed number, or `params[name]` for the fitted one."""
        return [
            params[t.exponent] if isinstance(t.exponent, str) else t.exponent for t in self.terms
        ]

    def force(self, params: dict, r) -> np.ndarray:
        """The model `f(r)` for `params` (scalars or arrays broadcasting with `r`)."""
        r = np.asarray(r, dtype=np.float64)
        return sum(
            t.sign * params[t.coefficient] * r ** -np.asarray(e)
            for t, e in zip(self.terms, self.exponents(params), strict=True)
        )

    def force_over_r(self, params: dict) -> Callable:
        """The model `f(r)/r` as a function of `r^2` for one parameter set of scalars (what a
        cell average integrates)."""
        terms = [
            (t.sign * float(params[t.coefficient]), power_g(float(e)))
            for t, e in zip(self.terms, self.exponents(params), strict=True)
        ]
        return lambda r2: sum(c * g(r2) for c, g in terms)


def power_g(power: float) -> Callable:
    """`g(r^2) = r^-(power + 1)`: the term `f(r) = r^-power` as `f(r)/r`, a function of `r^2`."""
    return lambda r2: r2 ** (-0.5 * (power + 1.0))


@dataclass(frozen=True)
class ForceView:
    """How a plot shows `f(r)`: log-log from one cell to the window's half-diagonal (a power
    law is a line), or linear over `r` within `f` limits (a well)."""

    log: bool
    r: tuple[float, float] | None = None
    f: tuple[float, float] | None = None


@dataclass(frozen=True)
class Potential:
    """Everything the suite knows about one pair potential.

    `force_over_r(r2)`: `f(r)/r` as a vectorised function of `r^2` (the one definition behind
    `pair_force` and `force_on_target`); `energy(r)`: `U(r)`, with `f = -U'`; `model`: the form
    recovery fits; `label`: its name in plots, `view` how they draw `f(r)`; `md_cutoff`: the MD
    pair cut-off `r_c` (SPEC §2b: force unchanged inside, energy shifted to zero there).
    """

    name: str
    label: str
    force_over_r: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    energy: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    model: ModelForm
    md_cutoff: float
    view: ForceView


def _lj_force_over_r(r2):
    """`48 r^-14 - 24 r^-8 = s^4 (48 s^3 - 24)` with `s = 1/r^2`."""
    s = 1.0 / r2
    s3 = s * s * s
    return s * s3 * (48.0 * s3 - 24.0)


def _coulomb_force_over_r(r2):
    """`r^-3 = s^(3/2)` with `s = 1/r^2`."""
    s = 1.0 / r2
    return s * np.sqrt(s)


def _lj_points(params: dict) -> dict:
    """The zero crossing `(A/B)^(1/6)` and the most attractive point `(13 A / (7 B))^(1/6)` of
    `A r^-13 - B r^-7`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.asarray(params["A"]) / np.asarray(params["B"])
        return {
            "zero_crossing": ratio ** (1.0 / 6.0),
            "well_minimum": (13.0 / 7.0 * ratio) ** (1.0 / 6.0),
        }


POTENTIALS: dict[str, Potential] = {
    p.name: p
    for p in (
        Potential(
            name="lj",
            label="LJ",
            force_over_r=_lj_force_over_r,
            energy=lambda r: 4.0 * (r**-12.0 - r**-6.0),
            model=ModelForm(
                formula="A r^-13 - B r^-7",
                terms=(Term("A", 13.0), Term("B", 7.0, sign=-1.0)),
                truth={"A": 48.0, "B": 24.0},
                derived=_lj_points,
            ),
            md_cutoff=4.0,
            view=ForceView(log=False, r=(0.95, 3.0), f=(-3.5, 8.0)),
        ),
        Potential(
            name="coulomb",
            label="Coulomb",
            force_over_r=_coulomb_force_over_r,
            energy=lambda r: 1.0 / r,
            model=ModelForm(
                formula="A r^-p",
                terms=(Term("A", "p"),),
                truth={"A": 1.0, "p": 2.0},
                bounds=(0.5, 6.0),
            ),
            md_cutoff=5.0,
            view=ForceView(log=True),
        ),
    )
}


def check_potential(potential: str) -> str:
    """Return `potential` if known, else raise one clear error naming the allowed ones."""
    return check_choice("potential", potential, POTENTIALS)


def get(potential: str) -> Potential:
    """The table entry of a potential by name (one clear error for an unknown name)."""
    return POTENTIALS[check_potential(potential)]


def label(potential: str) -> str:
    """The potential's name in plots (`"LJ"`); an unknown name (an old record) as it is."""
    entry = POTENTIALS.get(potential) if isinstance(potential, str) else None
    return entry.label if entry is not None else str(potential)


def force_over_r(potential: str, r2):
    """`f(r) / r` as a function of `r^2`, float64 of `r2`'s shape, without square roots or
    powers where possible. No checks (the hot path of featurize): `r2 = 0` gives inf or NaN."""
    fn = get(potential).force_over_r
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return fn(np.asarray(r2, dtype=np.float64))


def pair_force(potential: str, r):
    """Pair force magnitude `f(r) = -U'(r)` (positive = repulsive).

    Args:
        potential: a name in `POTENTIALS` (`"lj"`, `"coulomb"`).
        r: distances, any shape, finite and > 0, reduced units (sigma).
    Returns:
        float64 array of `r`'s shape (a float for a scalar), reduced force units (epsilon/sigma);
        inf where `f(r)/r` overflows float64 (below `r ~ 1e-22` for LJ, `1e-102` for Coulomb).
    """
    check_potential(potential)
    r = check_distances(r)
    f = r * force_over_r(potential, r * r)
    return f[()] if f.ndim == 0 else f


def check_distances(r) -> np.ndarray:
    """`r` as a float64 array if every entry is a finite distance > 0, else one clear error
    naming the first value that is not (`f(r)` diverges at 0; a distance is never negative)."""
    try:
        arr = np.asarray(r)
    except (TypeError, ValueError):  # ragged nested lists
        arr = np.asarray(None)
    if arr.dtype.kind not in "iuf":
        shown = repr(r) if arr.ndim == 0 else f"an array of dtype {arr.dtype}"
        raise MdkerasError(f"r={shown} is not allowed: expected finite distances > 0.")
    arr = arr.astype(np.float64)
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        if arr.ndim == 0:
            check_number("r", float(arr), positive=True, noun="a finite distance")
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        check_number(
            "r",
            float(arr[first]),
            positive=True,
            noun="finite distances",
            hint=f"the first such value is r[{', '.join(map(str, first))}] of shape {arr.shape}",
        )
    return arr


def f_max(potential: str, cell: float) -> float:
    """The paper's class range: `|f(h)|`, the pair force at the distance between adjacent cell
    centres `h` (SPEC §5). A finite number > 0, else one clear error."""
    check_potential(potential)
    h = check_number("cell", cell, positive=True, noun="a cell side")
    value = float(abs(pair_force(potential, h)))
    if not (np.isfinite(value) and value > 0):
        raise MdkerasError(
            f"cell={cell!r} gives the class range |f(h)| = {value!r} for potential "
            f"{potential!r}: expected a finite number > 0; use another cell side (window/grid)."
        )
    return value


def force_on_target(potential: str, d):
    """Force on a target from neighbours at displacements `d = r_j - r_t`.

    Args:
        d: `(..., 2)` float64 displacements (reduced units); `|d| > 0`.
    Returns:
        `(..., 2)` float64 forces `-f(|d|) d / |d|`, one per neighbour (sum them yourself).
    """
    d = np.asarray(d, dtype=np.float64)
    r2 = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]
    with np.errstate(invalid="ignore"):  # d = 0 gives NaN; callers reject it in one line
        return d * -force_over_r(potential, r2)[..., None]
