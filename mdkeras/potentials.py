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


def pair_force(potential: str, r):
    """Pair force magnitude `f(r) = -U'(r)` (positive = repulsive).

    Args:
        potential: `"lj"` or `"coulomb"`.
        r: distances, any shape, reduced units (sigma).
    Returns:
        float64 array of `r`'s shape (a float for a scalar), reduced force units (epsilon/sigma).
    """
    check_potential(potential)
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore"):
        if potential == "lj":
            inv7 = r**-7.0
            f = 48.0 * r**-13.0 - 24.0 * inv7
        else:
            f = r**-2.0
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
    r = np.sqrt(np.einsum("...i,...i->...", d, d))
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = -pair_force(potential, r) / r
    return d * scale[..., None]
