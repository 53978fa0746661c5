"""Pair potentials in reduced units (sigma = epsilon = 1, unit charges), as pure NumPy functions.

Pair force magnitude `f(r) = -dU/dr`, positive = repulsive (SPEC §1):

- Lennard-Jones, `U(r) = 4 (r^-12 - r^-6)`, so `f(r) = 48 r^-13 - 24 r^-7`; zero at
  `r = 2^(1/6)`, most attractive at `r = (26/7)^(1/6)`.
- Coulomb between like unit charges, `U(r) = 1/r`, so `f(r) = 1/r^2`.

The force on a target from a neighbour at displacement `d = r_j - r_t` is
`-f(|d|) d / |d|`: repulsion pushes the target away from the neighbour. Everything is float64:
uniform random placement produces near-overlaps whose LJ forces overflow float32.
"""

from __future__ import annotations

import numpy as np

from mdkeras.errors import MdkerasError

POTENTIALS = ("lj", "coulomb")


def check_potential(potential: str) -> str:
    """Return `potential` if known, else raise one clear error naming the allowed ones."""
    if potential not in POTENTIALS:
        raise MdkerasError(
            f"potential={potential!r} is not allowed: expected one of "
            f"{', '.join(map(repr, POTENTIALS))}."
        )
    return potential


def force_over_r(potential: str, r2):
    """`f(r) / r` as a function of `r^2`, without square roots or powers where possible.

    Lennard-Jones: `48 r^-14 - 24 r^-8 = s^4 (48 s^3 - 24)` with `s = 1/r^2`;
    Coulomb: `r^-3 = s^(3/2)`. The one definition behind `pair_force` and `force_on_target`.
    """
    check_potential(potential)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = 1.0 / np.asarray(r2, dtype=np.float64)
        if potential == "lj":
            s3 = s * s * s
            return s * s3 * (48.0 * s3 - 24.0)
        return s * np.sqrt(s)


def pair_force(potential: str, r):
    """Pair force magnitude `f(r) = -U'(r)` (positive = repulsive).

    Args:
        potential: `"lj"` or `"coulomb"`.
        r: distances, any shape, reduced units (sigma).
    Returns:
        float64 array of `r`'s shape (a float for a scalar), reduced force units (epsilon/sigma).
    """
    r = np.asarray(r, dtype=np.float64)
    f = r * force_over_r(potential, r * r)
    return f[()] if f.ndim == 0 else f


def f_max(potential: str, cell: float) -> float:
    """The paper's class range: `|f(h)|`, the pair force at the distance between adjacent cell
    centres `h` (SPEC §5)."""
    if not (np.isfinite(cell) and cell > 0):
        raise MdkerasError(f"cell={cell!r} is not allowed: expected a cell side > 0.")
    return float(abs(pair_force(potential, float(cell))))


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
