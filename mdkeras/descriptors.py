"""The occupancy-grid descriptor and its window force (SPEC §3–4).

Around each target, the square window of side `W` is split into `n x n` cells of side `h = W/n`.
`D[iy, ix]` counts the other particles with `ix = floor((d_x + W/2) / h)` and
`iy = floor((d_y + W/2) / h)` in `[0, n)`, where `d = r_j - r_t` is the minimum-image displacement
(rows follow +y, columns +x; cells are half-open). The label is the float64 force on the target
from exactly the particles counted in `D`.
"""

from __future__ import annotations

import math

import numpy as np

from mdkeras.errors import MdkerasError
from mdkeras.potentials import check_potential, force_over_r

MAX_COUNT = 255  # counts are stored as uint8; more is an error, not a wrap


def check_window(window: float, grid: int, box: float | None = None) -> None:
    """Validate the window side, grid size and (if given) that the window fits in the box."""
    if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
        raise MdkerasError(f"window={window!r} is not allowed: expected a window side > 0.")
    if isinstance(grid, bool) or int(grid) != grid or grid < 2:
        raise MdkerasError(f"grid={grid!r} is not allowed: expected an integer >= 2 cells a side.")
    if box is not None and window >= box:
        raise MdkerasError(
            f"window={window!r} is not allowed for box side {box:.4g}: expected window < box; "
            "use a smaller window or more particles (a larger box)."
        )


def window_pairs(positions: np.ndarray, box: float, targets: np.ndarray, window: float, grid: int):
    """All (target, neighbour) pairs whose neighbour falls in a cell of the target's window.

    A cell list with cell side >= W/4 gives each target its 5 x 5 block of candidate cells; the
    cell test of SPEC §3 on the minimum-image displacement then selects exactly the counted
    neighbours. Returns `(t, dx, dy, ix, iy)`, one entry per pair: `t` int64 index into
    `targets`, float64 displacements `r_j - r_t`, int64 cell indices in `[0, n)`.
    """
    n_targets = len(targets)
    span = 2  # cells of side >= W/(2 span) on each side of the target's cell cover the window
    ncell = int(box // (0.5 * window / span * (1.0 + 1e-9)))
    px, py = positions[:, 0], positions[:, 1]
    if ncell > 2 * span:
        cxy = np.floor(positions * (ncell / box)).astype(np.int64) % ncell
        cell = cxy[:, 1] * ncell + cxy[:, 0]
        order = np.argsort(cell)
        count = np.bincount(cell, minlength=ncell * ncell)
        start = np.cumsum(count) - count
        wrap = np.arange(-span, ncell + span) % ncell  # wrap[c + span] = c mod ncell
        tc = cxy[targets] + span
        near = (wrap[tc[:, 1:2] + _BLOCK[:, 1]] * ncell + wrap[tc[:, 0:1] + _BLOCK[:, 0]]).ravel()
        per = count[near]
        base = start[near] - (np.cumsum(per) - per)  # where each block starts in `order`
        j = order[np.repeat(base, per) + np.arange(per.sum())]
        per_target = per.reshape(n_targets, -1).sum(axis=1)
    else:  # the window spans most of the box: every particle is a candidate
        j = np.tile(np.arange(len(positions)), n_targets)
        per_target = np.full(n_targets, len(positions))
    tj = np.repeat(targets, per_target)
    dx = _minimum_image(px[j] - np.repeat(px[targets], per_target), box)
    dy = _minimum_image(py[j] - np.repeat(py[targets], per_target), box)
    h = window / grid
    ix = np.floor((dx + 0.5 * window) / h).astype(np.int64)
    iy = np.floor((dy + 0.5 * window) / h).astype(np.int64)
    keep = (ix.view(np.uint64) < grid) & (iy.view(np.uint64) < grid) & (j != tj)
    t = np.repeat(np.arange(n_targets), per_target)[keep]
    return t, dx[keep], dy[keep], ix[keep], iy[keep]


_BLOCK = np.array([(sx, sy) for sy in range(-2, 3) for sx in range(-2, 3)])


def _minimum_image(d: np.ndarray, box: float) -> np.ndarray:
    d -= box * np.round(d / box)
    return d


def featurize(positions, box, targets, *, potential: str, window: float, grid: int):
    """Occupancy grids and window forces for `targets` of one periodic configuration.

    Args:
        positions: `(N, 2)` particle coordinates (reduced units), any real values (wrapped).
        box: side `B` of the periodic square box; must exceed `window`.
        targets: `(T,)` indices into `positions`.
        potential: `"lj"` or `"coulomb"`.
        window: window side `W`; grid: cells a side `n` (>= 2).
    Returns:
        `(grids, forces)`: `(T, n, n)` uint8 counts `D[iy, ix]` and `(T, 2)` float64 forces
        `(F_x, F_y)` on each target from exactly the counted particles.
    """
    check_potential(potential)
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise MdkerasError(f"positions have shape {positions.shape}: expected (N, 2).")
    if not np.all(np.isfinite(positions)):
        raise MdkerasError("positions contain NaN or inf: expected finite coordinates.")
    if not (isinstance(box, (int, float, np.floating)) and math.isfinite(box) and box > 0):
        raise MdkerasError(f"box={box!r} is not allowed: expected a box side > 0.")
    check_window(window, grid, float(box))
    targets = np.asarray(targets)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise MdkerasError(
            f"targets must be a 1-D integer index array, got {targets.dtype} {targets.shape}."
        )
    bad = targets[(targets < 0) | (targets >= len(positions))]
    if bad.size:
        raise MdkerasError(
            f"target index {int(bad[0])} is out of range: expected 0 <= index < {len(positions)}."
        )
    targets = targets.astype(np.int64)
    n = int(grid)
    t, dx, dy, ix, iy = window_pairs(positions, float(box), targets, float(window), n)
    flat = (t * n + iy) * n + ix
    counts = np.bincount(flat, minlength=len(targets) * n * n)
    if counts.size and counts.max() > MAX_COUNT:
        raise MdkerasError(
            f"a cell holds {int(counts.max())} particles: expected at most {MAX_COUNT} (uint8); "
            "use a finer grid or a lower density."
        )
    grids = counts.astype(np.uint8).reshape(len(targets), n, n)
    return grids, sum_forces(potential, t, dx, dy, len(targets))


def sum_forces(potential: str, owner: np.ndarray, dx, dy, size: int) -> np.ndarray:
    """Sum the pair forces from displacements `(dx, dy)` (P,) into `size` targets by `owner`."""
    g = force_over_r(potential, dx * dx + dy * dy)
    if not np.all(np.isfinite(g)):
        raise MdkerasError(
            "a neighbour coincides with its target (distance 0): expected distinct positions."
        )
    out = np.empty((size, 2), dtype=np.float64)
    out[:, 0] = np.bincount(owner, weights=-g * dx, minlength=size)
    out[:, 1] = np.bincount(owner, weights=-g * dy, minlength=size)
    return out
