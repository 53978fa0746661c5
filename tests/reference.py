"""A deliberately simple brute-force reference for `mdkeras.featurize`, written from SPEC §1, §3, §4.

O(T * N): a Python loop over targets, every particle checked for every target, no cell list.
It shares nothing with the library except `pair_force` (the formula `f(r) = -U'(r)`), so the
fast path can be compared against it.
"""

from __future__ import annotations

import math

import numpy as np

from mdkeras.potentials import pair_force


def minimum_image(d: np.ndarray, box: float) -> np.ndarray:
    """Map displacements into `[-B/2, B/2)` per component."""
    return np.mod(d + 0.5 * box, box) - 0.5 * box


def featurize_bruteforce(positions, box, targets, potential, window, grid, *, return_extra=False):
    """Occupancy grids `D[iy, ix]` and window forces, the slow and obvious way.

    Returns `(grids uint8 (T, n, n), forces float64 (T, 2))`; with `return_extra=True` also
    `(in_window (T,) int, scale (T,) float)`: the number of particles inside the window (by the
    window test `-W/2 <= d < W/2`, independent of the cell arithmetic) and the sum of the
    magnitudes of the counted pair forces (a tolerance scale for the summed force).
    """
    positions = np.asarray(positions, dtype=np.float64)
    targets = np.asarray(targets)
    n = int(grid)
    half = window / 2.0
    h = window / n
    grids = np.zeros((len(targets), n, n), dtype=np.int64)
    forces = np.zeros((len(targets), 2), dtype=np.float64)
    in_window = np.zeros(len(targets), dtype=np.int64)
    scale = np.zeros(len(targets), dtype=np.float64)
    for row, t in enumerate(targets):
        for j in range(len(positions)):
            if j == t:
                continue
            dx, dy = minimum_image(positions[j] - positions[t], box)
            if -half <= dx < half and -half <= dy < half:
                in_window[row] += 1
            ix = math.floor((dx + half) / h)
            iy = math.floor((dy + half) / h)
            if not (0 <= ix < n and 0 <= iy < n):
                continue
            grids[row, iy, ix] += 1
            r = math.hypot(dx, dy)
            f = float(pair_force(potential, r))
            forces[row, 0] += -f * dx / r
            forces[row, 1] += -f * dy / r
            scale[row] += abs(f)
    assert grids.max(initial=0) < 256, "the reference only covers valid (uint8) counts"
    out = grids.astype(np.uint8), forces
    if return_extra:
        return (*out, in_window, scale)
    return out
