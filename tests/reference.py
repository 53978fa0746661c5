"""A deliberately simple brute-force reference for `mdkeras.featurize`, from SPEC §1, §3, §4.

O(T * N): a Python loop over targets, all N particles checked for each (vectorised over the
particles only), no cell list.
It shares nothing with the library except `pair_force` (the formula `f(r) = -U'(r)`), so the
fast path can be compared against it.
"""

from __future__ import annotations

import numpy as np

from mdkeras.potentials import pair_force


def minimum_image(d: np.ndarray, box: float) -> np.ndarray:
    """Shift displacements `d` with `|d| < B` (componentwise) into `[-B/2, B/2)`.

    For wrapped positions the shift by one box side is exact (no rounding)."""
    d = np.where(d >= 0.5 * box, d - box, d)
    return np.where(d < -0.5 * box, d + box, d)


def featurize_bruteforce(positions, box, targets, potential, window, grid, *, return_extra=False):
    """Occupancy grids `D[iy, ix]` and window forces, the slow and obvious way.

    Returns `(grids uint8 (T, n, n), forces float64 (T, 2))`; with `return_extra=True` also
    `(in_window (T,) int, scale (T,) float)`: the number of particles inside the window (by the
    window test `-W/2 <= d < W/2`, independent of the cell arithmetic) and the sum of the
    magnitudes of the counted pair forces (a tolerance scale for the summed force).
    """
    positions = np.mod(np.asarray(positions, dtype=np.float64), box)  # into [0, B)
    targets = np.asarray(targets)
    n = int(grid)
    half = window / 2.0
    h = window / n
    grids = np.zeros((len(targets), n, n), dtype=np.int64)
    forces = np.zeros((len(targets), 2), dtype=np.float64)
    in_window = np.zeros(len(targets), dtype=np.int64)
    scale = np.zeros(len(targets), dtype=np.float64)
    for row, t in enumerate(targets):  # one target at a time, against all N particles
        others = np.arange(len(positions)) != t
        d = minimum_image(positions[others] - positions[t], box)
        in_window[row] = np.count_nonzero(np.all((d >= -half) & (d < half), axis=1))
        ix = np.floor((d[:, 0] + half) / h).astype(np.int64)
        iy = np.floor((d[:, 1] + half) / h).astype(np.int64)
        counted = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
        np.add.at(grids[row], (iy[counted], ix[counted]), 1)
        d = d[counted]
        r = np.hypot(d[:, 0], d[:, 1])
        f = pair_force(potential, r)
        forces[row] = np.sum(-f[:, None] * d / r[:, None], axis=0)
        scale[row] = np.sum(np.abs(f))
    assert grids.max(initial=0) < 256, "the reference only covers valid (uint8) counts"
    out = grids.astype(np.uint8), forces
    if return_extra:
        return (*out, in_window, scale)
    return out
